import copy
import os
import time

import pytest
import torch

from lecture_lib import ModelConfig, Transformer
from lecture_lib.cache import StaticKVCache
from lecture_lib.decode.fast import FastGenerator, fuse_projections_
from lecture_lib.decode.sampling import sample
from lecture_lib.decode.plain import generate_cached


def model_with(K, **kw):
    cfg = ModelConfig(**{"L": 2, "D": 64, "N": 8, "K": K, "H": 8, "F": 96, "V": 97, "S_max": 80, **kw})
    return Transformer(cfg).eval()


@pytest.mark.parametrize("K,fuse", [(8, True), (2, True), (1, False)])  # MHA, GQA, MQA
def test_fast_greedy_tokens_equal_generate_cached(K, fuse):
    model = model_with(K)
    prompt = torch.randint(0, 97, (3, 11))
    ref = generate_cached(model, prompt, 30).tokens
    gen = FastGenerator(copy.deepcopy(model), B=3, S_max=60, fuse=fuse)
    assert not gen.compiled  # CPU default: eager
    out = gen.generate(prompt, 30)
    assert out.tokens.shape == (3, 30) and out.tokens.device.type == "cpu"
    assert torch.equal(out.tokens, ref)
    # A second call reuses the cache (stale tail entries are masked) and gives the same tokens;
    # a shorter prompt too.
    assert torch.equal(gen.generate(prompt, 30).tokens, ref)
    short = prompt[:, :5]
    assert torch.equal(gen.generate(short, 20).tokens, generate_cached(model, short, 20).tokens)


def test_fused_projections_give_the_same_logits():
    model = model_with(2)
    x = torch.randint(0, 97, (2, 13))
    with torch.no_grad():
        before = model(x)
        n_params = model.num_params()
        assert fuse_projections_(model) == 2
        after = model(x)
    attn, mlp = model.layers[0].attn, model.layers[0].mlp
    assert attn.wqkv.weight.shape == ((8 + 2 * 2) * 8, 64) and not hasattr(attn, "wq")
    assert mlp.w_gate_up.weight.shape == (2 * model.cfg.F, 64) and not hasattr(mlp, "w_up")
    assert model.num_params() == n_params  # the same weights, stacked: no copy kept
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    attn.fuse_qkv()  # idempotent
    mlp.fuse_gate_up()


def test_fuse_qkv_refuses_quantized_layers():
    from lecture_lib.quant import quantize_model_

    model = quantize_model_(model_with(2), bits=8)
    with pytest.raises(TypeError, match="fuse before quantizing"):
        model.layers[0].attn.fuse_qkv()
    with pytest.raises(TypeError, match="fuse before quantizing"):
        model.layers[0].mlp.fuse_gate_up()
    with pytest.warns(UserWarning, match="stay unfused"):
        gen = FastGenerator(model, B=1, S_max=30)  # still works, unfused
    assert gen.generate(torch.randint(0, 97, (1, 4)), 5).tokens.shape == (1, 5)


def test_sampling_is_reproducible_with_a_seed():
    model = model_with(2)
    prompt = torch.randint(0, 97, (2, 5))
    gen = FastGenerator(model, B=2, S_max=40)
    a = gen.generate(prompt, 30, temperature=0.8, seed=1).tokens
    b = gen.generate(prompt, 30, temperature=0.8, seed=1).tokens
    c = gen.generate(prompt, 30, temperature=0.8, seed=2).tokens
    greedy = gen.generate(prompt, 30).tokens
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, greedy)
    k1 = gen.generate(prompt, 30, temperature=5.0, top_k=1, seed=3).tokens
    assert torch.equal(k1, greedy)  # top_k = 1 leaves only the argmax


def test_exponential_trick_samples_from_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).repeat(40000, 1)
    torch.manual_seed(0)
    drawn = sample(logits, torch.tensor(1.0))
    freq = torch.bincount(drawn, minlength=4).float() / len(drawn)
    torch.testing.assert_close(freq, torch.softmax(logits[0], -1), atol=0.01, rtol=0)
    top2 = sample(logits, torch.tensor(1.0), top_k=2)
    assert set(top2.tolist()) == {1, 2}


def test_timing_fields_and_per_token_times():
    gen = FastGenerator(model_with(2), B=1, S_max=40)
    out = gen.generate(torch.randint(0, 97, (1, 8)), 12, time_per_token=True)
    assert gen.compile_seconds is not None and gen.compile_seconds > 0  # the warm-up ran
    assert out.steps == 11 and out.decode_seconds > 0 and out.ttft > 0
    assert out.decode_tokens_per_s == pytest.approx(11 / out.decode_seconds)
    assert len(out.token_times) == 12 and out.token_times == sorted(out.token_times)


def test_clear_errors():
    gen = FastGenerator(model_with(2), B=2, S_max=20)
    with pytest.raises(ValueError, match="B = 2"):
        gen.generate(torch.zeros(1, 4, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="S_max = 20"):
        gen.generate(torch.zeros(2, 15, dtype=torch.long), 6)
    with pytest.raises(ValueError, match="RoPE table"):
        StaticKVCache(ModelConfig(S_max=32), 1, 64)


def test_static_cache_writes_in_place():
    cfg = ModelConfig(L=2, K=2, H=4, S_max=16)
    cache = StaticKVCache(cfg, B=1, S_max=8)
    ptr = cache.k[1].data_ptr()
    k = torch.ones(1, 2, 1, 4)
    full_k, _ = cache.update(1, torch.tensor([3]), k, 2 * k)
    assert full_k.data_ptr() == ptr and full_k.shape == (1, 2, 8, 4)
    assert cache.k[1][0, :, 3].eq(1).all() and cache.v[1][0, :, 3].eq(2).all() and cache.k[0].eq(0).all()
    prefix_k, _ = cache.update(0, 0, torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
    assert prefix_k.shape == (1, 2, 3, 4)
    assert cache.nbytes == 2 * 2 * 1 * 2 * 8 * 4 * 4


@pytest.mark.skipif(not os.environ.get("LECTURE_LIB_SLOW"),
                    reason="compiles with Inductor on the CPU (~1 min); set LECTURE_LIB_SLOW=1")
def test_compiled_fast_path_on_cpu_matches_generate_cached():
    model = model_with(2, L=1)
    prompt = torch.randint(0, 97, (2, 7))
    ref = generate_cached(model, prompt, 20).tokens
    gen = FastGenerator(copy.deepcopy(model), B=2, S_max=32, compile=True)
    t = time.perf_counter()
    out = gen.generate(prompt, 20)
    assert gen.compile_seconds < time.perf_counter() - t  # the compile was timed apart
    assert torch.equal(out.tokens, ref)
    a = gen.generate(prompt, 20, temperature=0.8, seed=1).tokens
    assert torch.equal(a, gen.generate(prompt, 20, temperature=0.8, seed=1).tokens)
