"""Inference economics (§1.1, §1.13): the facts behind "why efficiency matters", each with its
source and date (``data/economics.json``), and a cost model that turns a GPU's price per hour and
the lecture's memory-bound throughput model (§1.5) into dollars per million generated tokens.

The cost model is the lecture's ``compute_transformer_stats`` with one more line::

    latency        = (param_bytes + B·KV_bytes_per_sequence) / bandwidth     (s per step)
    throughput     = B / latency                                            (tokens/s)
    $ per M tokens = ($ per hour / 3600) / throughput · 1e6

so the cost per token is ``price · (param_bytes/B + KV_bytes_per_sequence) / bandwidth``: the
weight read is shared by the batch and falls as 1/B, the KV-cache read is per sequence and does
not. Batching pays until the KV cache dominates (``kv_equals_weights_batch``), and only while the
batch still fits in memory.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

from . import analysis
from .config import ModelConfig
from .hardware import GPUSpec, get_spec
from .paths import data_path

SECONDS_PER_DAY = 86_400
SECONDS_PER_HOUR = 3_600

# FLOPs per token per parameter (§1.2, §7 caveat 6): a forward pass does a multiply and an add per
# weight (2N); training adds the backward pass, about twice the forward (6N in total).
INFERENCE_FLOPS_PER_PARAM = 2
TRAINING_FLOPS_PER_PARAM = 6


# --------------------------------------------------------------------------------------------
# Facts and prices from data/economics.json
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One sourced number: what the source claims, who said it, when."""

    key: str
    value: float
    unit: str
    claim: str
    source: str
    url: str
    date: str
    note: str = ""

    def describe(self) -> str:
        return f"{self.claim} ({self.date}; {self.source})"


@dataclass(frozen=True)
class GPUPrice:
    """Dollars per GPU-hour. ``example=True``: an illustrative round number, not a quote."""

    gpu: str
    dollars_per_hour: float
    example: bool
    source: str
    url: str = ""
    date: str = ""
    note: str = ""

    def describe(self) -> str:
        what = "example price, not a quote" if self.example else f"{self.source}, {self.date}"
        return f"{self.gpu}: ${self.dollars_per_hour:g}/hour ({what})"


@lru_cache(maxsize=1)
def _raw() -> dict:
    with open(data_path("economics.json")) as f:
        return json.load(f)


def load_facts() -> dict[str, Fact]:
    """Every fact in ``data/economics.json``, by key (``"openai_tokens_per_day"``, ...)."""
    return {k: Fact(key=k, **v) for k, v in _raw()["facts"].items()}


def get_fact(key: str) -> Fact:
    facts = load_facts()
    if key not in facts:
        raise KeyError(f"No fact called {key!r} in data/economics.json. Known: {', '.join(facts)}.")
    return facts[key]


def gpu_prices() -> dict[str, GPUPrice]:
    """Dollars per GPU-hour by GPU key (the keys of ``data/hardware.json``)."""
    return {k: GPUPrice(gpu=k, **v) for k, v in _raw()["gpu_prices"].items() if not k.startswith("_")}


def _words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[a-z0-9]+", text.lower()))


def gpu_price(gpu: str | GPUSpec) -> GPUPrice:
    """The price of ``gpu`` (a key such as "H100 SXM" or a ``GPUSpec``; case and spacing forgiven)."""
    key = gpu.key if isinstance(gpu, GPUSpec) else gpu
    prices = gpu_prices()
    for k, p in prices.items():
        if _words(k) == _words(key):
            return p
    raise KeyError(f"No price for GPU {key!r} in data/economics.json. Known: {', '.join(prices)}. "
                   "Pass dollars_per_hour= yourself.")


# --------------------------------------------------------------------------------------------
# Tokens, FLOPs and people
# --------------------------------------------------------------------------------------------


def days_to_match(total_tokens: float, tokens_per_day: float) -> float:
    """Days for a service processing ``tokens_per_day`` to process ``total_tokens``.

    OpenAI (8.6e12 a day) vs DeepSeek-V4's training set (32e12): 3.72 days, "under four days".
    """
    if tokens_per_day <= 0:
        raise ValueError(f"tokens_per_day must be positive, got {tokens_per_day}.")
    return total_tokens / tokens_per_day


