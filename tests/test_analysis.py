"""Tests of lecture_lib.analysis against the lecture's own numbers (LECTURE.md) and against the
library's model. Expected values are written out or computed independently of the function
under test (by hand-expanded formulas, brute-force sums, or counting the real module)."""
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lecture_lib.cache import KVCache
from lecture_lib import ModelConfig, Transformer, get_config
from lecture_lib import analysis as A
from lecture_lib.config import mla_config

H100_FLOPS, H100_BW = 989e12, 3.35e12

LLAMA31_405B = ModelConfig(L=126, D=16384, N=128, K=8, H=128, F=53248, V=128256)
# Scaling book Part 7 practice model (§3.3), tied embeddings.
PRACTICE = ModelConfig(L=64, D=4096, N=32, K=8, H=256, F=16384, V=32128, tie_embeddings=True)


# ---- arithmetic intensity (§1.3, §1.4) ---------------------------------------------------------

def test_h100_accelerator_intensity():
    value = A.accelerator_intensity(989e12, 3.35e12)
    assert value == pytest.approx(295.22, abs=0.005)
    assert round(value) == 295
    assert A.critical_batch(989e12, 3.35e12) == pytest.approx(value)
    assert A.critical_batch(989e12, 3.35e12, beta=0.5) == pytest.approx(value / 2)
    # Scaling book (§3.1): TPU v5e 1.97e14 / 8.2e11 = 240, int8 weights with bf16 FLOPs: 120.
    assert round(A.critical_batch(1.97e14, 8.2e11)) == 240
    assert round(A.critical_batch(1.97e14, 8.2e11, beta=0.5)) == 120


def test_matmul_accounting():
    B, D, F = 3, 5, 7
    assert A.matmul_flops(B, D, F) == 2 * 3 * 5 * 7
    assert A.matmul_bytes(B, D, F) == 2 * 15 + 2 * 35 + 2 * 21
    assert A.matmul_intensity(B, D, F) == pytest.approx(105 / 71)
    assert A.matmul_intensity(B, D, F) == pytest.approx(A.matmul_flops(B, D, F) / A.matmul_bytes(B, D, F))


def test_matmul_intensity_tends_to_B():
    # B = 1 (matrix-vector): about 1 FLOP per byte, memory-limited on an H100.
    one = A.matmul_intensity(1, 4096, 4096)
    assert one == pytest.approx(1.0, rel=1e-3) and one < 1
    assert one < A.accelerator_intensity(H100_FLOPS, H100_BW)
    for B in (2, 8, 32):
        assert A.matmul_intensity(B, 65536, 65536) == pytest.approx(B, rel=1e-3)
    # Compute-limited iff B > 295 (with D, F large enough that the limit holds).
    assert A.matmul_intensity(400, 10**6, 10**6) > 295 > A.matmul_intensity(250, 10**6, 10**6)


def test_mlp_accounting_and_intensity():
    B, T, D, F = 2, 3, 5, 7
    assert A.mlp_flops(B, T, D, F) == 6 * 2 * 3 * 5 * 7
    assert A.mlp_bytes(B, T, D, F) == 4 * 30 + 4 * 42 + 6 * 35
    assert A.mlp_intensity(B, T, D, F) == pytest.approx((3 * 2 * 5 * 7 * 3) / (2 * 30 + 2 * 42 + 3 * 35))
    assert A.mlp_intensity(B, T, D, F) == pytest.approx(A.mlp_flops(B, T, D, F) / A.mlp_bytes(B, T, D, F))
    # Tends to B·T when B·T ≪ D, F; generation (T = 1) gives about B.
    assert A.mlp_intensity(4, 8, 10**6, 4 * 10**6) == pytest.approx(32, rel=1e-3)
    assert A.mlp_intensity(16, 1, 10**6, 4 * 10**6) == pytest.approx(16, rel=1e-3)


