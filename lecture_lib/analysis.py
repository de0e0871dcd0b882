"""The lecture's formulas: parameter counts, KV-cache bytes, arithmetic intensity, the
memory-bound latency/throughput model, critical batch size, the roofline, and FLOP counts of
naive vs KV-cached generation.

Everything here is plain arithmetic on a ``ModelConfig`` (or on numbers), in the lecture's
notation: B batch, S tokens conditioned on (KV length), T tokens processed, D model dim,
F MLP dim, N query heads, K KV heads, H head dim, L layers, V vocab.

Section numbers (§) refer to ``LECTURE.md`` (CS336 Lecture 10, *Inference*, with the scaling
book's Part 7 and kipply's "Transformer Inference Arithmetic"). Byte sizes are arguments with a
bf16 default of 2 bytes per number, so int8 (1) or int4 (0.5) variants are one argument away.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config import ModelConfig, mla_config

# The lecture's H100 figures (§1.3; 2026 adds the 80 GB of HBM, §1.5).
H100_FLOPS_PER_SECOND = 989e12  # bf16 dense tensor-core FLOP/s
H100_MEMORY_BANDWIDTH = 3.35e12  # HBM bytes/s
H100_MEMORY_BYTES = 80e9

BF16 = 2  # bytes per number


# --------------------------------------------------------------------------------------------
# Parameter counts (§1.5, §3.3)
# --------------------------------------------------------------------------------------------


def num_params(cfg: ModelConfig, *, tied: bool = False) -> int:
    """The lecture's parameter count (§1.5, ``compute_transformer_stats``)::

        num_params = 2VD + 3DFL + (2DNH + 2DKH)L

    embedding table + untied LM head (2VD), SwiGLU MLP (3DF a layer), Q and O projections
    (2DNH) and K and V projections (2DKH). Norm weights are left out. The lecture always counts
    2VD whatever ``cfg.tie_embeddings`` says; ``tied=True`` counts the table once (VD), which is
    the scaling book's convention in its practice problems (§3.3):
    ``L·D·(3F + 2H(N+K)) + D·V``.

    Note (§7 caveat 3): lowering K lowers this count too (Llama 2 13B: 13.02e9 at K = 40,
    11.34e9 at K = 8), so part of GQA's speed-up in the lecture comes from smaller weights.
    """
    L, D, N, K, H, F, V = cfg.L, cfg.D, cfg.N, cfg.K, cfg.H, cfg.F, cfg.V
    embeddings = V * D if tied else 2 * V * D
    return embeddings + 3 * D * F * L + (2 * D * N * H + 2 * D * K * H) * L


def linear_params(cfg: ModelConfig) -> int:
    """Weights of every matrix multiply in one forward pass: the L layers' Q, K, V, O and
    SwiGLU matrices plus the LM head (D·V). Each is read once per decode step and costs
    2 FLOPs per weight per token. The embedding table is a lookup, not a matmul.
    """
    per_layer = cfg.D * cfg.N * cfg.H * 2 + cfg.D * cfg.K * cfg.H * 2 + 3 * cfg.D * cfg.F
    return cfg.L * per_layer + cfg.D * cfg.V


def norm_params(cfg: ModelConfig) -> int:
    """RMSNorm weights: two a layer (before attention, before the MLP) and one at the end."""
    return (2 * cfg.L + 1) * cfg.D


def num_params_exact(cfg: ModelConfig) -> int:
    """What ``Transformer(cfg)`` really holds: the lecture's count plus the RMSNorm weights
    (``(2L + 1)·D``), with the embedding table counted once when ``cfg.tie_embeddings`` (the LM
    head then *is* the table). Equals ``Transformer(cfg).num_params()``.
    """
    embedding = 0 if cfg.tie_embeddings else cfg.V * cfg.D  # the LM head is in linear_params
    return linear_params(cfg) + embedding + norm_params(cfg)


# --------------------------------------------------------------------------------------------
# KV-cache size (§1.4, §1.6, §3.1, §6)
# --------------------------------------------------------------------------------------------


def kv_bytes_per_token(cfg: ModelConfig, bytes_per_value: float = BF16) -> float:
    """KV-cache bytes for one token of one sequence: ``2·L·K·H·bytes`` (§1.4, §6).

    For every layer (L) and KV head (K) an H-dim key and an H-dim value (the 2). GQA with K KV
    heads shrinks it by N/K against MHA (§1.6). Llama 2 13B: 819,200 B; Llama 3 8B: 131,072 B.
    """
    return 2 * cfg.L * cfg.K * cfg.H * bytes_per_value


def sliding_window_tokens(S: int, window: int | None) -> int:
    """Positions a sliding-window (local) attention layer keeps: ``min(S, window)`` (§1.6).

    Mistral's rolling buffer caps the cache at 4096 tokens a sequence whatever S is, so the KV
    cache stops growing with sequence length. ``window=None`` means full attention (S).
    """
    if window is None:
        return S
    if window < 1:
        raise ValueError(f"A sliding window must hold at least one position, got window={window}.")
    return min(S, window)


def kv_cache_bytes(
    cfg: ModelConfig, B: int, S: int, bytes_per_value: float = BF16, *, window: int | None = None
) -> float:
    """KV-cache bytes for B sequences of S tokens: ``B·S·2·L·K·H·bytes`` (§1.4, §1.5).

    With ``window`` (a rolling buffer on every layer, §1.6) each sequence keeps at most
    ``window`` positions. Compare with ``KVCache.nbytes``, what the library allocates.
    """
    return B * sliding_window_tokens(S, window) * kv_bytes_per_token(cfg, bytes_per_value)


def mla_kv_elements_per_token(mla_cfg: dict | str) -> int:
    """MLA cache elements per token: ``L·(kv_lora_rank + qk_rope_head_dim)`` (§1.6).

    MLA stores one compressed latent c (C = kv_lora_rank = 512 dims) a layer instead of K and V,
    plus 64 dims of decoupled RoPE key, because RoPE does not commute with the up-projection:
    512 + 64 = 576 a layer. DeepSeek-V2: 60·576 = 34,560 (the "34.6K" of the paper's Table 9).
    ``mla_cfg`` is a dict from ``config.mla_config`` or its name (``"deepseek-v2"``).
    """
    if isinstance(mla_cfg, str):
        mla_cfg = mla_config(mla_cfg)
    return mla_cfg["L"] * (mla_cfg["kv_lora_rank"] + mla_cfg["qk_rope_head_dim"])


def mla_kv_bytes_per_token(mla_cfg: dict | str, bytes_per_value: float = BF16) -> float:
    """MLA cache bytes per token (§1.6, §6): DeepSeek-V2 69,120 B, DeepSeek-V3 70,272 B at bf16."""
    return mla_kv_elements_per_token(mla_cfg) * bytes_per_value


def cla_kv_layers(L: int, share: int) -> int:
    """Layers that store K/V under Cross-Layer Attention (§1.6): ``ceil(L / share)``.

    CLA shares one K/V between ``share`` adjacent layers (CLA2: share = 2), the way GQA shares
    them between query heads.
    """
    if share < 1:
        raise ValueError(f"CLA shares K/V between share >= 1 adjacent layers, got share={share}.")
    return math.ceil(L / share)


def cla_kv_bytes_per_token(cfg: ModelConfig, share: int = 2, bytes_per_value: float = BF16) -> float:
    """KV bytes per token with Cross-Layer Attention (§1.6): ``2·ceil(L/share)·K·H·bytes``.

    The scaling book's caveat (§3.2): this shrinks the cache but not necessarily the step time,
    since a shared K/V may be read once per layer that uses it.
    """
    return 2 * cla_kv_layers(cfg.L, share) * cfg.K * cfg.H * bytes_per_value


def hybrid_kv_bytes_per_sequence(
    cfg: ModelConfig, S: int, window: int, global_every: int, bytes_per_value: float = BF16
) -> float:
    """KV bytes of one sequence when 1 layer in ``global_every`` attends globally (keeps S
    positions) and the rest attend to a local window (keep ``min(S, window)``) (§1.6; character.ai
    uses 1 global layer in 6). Global layers: ``ceil(L / global_every)``.
    """
    if global_every < 1:
        raise ValueError(f"global_every must be >= 1 (1 means every layer is global), got {global_every}.")
    n_global = math.ceil(cfg.L / global_every)
    n_local = cfg.L - n_global
    per_layer_token = 2 * cfg.K * cfg.H * bytes_per_value
    return per_layer_token * (n_global * S + n_local * sliding_window_tokens(S, window))


# --------------------------------------------------------------------------------------------
# Arithmetic intensity (§1.3, §1.4)
# --------------------------------------------------------------------------------------------


def accelerator_intensity(flops_per_second: float, memory_bandwidth: float) -> float:
    """FLOPs the accelerator can do per byte it reads (§1.3). H100: 989e12 / 3.35e12 = 295.22.

    A computation whose intensity is above this is compute-limited (good); below it,
    memory-limited (bad).
    """
    return flops_per_second / memory_bandwidth


def matmul_flops(B: int, D: int, F: int) -> int:
    """FLOPs of X[B×D] @ W[D×F]: ``2BDF`` (one multiply and one add per MAC) (§1.3)."""
    return 2 * B * D * F


def matmul_bytes(B: int, D: int, F: int, bytes_per_value: float = BF16) -> float:
    """Bytes moved by X[B×D] @ W[D×F]: read X (2BD), read W (2DF), write Y (2BF) at bf16 (§1.3)."""
    return bytes_per_value * (B * D + D * F + B * F)


def matmul_intensity(B: int, D: int, F: int, bytes_per_value: float = BF16) -> float:
    """FLOPs per byte of a matmul: ``BDF / (BD + BF + DF)`` at bf16 (§1.3).

    When B ≪ D, F this tends to B: a matrix-vector product (B = 1, generation) does about 1
    FLOP per byte, so it is memory-limited; on an H100 a matmul is compute-limited iff B > 295.
    """
    return (2 / bytes_per_value) * B * D * F / (B * D + B * F + D * F)


def mlp_flops(B: int, T: int, D: int, F: int) -> int:
    """FLOPs of a SwiGLU MLP (up, gate, down) on B·T tokens: ``6BTDF`` (§1.4)."""
    return 6 * B * T * D * F


def mlp_bytes(B: int, T: int, D: int, F: int, bytes_per_value: float = BF16) -> float:
    """Bytes of a SwiGLU MLP at bf16: ``4BTD + 4BTF + 6DF`` (§1.4).

    Read X (2BTD), read Wup, Wgate, Wdown (3·2DF), write U and G (2·2BTF), write Y (2BTD).
    """
    return bytes_per_value * (2 * B * T * D + 2 * B * T * F + 3 * D * F)


def mlp_intensity(B: int, T: int, D: int, F: int, bytes_per_value: float = BF16) -> float:
    """``3BDFT / (2BDT + 2BFT + 3DF)`` at bf16 (§1.4): tends to B·T when B·T ≪ D, F.

    Prefill (large B·T) is easily compute-limited; generation (T = 1) gives about B, the number
    of concurrent requests.
    """
    return (2 / bytes_per_value) * 3 * B * D * F * T / (2 * B * D * T + 2 * B * F * T + 3 * D * F)


def attention_flops(B: int, S: int, T: int, D: int) -> int:
    """FLOPs of attention's two matmuls, T queries against S keys: ``4BSTD`` (§1.4).

    Q·Kᵀ costs 2BSTD and softmax(A)·V costs 2BSTD (D = N·H; counts every (query, key) pair, so
    a causal prefill does about half of this).
    """
    return 4 * B * S * T * D


def attention_bytes(B: int, S: int, T: int, D: int, bytes_per_value: float = BF16) -> float:
    """Bytes of (flash) attention at bf16: ``4BSD + 4BTD`` (§1.4): read Q, K, V, write Y."""
    return bytes_per_value * (2 * B * S * D + 2 * B * T * D)


def attention_intensity(S: int, T: int, bytes_per_value: float = BF16) -> float:
    """``ST / (S + T)`` at bf16 (§1.4). B drops out: batching does not help attention.

    Prefill (T = S): S/2 (good). Generation (T = 1): S/(S+1) < 1 (bad; §7 caveat 7).
    """
    return (2 / bytes_per_value) * S * T / (S + T)


def roofline(intensity: float, flops_per_second: float = H100_FLOPS_PER_SECOND,
             memory_bandwidth: float = H100_MEMORY_BANDWIDTH) -> float:
    """Attainable FLOP/s at a given intensity: ``min(peak FLOP/s, intensity·bandwidth)``.

    The ridge point, where the two meet, is ``accelerator_intensity`` (§1.3).
    """
    return min(flops_per_second, intensity * memory_bandwidth)


def critical_batch(flops_per_second: float = H100_FLOPS_PER_SECOND,
                   memory_bandwidth: float = H100_MEMORY_BANDWIDTH, beta: float = 1) -> float:
    """Batch (tokens) above which decode matmuls are compute-bound: ``B_crit = β·FLOPs/BW``
    (§1.3, §3.1). β = bits per parameter / bits per activation: 1 for bf16 weights with bf16
    FLOPs, 0.5 for int8 weights with bf16 FLOPs (halves B_crit). H100 at β = 1: 295 (the
    scaling book says "about 280"; §7 caveat 5).
    """
    return beta * flops_per_second / memory_bandwidth


# --------------------------------------------------------------------------------------------
# The memory-bound latency/throughput model (§1.5, §3.1)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformerStats:
    """One decode step of the memory-bound model (§1.5): latency in s/token of one sequence,
    throughput in tokens/s over the batch, sizes in bytes."""

    B: int
    S: int
    num_params: int
    parameter_bytes: float
    kv_bytes_per_sequence: float
    memory: float
    latency: float
    throughput: float

    def describe(self) -> str:
        return (f"B={self.B:4d} S={self.S}: params {self.num_params / 1e9:.2f}e9, "
                f"memory {self.memory / 1e9:.2f} GB, latency {self.latency * 1e3:.2f} ms/token, "
                f"throughput {self.throughput:,.0f} tokens/s")


def compute_transformer_stats(
    cfg: ModelConfig,
    B: int,
    S: int,
    memory_bandwidth: float = H100_MEMORY_BANDWIDTH,
    bytes_per_param: float = BF16,
    kv_bytes_per_value: float = BF16,
) -> TransformerStats:
    """The lecture's memory-bound model (§1.5, ``compute_transformer_stats``).

    Every decode step reads all parameters and all of the KV cache, compute and communication
    overlap perfectly and overheads are ignored::

        num_params        = 2VD + 3DFL + (2DNH + 2DKH)L
        parameter_bytes   = 2·num_params               (bf16)
        kv_bytes/sequence = S·(K·H)·L·2·2              (K and V; bf16)
        memory            = B·kv_bytes/sequence + parameter_bytes
        latency           = memory / memory_bandwidth  (s/token)
        throughput        = B / latency                (tokens/s)

    Bigger B: worse latency (O(B) KV to read), better throughput (the parameter read is
    amortised over B sequences).
    """
    n = num_params(cfg)
    parameter_bytes = bytes_per_param * n
    kv_per_seq = S * kv_bytes_per_token(cfg, kv_bytes_per_value)  # S·(K·H)·L·2·bytes
    memory = B * kv_per_seq + parameter_bytes
    latency = memory / memory_bandwidth
    return TransformerStats(B=B, S=S, num_params=n, parameter_bytes=parameter_bytes,
                            kv_bytes_per_sequence=kv_per_seq, memory=memory, latency=latency,
                            throughput=B / latency)


def step_time_from_totals(
    B: int,
    kv_bytes_per_sequence: float,
    n_params: float,
    parameter_bytes: float,
    flops_per_second: float = H100_FLOPS_PER_SECOND,
    memory_bandwidth: float = H100_MEMORY_BANDWIDTH,
) -> float:
    """The scaling book's general decode step time in seconds (§3.1)::

        B·KV/BW  +  max(2·B·params / FLOPs,  param_bytes / BW)

    The first term is attention (always bandwidth-bound); the second the weight matmuls, which
    are bandwidth-bound below the critical batch and compute-bound above it.
    """
    attention = B * kv_bytes_per_sequence / memory_bandwidth
    weights = max(2 * B * n_params / flops_per_second, parameter_bytes / memory_bandwidth)
    return attention + weights


def step_time(
    cfg: ModelConfig,
    B: int,
    S: int,
    flops_per_second: float = H100_FLOPS_PER_SECOND,
    memory_bandwidth: float = H100_MEMORY_BANDWIDTH,
    bytes_per_param: float = BF16,
    kv_bytes_per_value: float = BF16,
) -> float:
    """General step time (§3.1) for a config, counting parameters with the lecture's formula
    (``num_params``). Unlike ``compute_transformer_stats`` it turns compute-bound at large B.
    """
    stats = compute_transformer_stats(cfg, B, S, memory_bandwidth, bytes_per_param, kv_bytes_per_value)
    return step_time_from_totals(B, stats.kv_bytes_per_sequence, stats.num_params, stats.parameter_bytes,
                                 flops_per_second, memory_bandwidth)


def max_batch_that_fits(
    cfg: ModelConfig,
    S: int,
    memory_bytes: float = H100_MEMORY_BYTES,
    bytes_per_param: float = BF16,
    kv_bytes_per_value: float = BF16,
    n_params: float | None = None,
) -> int:
    """Largest B whose KV caches (S tokens each) fit beside the weights (§1.5, §3.3)::

        floor((memory − param_bytes) / (S · kv_bytes_per_token))

    0 when the weights alone do not fit. ``n_params`` overrides the lecture's count
    (``num_params(cfg)``), e.g. with ``num_params(cfg, tied=True)`` for the scaling book.
    """
    n = num_params(cfg) if n_params is None else n_params
    free = memory_bytes - bytes_per_param * n
    if free <= 0:
        return 0
    return int(free // (S * kv_bytes_per_token(cfg, kv_bytes_per_value)))


def decode_bytes_per_step(
    cfg: ModelConfig, B: int, S: int, weight_bytes: float = BF16, kv_bytes: float = BF16
) -> float:
    """Bytes one decode step must read (the roofline's denominator, §1.4-1.5):

    - every weight matrix once: all linear layers and the LM head (``linear_params``) plus the
      RMSNorm weights;
    - B rows of the embedding table (the new tokens' embeddings);
    - the KV cache so far: ``B·S·2·L·K·H·kv_bytes`` with S the positions attended.

    Llama-3.2-1B-like (untied): about 2.47 GB at small S; Llama 3 8B about 15.0 GB. Activations
    and the write of the new token's K/V are left out (they are O(B·D), negligible).
    """
    weights = (linear_params(cfg) + norm_params(cfg) + B * cfg.D) * weight_bytes
    return weights + B * S * kv_bytes_per_token(cfg, kv_bytes)


def linear_out_features(cfg: ModelConfig) -> int:
    """Output rows of every weight matrix (Q, K, V, O, gate, up, down per layer, and the LM head):
    the number of per-channel scales an int8 weight-only model stores."""
    return cfg.L * (cfg.N * cfg.H + 2 * cfg.K * cfg.H + 2 * cfg.F + 2 * cfg.D) + cfg.V


def int8_decode_bytes_per_step(cfg: ModelConfig, B: int, S: int, act_bytes: float = BF16,
                               scale_bytes: float | None = None) -> float:
    """``decode_bytes_per_step`` with every weight matrix int8 weight-only (LM head included):
    1 byte a weight plus one scale (``scale_bytes``, default the activations' ``act_bytes``) per
    output row; norms, embedding rows and the KV cache stay at ``act_bytes``."""
    scale_bytes = act_bytes if scale_bytes is None else scale_bytes
    full = decode_bytes_per_step(cfg, B, S, act_bytes, act_bytes)
    return full - linear_params(cfg) * (act_bytes - 1) + linear_out_features(cfg) * scale_bytes


# --------------------------------------------------------------------------------------------
# FLOPs of a forward pass and of generation (§1.2, §1.4, §3.1, §7 caveat 6)
# --------------------------------------------------------------------------------------------


def decode_flops_per_token(cfg: ModelConfig, S: int) -> int:
    """Forward FLOPs to decode one token that attends to S keys (itself included)::

        2·linear_params  +  4·L·N·H·S

    The first term is ≈ 2·params (every weight matrix incl. the LM head, 2 FLOPs a MAC; §7
    caveat 6: a forward pass is 2·params a token, training's 6 counts the backward pass too).
    The second is attention: Q·Kᵀ and softmax·V each cost 2·N·H per key per layer. It equals
    the first at S = linear_params / (2·L·N·H), roughly 6·D for a Llama-shaped model (about
    12·D² weights a layer), so at short context it is small (kipply §4.1 neglects it).
    """
    return 2 * linear_params(cfg) + 4 * cfg.L * cfg.N * cfg.H * S


def forward_flops(cfg: ModelConfig, T: int, pos: int = 0, B: int = 1, part: str = "total") -> int:
    """Matmul FLOPs of ``model(tokens[B, T], pos=pos)``: T new tokens at positions pos ... pos+T-1,
    each attending causally to pos + i + 1 keys (the cached prefix and the new tokens up to it).

    linear: ``2·linear_params·B·T`` (the library computes logits for all T positions);
    attention: ``4·L·N·H·B·Σ_i (pos + i + 1) = 4·L·N·H·B·(T·pos + T(T+1)/2)``.
    ``part`` is "total", "linear" or "attention".
    """
    linear = 2 * linear_params(cfg) * B * T
    attention = 4 * cfg.L * cfg.N * cfg.H * B * (T * pos + T * (T + 1) // 2)
    return _pick(part, linear, attention)


def _pick(part: str, linear: int, attention: int) -> int:
    if part == "total":
        return linear + attention
    if part == "linear":
        return linear
    if part == "attention":
        return attention
    raise ValueError(f"part must be 'total', 'linear' or 'attention', got {part!r}.")


def _sum_range(a: int, b: int) -> int:
    """Σ n for n = a..b."""
    return (b * (b + 1) - (a - 1) * a) // 2


def _sum_triangles(a: int, b: int) -> int:
    """Σ n(n+1)/2 for n = a..b (differences of tetrahedral numbers)."""
    def tetra(n):
        return n * (n + 1) * (n + 2) // 6
    return tetra(b) - tetra(a - 1)


def generation_flops_naive(
    cfg: ModelConfig, prompt_len: int, T_new: int, B: int = 1, part: str = "total"
) -> int:
    """FLOPs to generate T_new tokens without a KV cache (§1.4, §3.1).

    Each step feeds the whole history: T_new forward passes over P, P+1, ..., P+T_new-1 tokens
    (P = prompt_len; the last new token is never fed back). A pass over n tokens costs
    ``2·linear_params·n`` (linear) + ``4·L·N·H·n(n+1)/2`` (causal attention), so in total the
    linear part grows as O(T²) and attention as O(T³).
    """
    _check_generation(prompt_len, T_new)
    a, b = prompt_len, prompt_len + T_new - 1
    linear = 2 * linear_params(cfg) * B * _sum_range(a, b)
    attention = 4 * cfg.L * cfg.N * cfg.H * B * _sum_triangles(a, b)
    return _pick(part, linear, attention)


def generation_flops_cached(
    cfg: ModelConfig, prompt_len: int, T_new: int, B: int = 1, part: str = "total"
) -> int:
    """FLOPs to generate T_new tokens with a KV cache (§1.4, §3.1).

    Prefill: one causal pass over the P prompt tokens (it yields the first new token). Then
    T_new - 1 decode steps, step j feeding one token at position P + j - 1 that attends to
    P + j keys. Linear part O(T), attention O(T²). Equals ``generation_flops_naive`` at T_new = 1.
    """
    _check_generation(prompt_len, T_new)
    P = prompt_len
    linear = 2 * linear_params(cfg) * B * (P + T_new - 1)
    # Keys attended: prefill Σ_{i=1..P} i, then P+1, ..., P+T_new-1.
    keys = P * (P + 1) // 2 + _sum_range(P + 1, P + T_new - 1)
    attention = 4 * cfg.L * cfg.N * cfg.H * B * keys
    return _pick(part, linear, attention)


def _check_generation(prompt_len: int, T_new: int) -> None:
    if prompt_len < 1 or T_new < 1:
        raise ValueError(
            f"Generation needs a prompt of at least one token and at least one new token, got "
            f"prompt_len={prompt_len}, T_new={T_new}."
        )


def attention_linear_crossover(cfg: ModelConfig) -> float:
    """Keys S at which a decoded token's attention FLOPs (``4·L·N·H·S``) equal its linear FLOPs
    (``2·linear_params``): ``linear_params / (2·L·N·H)``, roughly 6·D for a Llama shape with an
    untied LM head (``decode_flops_per_token``).

    Below it, generation is MLP-dominated: the FLOPs of T tokens grow as T² naive and T cached.
    Well above it, attention dominates and the lecture's T³ (naive) and T² (cached) appear. A
    whole forward over n tokens (a naive step) has attention equal to linear at n = 2·S.
    """
    return linear_params(cfg) / (2 * cfg.L * cfg.N * cfg.H)
