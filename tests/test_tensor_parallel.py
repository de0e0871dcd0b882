"""Tensor parallelism on the CPU: W gloo processes on 127.0.0.1 give one process's logits and
greedy tokens, with 2 all-reduces per layer per step; and its arithmetic (``parallel.cost``)."""
import pytest
import torch

from lecture_lib import analysis, get_config
from lecture_lib.checkpoints import load_checkpoint
from lecture_lib.decode import generate_cached
from lecture_lib.parallel import check_divisible, cost, shard_
from lecture_lib.parallel.run import decode_on_ranks, spawn

PROMPT = [5, 17, 99, 3, 42, 8, 120, 64]


def alone(name, n, dtype=torch.float32):
    model = load_checkpoint(name).to(dtype)
    x = torch.tensor([PROMPT])
    return model(x)[0], generate_cached(model, x, n).tokens[0].tolist()


@pytest.mark.parametrize("name,world", [("gqa-k8", 2), ("gqa-k8", 4), ("target", 2)])
def test_sharded_decode_equals_one_process(name, world):
    """gqa-k8: N = K = 8 heads, 2 or 4 a rank; target: K = 2 KV heads, 1 a rank, G = 4 query heads each."""
    logits, tokens = alone(name, 12)
    ranks = spawn(decode_on_ranks, world, name, PROMPT, 12)
    cfg = load_checkpoint(name).cfg
    for r in ranks:
        # float32 sums in another order: the logits agree to rounding, far under their spread
        assert torch.allclose(r["logits"], logits, rtol=0, atol=1e-4), (r["logits"] - logits).abs().max()
        assert r["tokens"] == tokens and r["fast_tokens"] == tokens
        assert r["allreduces_per_step"] == 2 * cfg.L
        assert (r["K_local"], r["N_local"], r["F_local"]) == (cfg.K // world, cfg.N // world, cfg.F // world)
    assert ranks[0]["params"] < load_checkpoint(name).num_params()  # each rank holds a slice


def test_sharded_float64_logits_to_the_last_bits():
    logits, _ = alone("target", 1, torch.float64)
    for r in spawn(decode_on_ranks, 2, "target", PROMPT, 1, "float64"):
        assert torch.allclose(r["logits"], logits, rtol=0, atol=1e-10)


def test_world_size_must_divide_the_kv_heads():
    model = load_checkpoint("target")  # K = 2
    with pytest.raises(ValueError, match="K \\(KV heads\\) = 2.*not divisible by 4"):
        shard_(model, rank=0, world=4)
    with pytest.raises(ValueError, match="positive integer"):
        check_divisible(model.cfg, 0)
    model.layers[0].attn.fuse_qkv()
    with pytest.raises(TypeError, match="shard first, then fuse"):
        shard_(model, rank=0, world=2)


def test_arithmetic():
    cfg = get_config("llama3-8b")
    W = 4
    # every byte is somewhere: W slices of the layers plus the replicated rest, once per chip
    layers = cost.sharded_bytes(cfg)
    assert cost.read_per_chip(cfg, 1) == pytest.approx(layers + cost.replicated_read_bytes(cfg))
    assert cost.read_per_chip(cfg, W) == pytest.approx(layers / W + cost.replicated_read_bytes(cfg))
    assert cost.bytes_per_chip(cfg, 1) == pytest.approx(analysis.num_params_exact(cfg) * 2)  # the whole model, bf16
    # the KV cache splits too: doubling W halves each chip's share
    kv1 = cost.read_per_chip(cfg, 2, B=8, S=32_768) - cost.read_per_chip(cfg, 2)
    kv2 = cost.read_per_chip(cfg, 4, B=8, S=32_768) - cost.read_per_chip(cfg, 4)
    assert kv1 == pytest.approx(2 * kv2)
    # a ring all-reduce sends twice kipply's count; kipply: 4 (W - 1) D / W bytes per layer per token
    assert cost.kipply_bytes_per_layer(cfg, W) == pytest.approx(4 * (W - 1) * cfg.D / W)
    assert cost.ring_bytes_per_layer(cfg, W) == pytest.approx(2 * cost.kipply_bytes_per_layer(cfg, W))
    # the step: memory time on one chip, and a ceiling set by what never shrinks
    kw = dict(hbm_bandwidth=4.8e12, link_bandwidth=450e9, allreduce_latency=8e-6)
    one = cost.tp_step(cfg, 1, **kw)
    assert one.comm_s == 0 and one.seconds == pytest.approx(cost.read_per_chip(cfg, 1) / 4.8e12)
    s = cost.speedups(cfg, [1, 2, 4, 8, 64], **kw)
    assert s[0] == 1 and all(a < b for a, b in zip(s, s[1:])) and s[-1] < cost.limit_speedup(cfg, **kw)
    free = dict(kw, allreduce_latency=0.0, link_bandwidth=float("inf"))
    assert cost.speedups(cfg, [2], **free)[0] == pytest.approx(one.seconds / cost.tp_step(cfg, 2, **free).memory_s)


def test_kipply_numbers():
    """kipply's Gopher-size example: small-batch comms 4 messages x 80 layers x 8 us = 2.6 ms ("about 3 ms")."""
    gopher = get_config("llama3-8b").replace(L=80)  # only the layer count matters here
    assert cost.kipply_latency(gopher) == pytest.approx(2.56e-3)