def test_attention_intensity():
    B, S, T, D = 2, 3, 5, 7
    assert A.attention_flops(B, S, T, D) == 4 * 2 * 3 * 5 * 7
    assert A.attention_bytes(B, S, T, D) == 4 * 2 * 3 * 7 + 4 * 2 * 5 * 7
    assert A.attention_intensity(S, T) == pytest.approx(
        A.attention_flops(B, S, T, D) / A.attention_bytes(B, S, T, D))
    for S in (1, 128, 1024, 8192):
        decode = A.attention_intensity(S, 1)
        assert decode == pytest.approx(S / (S + 1)) and decode < 1
        assert A.attention_intensity(S, S) == pytest.approx(S / 2)


def test_roofline():
    ridge = A.accelerator_intensity(H100_FLOPS, H100_BW)
    assert A.roofline(1.0, H100_FLOPS, H100_BW) == pytest.approx(3.35e12)
    assert A.roofline(ridge * 2, H100_FLOPS, H100_BW) == pytest.approx(989e12)
    assert A.roofline(ridge, H100_FLOPS, H100_BW) == pytest.approx(989e12)


# ---- parameter counts (§1.5, §3.3) ----------------------------------------------------------------

def test_llama2_13b_params_lecture_formula():
    cfg = get_config("llama2-13b")
    assert (cfg.L, cfg.D, cfg.N, cfg.K, cfg.H, cfg.F, cfg.V) == (40, 5120, 40, 40, 128, 13824, 32000)
    expected = 2 * 32000 * 5120 + 3 * 5120 * 13824 * 40 + (2 * 5120 * 40 * 128 + 2 * 5120 * 40 * 128) * 40
    assert expected == 13_015_449_600
    assert A.num_params(cfg) == expected
    assert round(A.num_params(cfg) / 1e9, 2) == 13.02
    # Caveat 3: GQA with K = 8 lowers the lecture's count to 11.34e9.
    assert round(A.num_params(cfg.replace(K=8)) / 1e9, 2) == 11.34


def test_scaling_book_practice_model_params():
    c = PRACTICE
    expected = c.L * c.D * (3 * c.F + 2 * c.H * (c.N + c.K)) + c.D * c.V
    assert round(expected / 1e9, 1) == 18.4
    assert A.num_params(c, tied=True) == expected
    assert A.num_params(c) == expected + c.D * c.V  # the lecture's formula always counts 2VD


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(L=2, D=64, N=4, K=2, H=16, F=176, V=256),
        ModelConfig(L=3, D=48, N=6, K=1, H=12, F=100, V=97),  # D != N·H, MQA
        ModelConfig(L=1, D=32, N=2, K=2, H=16, F=64, V=50),  # MHA
    ],
)
def test_num_params_exact_matches_module(cfg, tied):
    cfg = cfg.replace(tie_embeddings=tied)
    model = Transformer(cfg)
    counted = sum(p.numel() for p in model.parameters())  # a tied weight is listed once
    assert A.num_params_exact(cfg) == counted == model.num_params()
    norms = (2 * cfg.L + 1) * cfg.D
    lecture = A.num_params(cfg, tied=tied)
    assert A.num_params_exact(cfg) == lecture + norms


# ---- KV cache (§1.4, §1.6, §6) ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "cfg, expected",
    [
        (get_config("llama2-13b"), 819_200),
        (get_config("llama3-8b"), 131_072),
        (get_config("mistral-7b"), 131_072),
        (get_config("llama2-7b"), 524_288),
        (get_config("llama2-70b"), 327_680),
        (LLAMA31_405B, 516_096),
    ],
)
def test_kv_bytes_per_token(cfg, expected):
    assert A.kv_bytes_per_token(cfg) == expected
    assert A.kv_bytes_per_token(cfg, bytes_per_value=1) == expected // 2


def test_kv_cache_sizes_in_lecture_table():
    GiB = 2**30
    assert A.kv_cache_bytes(get_config("llama2-7b"), 1, 4096) == 2 * GiB
    assert A.kv_cache_bytes(get_config("llama2-13b"), 1, 8192) == 6.25 * GiB
    assert A.kv_cache_bytes(get_config("llama3-8b"), 1, 128 * 1024) == 16 * GiB
    assert A.kv_cache_bytes(get_config("llama3-8b"), 3, 100) == 3 * 100 * 131_072
    # Scaling book: 8192·40·128·40·2·2 ≈ 6.7 GB.
    assert A.kv_cache_bytes(get_config("llama2-13b"), 1, 8192) / 1e9 == pytest.approx(6.7, abs=0.05)


