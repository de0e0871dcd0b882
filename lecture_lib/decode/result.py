"""What a generate call produced: the tokens, when they appeared, and why each sequence stopped."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Generation:
    """The result of every generate function (plain and fast paths alike).

    ``tokens`` [B T_new] holds the generated tokens only, on the host. A sequence that stopped
    early (at its EOS token or its own ``max_new_tokens``) is padded after its end with
    ``pad_id``; ``lengths`` says how many tokens each sequence really has (its EOS included) and
    ``finish_reasons`` why it stopped: "stop" (EOS) or "length" (its token limit).

    Times are seconds after the call began: ``ttft`` (prefill plus the first token),
    ``decode_seconds`` (from the first token to the last) and, where recorded, ``token_times``
    (one per step, taken when the step's tokens were on the host). Constructed from
    ``token_times`` alone, ``ttft`` and ``decode_seconds`` are read from them.
    """

    tokens: torch.Tensor
    prompt_len: int
    token_times: list[float] | None = None
    ttft: float | None = None
    decode_seconds: float | None = None
    lengths: list[int] | None = None
    finish_reasons: list[str] | None = None
    pad_id: int = 0

    def __post_init__(self):
        if self.ttft is None and self.token_times:
            self.ttft = self.token_times[0]
        if self.decode_seconds is None and self.token_times:
            self.decode_seconds = self.token_times[-1] - self.token_times[0]
        if self.lengths is None:
            self.lengths = [self.tokens.shape[1]] * self.tokens.shape[0]
        if self.finish_reasons is None:
            self.finish_reasons = ["length"] * self.tokens.shape[0]

    @property
    def B(self) -> int:
        return self.tokens.shape[0]

    @property
    def steps(self) -> int:
        """Decode steps timed: every step after the first (whose token the prefill produces)."""
        return self.tokens.shape[1] - 1

    @property
    def decode_tokens_per_s(self) -> float:
        """Throughput of the decode phase: B tokens every step after the first."""
        return self.B * self.steps / self.decode_seconds if self.steps and self.decode_seconds else float("nan")

    @property
    def seconds_per_step(self) -> float:
        return self.decode_seconds / self.steps if self.steps else float("nan")

    @property
    def inter_token_latencies(self) -> list[float]:
        """Seconds between consecutive tokens (the lecture's latency, per decode step)."""
        if self.token_times is None:
            raise ValueError("No per-token times were recorded (FastGenerator: time_per_token=True).")
        t = self.token_times
        return [b - a for a, b in zip(t[:-1], t[1:])]

    @property
    def end_to_end(self) -> float:
        """Seconds from the call to the last token."""
        return self.token_times[-1] if self.token_times else self.ttft + self.decode_seconds

    @property
    def throughput(self) -> float:
        """Generated tokens per second over the whole call, prefill included (real tokens only)."""
        return sum(self.lengths) / self.end_to_end

    def sequences(self) -> list[list[int]]:
        """Each sequence's generated tokens without the padding after its end."""
        return [row[:n] for row, n in zip(self.tokens.tolist(), self.lengths)]