def days_to_match_flops(train_tokens: float, tokens_per_day: float, n_train: float = 1.0,
                        n_serve: float = 1.0) -> float:
    """Days for inference to spend as many FLOPs as a training run::

        (6 · n_train · train_tokens) / (2 · n_serve · tokens_per_day)

    Training costs about 6N FLOPs a token (forward and backward), inference about 2N (forward
    only), so for the same N (``n_train == n_serve``) it takes 3x as many days as the token count
    says. N is the number of parameters a token touches (the activated ones in a mixture of
    experts). Attention's FLOPs, which grow with the context, are left out (§7 caveat 6).
    """
    if n_train <= 0 or n_serve <= 0:
        raise ValueError(f"parameter counts must be positive, got n_train={n_train}, n_serve={n_serve}.")
    train_flops = TRAINING_FLOPS_PER_PARAM * n_train * train_tokens
    flops_per_day = INFERENCE_FLOPS_PER_PARAM * n_serve * tokens_per_day
    return days_to_match(train_flops, flops_per_day)


def reading_tokens_per_second(words_per_minute: float | None = None,
                              words_per_token: float | None = None) -> float:
    """How fast a person reads, in tokens/s: 238 words/minute at 0.75 words/token is 5.3 tokens/s.

    Defaults come from ``data/economics.json`` (Brysbaert 2019; OpenAI's rule of thumb).
    """
    wpm = get_fact("reading_words_per_minute").value if words_per_minute is None else words_per_minute
    wpt = get_fact("words_per_token").value if words_per_token is None else words_per_token
    return wpm / 60 / wpt


def agent_tokens_processed(turns: int, tokens_per_turn: float, prefix_caching: bool = True) -> float:
    """Tokens an agent loop runs through the model in ``turns`` turns, each adding
    ``tokens_per_turn`` to the context (its output plus tool results), which it re-reads every turn.

    Without prefix caching turn i re-processes the whole context so far (i·n tokens): the total is
    n·turns·(turns+1)/2, quadratic in the number of turns. With prefix caching (the KV cache of the
    shared prefix is kept between turns) only the new n tokens are processed: n·turns.
    """
    if turns < 0 or tokens_per_turn < 0:
        raise ValueError(f"turns and tokens_per_turn must be >= 0, got {turns}, {tokens_per_turn}.")
    if prefix_caching:
        return tokens_per_turn * turns
    return tokens_per_turn * turns * (turns + 1) / 2


# --------------------------------------------------------------------------------------------
# Cost per token from the memory-bound model (§1.5)
# --------------------------------------------------------------------------------------------


def cost_per_million_tokens(dollars_per_hour: float, tokens_per_second: float) -> float:
    """``$/hour / 3600 / (tokens/s) · 1e6``: an H100 at $10.8/h making 1,000 tokens/s costs $3/M."""
    if tokens_per_second <= 0:
        raise ValueError(f"tokens_per_second must be positive, got {tokens_per_second}.")
    return dollars_per_hour / SECONDS_PER_HOUR / tokens_per_second * 1e6


@dataclass(frozen=True)
class ServingEstimate:
    """One decode step of ``cfg`` at batch B and context S on ``n_gpus`` GPUs, priced.

    The memory-bound model (§1.5): every step reads all weights and all B KV caches at the GPUs'
    peak bandwidth, nothing else costs time. Several GPUs are treated as ideal model parallelism
    (bandwidth, memory and price add up, communication is free): an optimistic bound.
    """

    model: str
    gpu: str
    n_gpus: int
    B: int
    S: int
    n_params: int
    parameter_bytes: float
    kv_bytes_per_sequence: float
    memory: float  # bytes: weights + B KV caches (what every step reads, and must hold)
    capacity: float  # bytes of GPU memory, all GPUs
    latency: float  # seconds per decode step = per token of one sequence
    throughput: float  # tokens/s over the batch
    dollars_per_hour: float  # all GPUs
    peak_flops: float  # FLOP/s of all GPUs (bf16, or fp16 where there is no bf16)

    @property
    def fits(self) -> bool:
        """Weights and KV caches fit in GPU memory (activations and fragmentation ignored)."""
        return self.memory <= self.capacity

    @property
    def kv_bytes(self) -> float:
        return self.B * self.kv_bytes_per_sequence

    @property
    def kv_fraction(self) -> float:
        """Share of each step's bytes that is KV cache (> 0.5: the KV cache dominates)."""
        return self.kv_bytes / self.memory

    @property
    def tokens_per_second_per_user(self) -> float:
        return 1 / self.latency

    @property
    def cost_per_million(self) -> float:
        return cost_per_million_tokens(self.dollars_per_hour, self.throughput)

    @property
    def mfu(self) -> float:
        """Model FLOP utilisation: 2·params·throughput / peak FLOP/s (attention FLOPs left out)."""
        return INFERENCE_FLOPS_PER_PARAM * self.n_params * self.throughput / self.peak_flops

    def describe(self) -> str:
        fit = "fits" if self.fits else "does NOT fit"
        return (f"{self.model} on {self.n_gpus}x {self.gpu}, B={self.B}, S={self.S}: "
                f"{self.latency * 1e3:.2f} ms/token, {self.throughput:,.0f} tokens/s, "
                f"memory {self.memory / 1e9:.1f} of {self.capacity / 1e9:.0f} GB ({fit}), "
                f"${self.cost_per_million:.2f} per million tokens at ${self.dollars_per_hour:g}/h")