def test_kv_cache_formula_matches_allocation():
    cfg = ModelConfig(L=3, D=32, N=4, K=2, H=8, F=64, V=50, S_max=40)
    cache = KVCache.for_model(Transformer(cfg).to(torch.bfloat16), B=5)
    assert cache.nbytes == A.kv_cache_bytes(cfg, B=5, S=40, bytes_per_value=2)


def test_sliding_window_cap():
    mistral = get_config("mistral-7b")
    assert A.sliding_window_tokens(100, 4096) == 100
    assert A.sliding_window_tokens(100_000, 4096) == 4096
    assert A.sliding_window_tokens(100_000, None) == 100_000
    # Mistral's rolling buffer: at most 4096 tokens = 512 MiB a sequence at bf16.
    capped = A.kv_cache_bytes(mistral, 1, 32_768, window=mistral.sliding_window)
    assert capped == 512 * 2**20
    assert A.kv_cache_bytes(mistral, 1, 32_768) == 8 * capped
    with pytest.raises(ValueError):
        A.sliding_window_tokens(10, 0)


def test_mla_kv_bytes():
    assert A.mla_kv_elements_per_token("deepseek-v2") == 60 * (512 + 64) == 34_560
    assert A.mla_kv_bytes_per_token(mla_config("deepseek-v2")) == 69_120
    assert A.mla_kv_bytes_per_token("deepseek-v3") == 61 * 576 * 2 == 70_272
    # About 57x smaller than MHA with 128 heads of 128 dims; equal to GQA with 2.25 KV heads.
    v2 = mla_config("deepseek-v2")
    mha_elements = 2 * 128 * 128 * v2["L"]
    assert mha_elements / A.mla_kv_elements_per_token(v2) == pytest.approx(56.9, abs=0.05)


def test_cla_and_hybrid():
    cfg = get_config("llama3-8b")  # L = 32
    assert A.cla_kv_layers(32, 2) == 16 and A.cla_kv_layers(33, 2) == 17
    assert A.cla_kv_bytes_per_token(cfg, share=2) == 131_072 / 2
    assert A.cla_kv_bytes_per_token(cfg, share=1) == A.kv_bytes_per_token(cfg)
    with pytest.raises(ValueError):
        A.cla_kv_layers(32, 0)
    # 1 global layer in 6 (character.ai): ceil(32/6) = 6 global layers keep S, 26 keep the window.
    per = 2 * 8 * 128 * 2
    S, W = 100_000, 1024
    assert A.hybrid_kv_bytes_per_sequence(cfg, S, W, 6) == per * (6 * S + 26 * W)
    assert A.hybrid_kv_bytes_per_sequence(cfg, S, W, 1) == A.kv_cache_bytes(cfg, 1, S)


# ---- memory-bound model (§1.5, §3) -------------------------------------------------------------------

def test_llama2_13b_memory_bound_model():
    cfg = get_config("llama2-13b")
    n = 13_015_449_600
    kv = 1024 * (40 * 128) * 40 * 2 * 2
    for B in (1, 64, 256):
        s = A.compute_transformer_stats(cfg, B=B, S=1024)
        assert s.num_params == n
        assert s.parameter_bytes == 2 * n
        assert s.kv_bytes_per_sequence == kv
        assert s.memory == B * kv + 2 * n
        assert s.latency == pytest.approx((B * kv + 2 * n) / 3.35e12)
        assert s.throughput == pytest.approx(B * 3.35e12 / (B * kv + 2 * n))
    # 2026 lecture: B = 256 does not fit in an H100's 80 GB.
    assert A.compute_transformer_stats(cfg, B=256, S=1024).memory > 80e9


def test_latency_and_throughput_grow_with_batch():
    for cfg in (get_config("llama2-13b"), get_config("llama2-13b").replace(K=8)):
        stats = [A.compute_transformer_stats(cfg, B=B, S=1024) for B in (1, 4, 16, 64, 256)]
        for small, big in zip(stats, stats[1:]):
            assert big.latency > small.latency
            assert big.throughput > small.throughput


