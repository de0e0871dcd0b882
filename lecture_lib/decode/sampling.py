"""Picking the next token from the logits: greedy, or sampled with a temperature and top-k.

One sampler for every path. It draws from softmax(logits / temperature) as
``argmax(p / E)`` with E_i ~ Exponential(1): E_i / p_i is exponential with rate p_i, and the
smallest of independent exponentials is i with probability p_i / sum(p), so this draws from p
exactly. Unlike ``torch.multinomial`` it is plain elementwise ops and an argmax: no host sync,
and it compiles into a CUDA graph (the fast path).
"""
from __future__ import annotations

import math

import torch


def check_sampling(temperature: float, top_k: int | None) -> None:
    """The settings every generate function accepts, checked once at the door (plain numbers)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number (0 means greedy), got {temperature!r}.")
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number >= 0 (0 means greedy), got {temperature}.")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer (1 is greedy) or None for no cut-off, "
                         f"got {top_k!r}.")


def top_k_filter(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """logits with everything below the k-th largest of each row set to -inf (None: unchanged)."""
    if top_k is None:
        return logits
    kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sample(logits: torch.Tensor, temperature: float | torch.Tensor | None = 0.0, top_k: int | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Next tokens [B] from last-position logits [B V].

    ``temperature``: 0 or None is greedy (argmax); a positive number, or a 0-dim device tensor
    (changing its value does not recompile a compiled step), samples from
    softmax(logits / temperature) restricted to the ``top_k`` best. ``generator`` makes a draw
    repeatable. Python-number settings are checked (``check_sampling``); a tensor temperature is
    not (that would need a host sync).
    """
    if temperature is None:
        return logits.argmax(dim=-1)
    if not isinstance(temperature, torch.Tensor):
        check_sampling(temperature, top_k)
        if temperature == 0:
            return logits.argmax(dim=-1)
    elif top_k is not None and top_k < 1:
        check_sampling(1.0, top_k)
    probs = torch.softmax(top_k_filter(logits.float() / temperature, top_k), dim=-1)
    noise = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / noise).argmax(dim=-1)
