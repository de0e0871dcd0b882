"""Decoding: naive (recompute the whole prefix every step) and KV-cached (prefill, then one token
a step), greedy or sampled, with per-token timestamps so that TTFT and inter-token latency are
measured rather than guessed.

Each new token's timestamp is taken once the token is on the host (``.tolist()`` waits for the
device), which is when a streaming server could send it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .model import Transformer
from .timing import synchronize


@dataclass
class Generation:
    """What one call to a generate function produced, with when each token appeared."""

    tokens: torch.Tensor  # [B T_new]: the generated tokens only
    prompt_len: int
    token_times: list[float] = field(default_factory=list)  # seconds after the call began, one per step

    @property
    def B(self) -> int:
        return self.tokens.shape[0]

    @property
    def ttft(self) -> float:
        """Time to first token: the prefill plus one sampling step."""
        return self.token_times[0]

    @property
    def inter_token_latencies(self) -> list[float]:
        """Seconds between consecutive tokens (the lecture's latency, per decode step)."""
        t = self.token_times
        return [b - a for a, b in zip(t[:-1], t[1:])]

    @property
    def end_to_end(self) -> float:
        return self.token_times[-1]

    @property
    def decode_tokens_per_s(self) -> float:
        """Throughput of the decode phase: B tokens every step after the first."""
        steps = len(self.token_times) - 1
        return self.B * steps / (self.token_times[-1] - self.token_times[0]) if steps else float("nan")

    @property
    def throughput(self) -> float:
        """Generated tokens per second over the whole call, prefill included."""
        return self.tokens.numel() / self.end_to_end


def sample(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Next tokens [B] from last-position logits [B V]: greedy when temperature == 0."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}.")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None, got {top_k}.")
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check_prompt(model: Transformer, prompt: torch.Tensor, max_new_tokens: int) -> None:
    if prompt.dim() != 2:
        raise ValueError(f"prompt must be a [B T] tensor of token ids, got shape {tuple(prompt.shape)}; "
                         "for one sequence use prompt[None].")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    need = prompt.shape[1] + max_new_tokens
    if need > model.cfg.S_max:
        raise ValueError(
            f"The prompt ({prompt.shape[1]} tokens) plus max_new_tokens ({max_new_tokens}) need {need} "
            f"positions, more than the model's S_max = {model.cfg.S_max}. Shorten one of them, or build "
            f"the model with cfg.replace(S_max={need})."
        )


@torch.inference_mode()
def _decode_loop(step: Callable[[torch.Tensor, int], torch.Tensor], prompt: torch.Tensor,
                 max_new_tokens: int, temperature: float, top_k: int | None,
                 generator: torch.Generator | None, on_token: Callable | None) -> Generation:
    synchronize(prompt.device)
    start = time.perf_counter()
    out, times = [], []
    x = prompt  # what the model is fed at the next step
    for i in range(max_new_tokens):
        logits = step(x, i)  # [B T V]
        nxt = sample(logits[:, -1], temperature, top_k, generator)  # [B]
        ids = nxt.tolist()  # waits for the device: the token now exists on the host
        times.append(time.perf_counter() - start)
        out.append(nxt)
        if on_token is not None:
            on_token(i, ids, times[-1])
        x = nxt[:, None]
    return Generation(torch.stack(out, dim=1), prompt.shape[1], times)


def generate_naive(model: Transformer, prompt: torch.Tensor, max_new_tokens: int, *,
                   temperature: float = 0.0, top_k: int | None = None,
                   generator: torch.Generator | None = None, on_token: Callable | None = None) -> Generation:
    """No cache: every step runs the model on the whole sequence so far, prompt included.

    Step i processes prompt_len + i tokens, so its cost grows with the position; summed over T
    new tokens the attention FLOPs grow like T^3 and the MLP FLOPs like T^2.
    """
    _check_prompt(model, prompt, max_new_tokens)
    seq = [prompt]

    def step(x, i):
        if i > 0:
            seq.append(x)
        return model(torch.cat(seq, dim=1))

    return _decode_loop(step, prompt, max_new_tokens, temperature, top_k, generator, on_token)


def generate_cached(model: Transformer, prompt: torch.Tensor, max_new_tokens: int, *,
                    temperature: float = 0.0, top_k: int | None = None,
                    generator: torch.Generator | None = None, on_token: Callable | None = None,
                    cache=None) -> Generation:
    """Prefill the prompt into a preallocated KV cache, then feed one new token per step.

    Each decode step processes a single token and reads the keys/values of all earlier ones from
    the cache: its MLP cost is constant and its attention cost grows linearly with the position.
    """
    _check_prompt(model, prompt, max_new_tokens)
    B, T0 = prompt.shape
    if cache is None:
        cache = model.new_cache(B, T0 + max_new_tokens)
    cache.check_fits(T0 + max_new_tokens)

    def step(x, i):
        return model(x, cache, 0 if i == 0 else T0 + i - 1)

    return _decode_loop(step, prompt, max_new_tokens, temperature, top_k, generator, on_token)


def generate(model: Transformer, prompt: torch.Tensor, max_new_tokens: int, *, cached: bool = True,
             **kwargs) -> Generation:
    """``generate_cached`` (default) or ``generate_naive``."""
    fn = generate_cached if cached else generate_naive
    return fn(model, prompt, max_new_tokens, **kwargs)