def test_gqa_speeds_up_lecture_model():
    cfg = get_config("llama2-13b")
    mha = A.compute_transformer_stats(cfg, B=64, S=1024)
    gqa = A.compute_transformer_stats(cfg.replace(K=8), B=64, S=1024)
    assert gqa.kv_bytes_per_sequence == mha.kv_bytes_per_sequence / 5
    assert gqa.latency < mha.latency and gqa.throughput > mha.throughput
    assert A.compute_transformer_stats(cfg.replace(K=8), B=256, S=1024).memory < 80e9


def test_general_step_time_pop_quiz():
    # Scaling book pop quiz (§3.2): 30B dense, int8 weights, bf16 FLOPs, 819 MB KV a sequence,
    # 16 TPU v5e chips.
    flops, bw = 16 * 1.97e14, 16 * 8.2e11
    b4 = A.step_time_from_totals(4, 819e6, 30e9, 30e9, flops, bw)
    assert b4 == pytest.approx((4 * 819e6 + 30e9) / bw)  # memory-bound: the min step time
    assert b4 * 1e3 == pytest.approx(2.5, abs=0.1)
    b256 = A.step_time_from_totals(256, 819e6, 30e9, 30e9, flops, bw)
    assert b256 == pytest.approx(256 * 819e6 / bw + 2 * 256 * 30e9 / flops)  # compute-bound MLP
    assert b256 * 1e3 == pytest.approx(21, abs=0.5)


def test_step_time_equals_memory_model_below_critical_batch():
    cfg = get_config("llama2-13b")
    for B in (1, 64, 256):
        assert A.step_time(cfg, B, 1024) == pytest.approx(A.compute_transformer_stats(cfg, B, 1024).latency)
    # Far above B_crit the weight matmuls are compute-bound and the step takes longer.
    n = A.num_params(cfg)
    big = A.step_time(cfg, 4096, 16)
    assert big == pytest.approx(4096 * 16 * 819_200 / H100_BW + 2 * 4096 * n / H100_FLOPS)
    assert big > A.compute_transformer_stats(cfg, 4096, 16).latency


def test_max_batch_that_fits():
    cfg = get_config("llama2-13b")
    n = 13_015_449_600
    assert A.max_batch_that_fits(cfg, 1024, 80e9) == math.floor((80e9 - 2 * n) / (1024 * 819_200))
    assert A.max_batch_that_fits(cfg, 1024, 20e9) == 0  # the weights alone do not fit
    # Scaling book practice problem 2: int8, 128k context, 16 x 16 GB: about 7; K = 1: about 56.
    n_tied = A.num_params(PRACTICE, tied=True)
    kw = dict(memory_bytes=256e9, bytes_per_param=1, kv_bytes_per_value=1)
    assert A.max_batch_that_fits(PRACTICE, 128_000, n_params=n_tied, **kw) == 7
    assert A.max_batch_that_fits(PRACTICE.replace(K=1), 128_000, n_params=n_tied, **kw) == 56


# ---- decode bytes and FLOPs ----------------------------------------------------------------------------

def test_decode_bytes_per_step():
    c = get_config("llama3.2-1b-like")
    assert (c.L, c.D, c.N, c.K, c.H, c.F, c.V, c.tie_embeddings) == (16, 2048, 32, 8, 64, 8192, 128256, False)
    per_layer = 2048 * 2048 + 2 * 2048 * 512 + 2048 * 2048 + 3 * 2048 * 8192
    weights = 16 * per_layer + 2048 * 128256 + 33 * 2048
    assert A.decode_bytes_per_step(c, B=1, S=0) == 2 * (weights + 2048)
    # About 2.47 GB at small S (we get 2.4716 GB at B = 1, S = 1).
    assert A.decode_bytes_per_step(c, B=1, S=1) / 1e9 == pytest.approx(2.4716, abs=5e-4)
    # Llama 3 8B: about 15.0 GB (we get 15.009 GB at B = 1, S = 1).
    assert A.decode_bytes_per_step(get_config("llama3-8b"), B=1, S=1) / 1e9 == pytest.approx(15.009, abs=5e-3)
    # The KV term: B·S·2·L·K·H·bytes.
    extra = A.decode_bytes_per_step(c, B=4, S=1000) - A.decode_bytes_per_step(c, B=4, S=0)
    assert extra == 4 * 1000 * 2 * 16 * 8 * 64 * 2


