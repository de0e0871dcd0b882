"""When a sequence stops: at its end-of-sequence token (when one is given) or at its own limit of
new tokens. Shared by the plain and the fast generate functions."""
from __future__ import annotations

import torch


def token_limits(max_new_tokens, B: int) -> list[int]:
    """``max_new_tokens`` as one limit per sequence: an int for all, or a list of B ints."""
    limits = [max_new_tokens] * B if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(limits) != B:
        raise ValueError(f"max_new_tokens has {len(limits)} limits for a batch of B = {B} sequences: "
                         "give one int for all, or one per sequence.")
    bad = [n for n in limits if isinstance(n, bool) or not isinstance(n, int) or n < 1]
    if bad:
        raise ValueError(f"max_new_tokens must be at least 1 (an int, or one int per sequence), got {bad[0]!r}.")
    return limits


def check_token_id(name: str, token_id, V: int) -> None:
    if token_id is not None and (isinstance(token_id, bool) or not isinstance(token_id, int)
                                 or not 0 <= token_id < V):
        raise ValueError(f"{name} must be a token id in [0, V) = [0, {V}) or None, got {token_id!r}.")


class Stopper:
    """Host-side bookkeeping of which sequences are still running (the plain path, which has each
    step's tokens on the host anyway)."""

    def __init__(self, limits: list[int], eos_id: int | None):
        self.limits, self.eos_id = limits, eos_id
        self.lengths = [0] * len(limits)
        self.reasons: list[str | None] = [None] * len(limits)

    @property
    def active(self) -> list[int]:
        return [b for b, r in enumerate(self.reasons) if r is None]

    @property
    def all_done(self) -> bool:
        return all(r is not None for r in self.reasons)

    def record(self, ids: list[int]) -> None:
        """Count this step's tokens (one per sequence) and mark the sequences that end with them."""
        for b in self.active:
            self.lengths[b] += 1
            if self.eos_id is not None and ids[b] == self.eos_id:
                self.reasons[b] = "stop"
            elif self.lengths[b] >= self.limits[b]:
                self.reasons[b] = "length"


def finish_reasons_from_tokens(tokens: torch.Tensor, limits: list[int], eos_id: int | None) -> tuple[list[int], list[str]]:
    """Lengths and finish reasons read off finished [B T] tokens (the fast path, which keeps
    tokens on the device until the end): a sequence ends at its first EOS or at its limit."""
    lengths, reasons = [], []
    for row, limit in zip(tokens.tolist(), limits):
        row = row[:limit]
        if eos_id is not None and eos_id in row:
            lengths.append(row.index(eos_id) + 1)
            reasons.append("stop")
        else:
            lengths.append(len(row))
            reasons.append("length")
    return lengths, reasons
