"""Decoding: naive (recompute the whole prefix every step) and KV-cached (prefill, then one token
a step), greedy or sampled, with per-token timestamps so that TTFT and inter-token latency are
measured rather than guessed, and stopping at an EOS token or at each sequence's own limit.

Each new token's timestamp is taken once the token is on the host (``.tolist()`` waits for the
device), which is when a streaming server could send it.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from ..cache.plain import KVCache
from ..devices import synchronize
from ..model import Transformer, check_tokens
from .result import Generation
from .sampling import check_sampling, sample
from .stopping import Stopper, check_token_id, token_limits


def check_prompt(model: Transformer, prompt: torch.Tensor, max_new_tokens) -> list[int]:
    """Check a generate call's inputs at the door; returns the per-sequence token limits."""
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2:
        shape = tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__
        raise ValueError(f"prompt must be a [B T] tensor of token ids, got {shape}; "
                         "for one sequence use prompt[None].")
    limits = token_limits(max_new_tokens, prompt.shape[0])
    check_ids(prompt, model.cfg.V)
    need = prompt.shape[1] + max(limits)
    if need > model.cfg.S_max:
        raise ValueError(
            f"The prompt ({prompt.shape[1]} tokens) plus max_new_tokens ({max(limits)}) need {need} "
            f"positions, more than the model's S_max = {model.cfg.S_max}. Shorten one of them, or build "
            f"the model with cfg.replace(S_max={need})."
        )
    return limits


def check_ids(prompt: torch.Tensor, V: int) -> None:
    """A prompt of token ids: integers, not empty, each in [0, V) (checked on every device: one
    sync per call, before any work starts)."""
    check_tokens(prompt, V)
    if prompt.device.type != "cpu":
        lo, hi = prompt.min().item(), prompt.max().item()
        if lo < 0 or hi >= V:
            raise ValueError(f"Token ids must lie in [0, V) = [0, {V}), got ids from {lo} to {hi}. "
                             "Use the model's own tokenizer, or a config whose V covers these ids.")


@torch.inference_mode()
def _decode_loop(step: Callable[[torch.Tensor, int], torch.Tensor], prompt: torch.Tensor, limits: list[int],
                 temperature: float, top_k: int | None, generator: torch.Generator | None,
                 on_token: Callable | None, eos_id: int | None, pad_id: int) -> Generation:
    synchronize(prompt.device)
    start = time.perf_counter()
    out, times = [], []
    stop = Stopper(limits, eos_id)
    x = prompt  # what the model is fed at the next step
    for i in range(max(limits)):
        logits = step(x, i)[:, -1]  # [B V]
        active = stop.active
        if len(active) == prompt.shape[0]:
            nxt = sample(logits, temperature, top_k, generator)  # [B]
        else:  # finished sequences are fed padding and cost no sampling
            nxt = torch.full((prompt.shape[0],), pad_id, dtype=torch.long, device=prompt.device)
            rows = torch.tensor(active, device=prompt.device)
            nxt[rows] = sample(logits[rows], temperature, top_k, generator)
        ids = nxt.tolist()  # waits for the device: the token now exists on the host
        times.append(time.perf_counter() - start)
        out.append(nxt)
        stop.record(ids)
        if on_token is not None:
            on_token(i, ids, times[-1])
        if stop.all_done:
            break
        x = nxt[:, None]
    return Generation(torch.stack(out, dim=1).cpu(), prompt.shape[1], times, lengths=stop.lengths,
                      finish_reasons=stop.reasons, pad_id=pad_id)


def _check_request(model, prompt, max_new_tokens, temperature, top_k, eos_id, pad_id) -> list[int]:
    limits = check_prompt(model, prompt, max_new_tokens)
    check_sampling(temperature, top_k)
    check_token_id("eos_id", eos_id, model.cfg.V)
    check_token_id("pad_id", pad_id, model.cfg.V)
    return limits


def generate_naive(model: Transformer, prompt: torch.Tensor, max_new_tokens, *,
                   temperature: float = 0.0, top_k: int | None = None,
                   generator: torch.Generator | None = None, on_token: Callable | None = None,
                   eos_id: int | None = None, pad_id: int = 0) -> Generation:
    """No cache: every step runs the model on the whole sequence so far, prompt included.

    Step i processes prompt_len + i tokens, so its cost grows with the position; summed over T
    new tokens the attention FLOPs grow like T^3 and the MLP FLOPs like T^2.
    ``max_new_tokens``: an int, or one limit per sequence; ``eos_id``: stop a sequence at this
    token (it is kept); finished sequences are padded with ``pad_id``.
    """
    limits = _check_request(model, prompt, max_new_tokens, temperature, top_k, eos_id, pad_id)
    seq = [prompt]

    def step(x, i):
        if i > 0:
            seq.append(x)
        return model(torch.cat(seq, dim=1))

    return _decode_loop(step, prompt, limits, temperature, top_k, generator, on_token, eos_id, pad_id)


def generate_cached(model: Transformer, prompt: torch.Tensor, max_new_tokens, *,
                    temperature: float = 0.0, top_k: int | None = None,
                    generator: torch.Generator | None = None, on_token: Callable | None = None,
                    cache=None, eos_id: int | None = None, pad_id: int = 0) -> Generation:
    """Prefill the prompt into a preallocated KV cache, then feed one new token per step.

    Each decode step processes a single token and reads the keys/values of all earlier ones from
    the cache: its MLP cost is constant and its attention cost grows linearly with the position.
    ``cache``: any cache of the protocol (default: a new ``KVCache`` just long enough). Stopping
    as in ``generate_naive``.
    """
    limits = _check_request(model, prompt, max_new_tokens, temperature, top_k, eos_id, pad_id)
    B, T0 = prompt.shape
    if cache is None:
        cache = KVCache.for_model(model, B, T0 + max(limits))
    cache.check_fits(T0 + max(limits))

    def step(x, i):
        return model(x, cache, 0 if i == 0 else T0 + i - 1)

    return _decode_loop(step, prompt, limits, temperature, top_k, generator, on_token, eos_id, pad_id)


def generate(model: Transformer, prompt: torch.Tensor, max_new_tokens, *, cached: bool = True,
             **kwargs) -> Generation:
    """``generate_cached`` (default) or ``generate_naive``."""
    fn = generate_cached if cached else generate_naive
    return fn(model, prompt, max_new_tokens, **kwargs)