def _measured_flops(model, tokens, cache=None, pos=0):
    """Matmul FLOPs of one forward pass counted by torch (math SDPA so attention is visible)."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens, cache=cache, pos=pos)
    return {str(op).split(".")[-1]: n for op, n in counter.get_flop_counts()["Global"].items()}


def test_flops_match_torch_flop_counter():
    cfg = ModelConfig(L=2, D=48, N=4, K=2, H=16, F=80, V=100, S_max=64)
    model = Transformer(cfg).eval()
    B, P = 3, 10
    tokens = torch.randint(0, cfg.V, (B, P + 1))
    cache = KVCache.for_model(model, B)
    # Prefill: the linear layers (incl. the LM head over all P positions) are plain mm's.
    counts = _measured_flops(model, tokens[:, :P], cache, 0)
    assert counts["mm"] == A.forward_flops(cfg, P, 0, B=B, part="linear")
    # One decode step attending to P + 1 keys: every matmul, attention included.
    counts = _measured_flops(model, tokens[:, P:], cache, P)
    assert sum(counts.values()) == B * A.decode_flops_per_token(cfg, P + 1)
    assert counts["bmm"] == B * 4 * cfg.L * cfg.N * cfg.H * (P + 1)


def test_decode_flops_per_token_is_about_2_params():
    cfg = get_config("llama3-8b")
    two_p = 2 * A.num_params_exact(cfg)  # ≈ 2·params (embedding lookup and norms cost no matmul)
    assert A.decode_flops_per_token(cfg, 1) == pytest.approx(two_p, rel=0.08)
    assert A.decode_flops_per_token(cfg, 8192) - A.decode_flops_per_token(cfg, 0) == 4 * 32 * 32 * 128 * 8192


def _brute_force(cfg, passes):
    """Sum over forward passes (T new tokens at position pos) of 2·W·T + 4·L·N·H·Σ keys."""
    W = A.linear_params(cfg)
    total = 0
    for T, pos in passes:
        total += 2 * W * T + 4 * cfg.L * cfg.N * cfg.H * sum(pos + i + 1 for i in range(T))
    return total


@pytest.mark.parametrize("P, T_new", [(1, 1), (5, 1), (1, 9), (7, 13), (64, 100)])
def test_generation_flops_against_brute_force(P, T_new):
    cfg = get_config("tiny")
    naive = [(n, 0) for n in range(P, P + T_new)]
    cached = [(P, 0)] + [(1, P + j - 1) for j in range(1, T_new)]
    assert A.generation_flops_naive(cfg, P, T_new) == _brute_force(cfg, naive)
    assert A.generation_flops_cached(cfg, P, T_new) == _brute_force(cfg, cached)
    assert A.generation_flops_naive(cfg, P, T_new, B=3) == 3 * _brute_force(cfg, naive)
    for f in (A.generation_flops_naive, A.generation_flops_cached):
        assert f(cfg, P, T_new, part="linear") + f(cfg, P, T_new, part="attention") == f(cfg, P, T_new)
    if T_new == 1:
        assert A.generation_flops_naive(cfg, P, 1) == A.generation_flops_cached(cfg, P, 1)


def test_generation_flops_scaling():
    cfg = get_config("tiny")
    # Doubling T (prompt of 1): naive attention ~8x (O(T^3)), naive linear ~4x (O(T^2));
    # cached attention ~4x (O(T^2)), cached linear ~2x (O(T)).
    ratio = lambda f, part: f(cfg, 1, 4000, part=part) / f(cfg, 1, 2000, part=part)
    assert ratio(A.generation_flops_naive, "attention") == pytest.approx(8, rel=0.01)
    assert ratio(A.generation_flops_naive, "linear") == pytest.approx(4, rel=0.01)
    assert ratio(A.generation_flops_cached, "attention") == pytest.approx(4, rel=0.01)
    assert ratio(A.generation_flops_cached, "linear") == pytest.approx(2, rel=0.01)
    with pytest.raises(ValueError):
        A.generation_flops_naive(cfg, 0, 5)
    with pytest.raises(ValueError):
        A.forward_flops(cfg, 4, part="mlp")