def _peak_flops(spec: GPUSpec) -> float:
    return spec.flops_for("bf16" if spec.supports_bf16 else "fp16")


def serving_estimate(
    cfg: ModelConfig,
    gpu: str | GPUSpec = "H100 SXM",
    B: int = 1,
    S: int = 1024,
    dollars_per_hour: float | None = None,
    n_gpus: int = 1,
    bytes_per_param: float = analysis.BF16,
    kv_bytes_per_value: float = analysis.BF16,
) -> ServingEstimate:
    """Latency, throughput, memory and $ per million tokens of decoding (§1.5 plus a price).

    ``dollars_per_hour`` is for ONE GPU (default: ``gpu_price(gpu)``, which may be an example
    price); the total is that times ``n_gpus``. Uses ``analysis.compute_transformer_stats`` with
    the GPU's datasheet bandwidth (times ``n_gpus``).
    """
    if B < 1 or S < 1 or n_gpus < 1:
        raise ValueError(f"B, S and n_gpus must be >= 1, got B={B}, S={S}, n_gpus={n_gpus}.")
    spec = gpu if isinstance(gpu, GPUSpec) else get_spec(gpu)
    price = gpu_price(spec).dollars_per_hour if dollars_per_hour is None else dollars_per_hour
    stats = analysis.compute_transformer_stats(
        cfg, B, S, memory_bandwidth=spec.memory_bandwidth * n_gpus,
        bytes_per_param=bytes_per_param, kv_bytes_per_value=kv_bytes_per_value)
    return ServingEstimate(
        model=cfg.name, gpu=spec.key, n_gpus=n_gpus, B=B, S=S, n_params=stats.num_params,
        parameter_bytes=stats.parameter_bytes, kv_bytes_per_sequence=stats.kv_bytes_per_sequence,
        memory=stats.memory, capacity=spec.memory_bytes * n_gpus, latency=stats.latency,
        throughput=stats.throughput, dollars_per_hour=price * n_gpus,
        peak_flops=_peak_flops(spec) * n_gpus)


def kv_equals_weights_batch(cfg: ModelConfig, S: int, bytes_per_param: float = analysis.BF16,
                            kv_bytes_per_value: float = analysis.BF16) -> float:
    """The batch at which the KV caches weigh as much as the weights: ``param_bytes / KV_per_seq``.

    Below it, doubling B nearly halves the cost per token (the weight read is shared); above it
    the per-sequence KV read dominates and the cost is within 2x of its floor. Llama 2 13B at
    S = 1024: 31; Llama 3 8B: 120 (6.25x less KV per token than Llama 2 13B, of which GQA's
    K = 8 of N = 32 heads gives 4x and its fewer, narrower layers 1.56x; but smaller weights too).
    """
    s = analysis.compute_transformer_stats(cfg, 1, S, bytes_per_param=bytes_per_param,
                                           kv_bytes_per_value=kv_bytes_per_value)
    return s.parameter_bytes / s.kv_bytes_per_sequence


def cost_floor_per_million(cfg: ModelConfig, gpu: str | GPUSpec = "H100 SXM", S: int = 1024,
                           dollars_per_hour: float | None = None,
                           kv_bytes_per_value: float = analysis.BF16) -> float:
    """The cost per million tokens as B -> infinity in the memory-bound model: every token still
    reads its own sequence's KV cache, ``price · KV_per_seq / bandwidth``. Memory runs out first."""
    spec = gpu if isinstance(gpu, GPUSpec) else get_spec(gpu)
    price = gpu_price(spec).dollars_per_hour if dollars_per_hour is None else dollars_per_hour
    kv = S * analysis.kv_bytes_per_token(cfg, kv_bytes_per_value)
    return price / SECONDS_PER_HOUR * kv / spec.memory_bandwidth * 1e6
