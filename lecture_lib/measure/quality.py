"""Measuring what quantization does to a trained model (notebook 06): held-out perplexity and KL
divergence to the original model, and perplexity through a KV cache (plain or int8).

The quantizers themselves are in ``lecture_lib.quant``; the windows scored are those of
``checkpoints.perplexity`` (``checkpoints.eval_batches``), so the numbers compare.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F_
from torch import nn

from ..cache.plain import KVCache
from ..checkpoints import EVAL_B, EVAL_T, EVAL_WINDOWS, eval_batches  # the same windows as perplexity()


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
    device = model.tok_emb.weight.device
    modes = model.training, reference.training
    model.train(False), reference.train(False)
    nll, kl, count = 0.0, 0.0, 0
    for windows in eval_batches(tokens, T, B, max_windows, device):
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
    ``KVCache.for_model``; pass ``Int8KVCache.for_model`` for int8).
    Teacher forcing: each window's tokens are fed through the cache ``chunk`` at a time (None:
    the whole window in one prefill call; 1: token by token, exactly as decoding does) and every
    position's prediction is scored. In this model a query always attends to keys and values
    *read back from the cache* (its own included), so the prefill already sees the quantized
    keys and values that decoding would: chunk=None and chunk=1 give the same perplexity up to
    float rounding, and the one-call version is T times fewer steps.
    """
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be a positive number of tokens (or None), got {chunk}.")
    make_cache = make_cache or KVCache.for_model
    step = T if chunk is None else chunk
    was_training, model.training = model.training, False
    device = model.tok_emb.weight.device
    nll, count = 0.0, 0
    for windows in eval_batches(tokens, T, B, max_windows, device):
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


__all__ = ["perplexity_and_kl", "cached_perplexity"]


# ---------------------------------------------------------------------------------------------
# Perplexity of a real model (its own tokenizer) on text, per token and per byte


@torch.no_grad()
def text_perplexity(model: nn.Module, tokens: torch.Tensor, decode: Callable[[list[int]], str],
                    T: int = EVAL_T, B: int = 8, max_windows: int | None = 32) -> dict:
    """Held-out perplexity of a model with its own tokenizer: ``tokens`` is the tokenized text
    (LongTensor [n]); ``decode`` turns ids back into text. Scores the same kind of windows as
    ``checkpoints.perplexity`` (T predicted tokens each, spread evenly over the text).

    Per token, perplexities of models with different tokenizers do not compare: a token of a
    49k-word vocabulary carries about 4 bytes of English, a byte-level model's token one. Per
    byte they do: exp(total NLL / bytes of UTF-8 text predicted), the number to set beside a
    byte-level model's perplexity (bits per byte = log2 of it)."""
    device = model.tok_emb.weight.device
    was_training, model.training = model.training, False
    nll, count, n_bytes = 0.0, 0, 0
    for windows in eval_batches(tokens, T, B, max_windows, device):
        logits = model(windows[:, :-1]).float()
        nll += F_.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="sum").item()
        count += windows[:, 1:].numel()
        n_bytes += sum(len(decode(w.tolist()).encode()) for w in windows[:, 1:].cpu())
    model.training = was_training
    return {"ppl_per_token": math.exp(nll / count), "ppl_per_byte": math.exp(nll / n_bytes),
            "bits_per_byte": nll / n_bytes / math.log(2), "tokens": count, "bytes": n_bytes,
            "bytes_per_token": n_bytes / count}

