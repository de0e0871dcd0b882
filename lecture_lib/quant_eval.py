"""Measuring what quantization does to a trained model (notebook 06): held-out perplexity and KL
divergence to the original model, perplexity through a KV cache (plain or int8), int4 per channel
or with groups that fit each layer, and the inputs that reach a model's linear layers (where
LLM.int8()'s outliers live).

The quantizers themselves are in ``lecture_lib.quant``; this module only wires them to a model.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F_
from torch import nn

from .checkpoints import EVAL_B, EVAL_T, EVAL_WINDOWS, eval_windows  # the same windows as perplexity()
from .quant import Int4Linear, _skipped


# ---------------------------------------------------------------------------------------------
# Perplexity (and KL divergence to the original) on the checkpoints' evaluation windows


@torch.no_grad()
def perplexity_and_kl(model: nn.Module, reference: nn.Module, tokens: torch.Tensor, T: int = EVAL_T,
                      B: int = EVAL_B, max_windows: int | None = EVAL_WINDOWS) -> tuple[float, float]:
    """(perplexity of ``model``, mean KL(reference ‖ model) in nats per token) on the windows that
    ``checkpoints.perplexity`` scores.

    The KL divergence of the next-token distributions measures how far quantization moved the model
    from the original, token by token. It is never negative and does not depend on whether the
    text happens to favour the perturbed model, so small degradations rank reliably by it where
    perplexity differences of a fraction of a percent are within the luck of the sample. Both models
    must be on the same device; logits are compared in fp32.
    """
    picked = eval_windows(tokens, T, max_windows)
    device = model.tok_emb.weight.device
    modes = model.training, reference.training
    model.train(False), reference.train(False)
    nll, kl, count = 0.0, 0.0, 0
    for first in range(0, len(picked), B):
        windows = torch.stack([tokens[i * T:i * T + T + 1] for i in picked[first:first + B]]).to(device)
        logp = F_.log_softmax(model(windows[:, :-1]).float(), dim=-1)
        ref = F_.log_softmax(reference(windows[:, :-1]).float(), dim=-1)
        nll -= logp.gather(-1, windows[:, 1:, None]).sum().item()
        kl += (ref.exp() * (ref - logp)).sum().item()
        count += windows[:, 1:].numel()
    model.train(modes[0]), reference.train(modes[1])
    return math.exp(nll / count), kl / count


# ---------------------------------------------------------------------------------------------
# Perplexity through a KV cache


@torch.no_grad()
def cached_perplexity(model: nn.Module, tokens: torch.Tensor,
                      make_cache: Callable[[nn.Module, int, int], nn.Module] | None = None,
                      T: int = EVAL_T, B: int = EVAL_B, max_windows: int | None = EVAL_WINDOWS,
                      chunk: int | None = None) -> float:
    """Held-out perplexity with every key and value going through a KV cache: the same windows
    (all, or ``max_windows`` spread evenly over the text) and the same number as
    ``checkpoints.perplexity`` when the cache is exact.

    ``make_cache(model, B, S)`` builds the cache for a batch of windows (default
    ``model.new_cache``; pass ``lambda m, B, S: Int8KVCache.for_model(m, B, S)`` for int8).
    Teacher forcing: each window's tokens are fed through the cache ``chunk`` at a time (None:
    the whole window in one prefill call; 1: token by token, exactly as decoding does) and every
    position's prediction is scored. In this model a query always attends to keys and values
    *read back from the cache* (its own included), so the prefill already sees the quantized
    keys and values that decoding would: chunk=None and chunk=1 give the same perplexity up to
    float rounding, and the one-call version is T times fewer steps.
    """
    picked = eval_windows(tokens, T, max_windows)
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be a positive number of tokens (or None), got {chunk}.")
    make_cache = make_cache or (lambda m, b, s: m.new_cache(b, s))
    step = T if chunk is None else chunk
    was_training, model.training = model.training, False
    device = model.tok_emb.weight.device
    nll, count = 0.0, 0
    for first in range(0, len(picked), B):
        windows = torch.stack([tokens[i * T:i * T + T + 1] for i in picked[first:first + B]]).to(device)
        x, y = windows[:, :-1], windows[:, 1:]
        cache = make_cache(model, x.shape[0], T)
        for pos in range(0, T, step):
            logits = model(x[:, pos:pos + step], cache, pos).float()  # fp32 softmax
            nll += F_.cross_entropy(logits.flatten(0, 1), y[:, pos:pos + step].flatten(),
                                    reduction="sum").item()
            count += y[:, pos:pos + step].numel()
        del cache
    model.train(was_training)
    return math.exp(nll / count)


# ---------------------------------------------------------------------------------------------
# int4 per channel, or per group with a group size that fits each layer


def group_size_for(in_features: int, max_group: int) -> int:
    """The largest divisor of ``in_features`` that is at most ``max_group``: groups must tile a row
    exactly. 64 for an input dim of 128; 43 for 344 = 8 · 43, which 64, 32 and 16 do not divide."""
    if max_group < 1:
        raise ValueError(f"max_group must be a positive integer, got {max_group}.")
    return max(d for d in range(1, min(in_features, max_group) + 1) if in_features % d == 0)


def quantize_int4_(model: nn.Module, max_group: int | None = None,
                   skip: Iterable[str] = ("lm_head",)) -> dict[str, int]:
    """Replace every ``nn.Linear`` (but ``skip``) by an ``Int4Linear`` (zero-point, portable torch
    path) in place; returns {layer name: group size used}.

    ``max_group=None``: one group per output row (the whole input row): one scale and zero point per
    output channel, the coarsest int4 there is. ``max_group=g``: groups of g consecutive input
    weights, or, where g does not divide a layer's input dim, of the largest divisor below g
    (``group_size_for``). ``quant.quantize_model_(model, bits=4, group_size=g)`` needs one g that
    divides every input dim, which a model with D = 128 and F = 344 only allows up to g = 8.
    """
    skip = (skip,) if isinstance(skip, str) else tuple(skip)
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and not _skipped(name, skip)]
    used = {}
    for name, lin in targets:
        g = lin.in_features if max_group is None else group_size_for(lin.in_features, max_group)
        new = Int4Linear.from_linear(lin, group_size=g)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        used[name] = g
    return used


def quantize_int4_per_channel_(model: nn.Module, skip: Iterable[str] = ("lm_head",)) -> nn.Module:
    """``quantize_int4_(model, None, skip)``: one scale and zero point per output row; returns the model."""
    quantize_int4_(model, None, skip)
    return model


# ---------------------------------------------------------------------------------------------
# What reaches the linear layers


@torch.no_grad()
def capture_inputs(model: nn.Module, tokens: torch.Tensor, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Run ``model(tokens)`` once and return, for each module name, the input it received,
    flattened to [tokens features] (fp32, on the CPU).

    Forward hooks are removed afterwards, even when the forward pass fails. Modules that share
    one input (``wq``, ``wk``, ``wv`` all read the attention norm's output) give equal tensors.
    """
    names = list(names)
    seen: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name):
        def fn(_module, args):
            seen[name] = args[0].detach().reshape(-1, args[0].shape[-1]).float().cpu()
        return fn

    try:
        for name in names:
            handles.append(model.get_submodule(name).register_forward_pre_hook(hook(name)))
        was_training, model.training = model.training, False
        model(tokens)
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in seen]
    if missing:
        raise RuntimeError(f"These modules were never called in the forward pass: {missing}.")
    return seen


__all__ = ["eval_windows", "perplexity_and_kl", "cached_perplexity", "group_size_for", "quantize_int4_", "quantize_int4_per_channel_",
           "capture_inputs"]
