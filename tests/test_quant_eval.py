import pytest
import torch
from torch import nn

from lecture_lib import ModelConfig, Transformer
from lecture_lib import corpus
from lecture_lib.cache import Int8KVCache
from lecture_lib.checkpoints import list_checkpoints, load_checkpoint, perplexity
from lecture_lib.checkpoints import eval_windows
from lecture_lib.measure.quality import cached_perplexity, perplexity_and_kl
from lecture_lib.quant import (Int4Linear, capture_inputs, group_size_for, quantize_int4_,
                               quantize_int4_per_channel_, quantize_model_, relative_error)

# Input dims D = 64 and F = 86 = 2 * 43 share no large divisor, as the target model's D and F don't.
CFG = ModelConfig(L=2, D=64, N=4, K=2, H=16, F=86, V=256, S_max=64)


def model():
    torch.manual_seed(0)
    m = Transformer(CFG).eval()
    with torch.no_grad():  # larger weights than the 0.02 init, so that logits are not flat
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(4)
    return m


def tokens(n=3 * 32 + 1):
    return torch.randint(0, CFG.V, (n,), generator=torch.Generator().manual_seed(1))


def test_cached_perplexity_equals_plain_with_an_exact_cache():
    m, x = model(), tokens(7 * 32 + 1)
    plain = perplexity(m, x, T=32, B=2, max_windows=None)
    assert cached_perplexity(m, x, T=32, B=2, max_windows=None) == pytest.approx(plain, rel=1e-5)
    for w in (1, 3, 7, 100):  # the same subset of windows as checkpoints.perplexity picks
        assert cached_perplexity(m, x, T=32, B=2, max_windows=w) == pytest.approx(
            perplexity(m, x, T=32, B=2, max_windows=w), rel=1e-5)
    assert cached_perplexity(m, x, T=32, max_windows=3) != pytest.approx(plain, rel=1e-5)


def test_one_prefill_equals_token_by_token_decoding_with_int8_cache():
    m, x = model(), tokens()
    int8 = lambda mod, B, S: Int8KVCache.for_model(mod, B, S)  # noqa: E731
    whole = cached_perplexity(m, x, int8, T=32, B=2, max_windows=None)
    stepwise = cached_perplexity(m, x, int8, T=32, B=2, max_windows=None, chunk=1)
    chunks = cached_perplexity(m, x, int8, T=32, B=2, max_windows=None, chunk=5)  # uneven last chunk
    assert stepwise == pytest.approx(whole, rel=1e-5)
    assert chunks == pytest.approx(whole, rel=1e-5)
    # int8 keys and values change the number a little, not much
    exact = perplexity(m, x, T=32, B=2, max_windows=None)
    assert whole != exact and whole == pytest.approx(exact, rel=0.02)


def test_cached_perplexity_errors():
    with pytest.raises(ValueError, match="T \\+ 1"):
        cached_perplexity(model(), tokens(10), T=32)
    with pytest.raises(ValueError, match="chunk"):
        cached_perplexity(model(), tokens(), T=32, chunk=0)


def test_int4_per_channel_has_one_group_per_row_and_is_worse_than_groups():
    torch.manual_seed(0)
    ref = model()
    per_channel = quantize_int4_per_channel_(model())
    per_group = quantize_model_(model(), bits=4, group_size=2)  # the only even g dividing 64 and 86
    down = per_channel.layers[0].mlp.w_down
    assert isinstance(down, Int4Linear) and down.group_size == CFG.F and down.scales.shape == (CFG.D, 1)
    assert per_channel.layers[0].attn.wq.group_size == CFG.D
    assert isinstance(per_channel.lm_head, nn.Linear)  # skipped by default
    x = torch.randint(0, CFG.V, (2, 16))
    with torch.no_grad():
        y = ref(x)
        err_c, err_g = relative_error(per_channel(x), y), relative_error(per_group(x), y)
    assert 0 < err_g < err_c < 0.5


def test_capture_inputs_returns_layer_inputs_and_removes_hooks():
    m = model()
    x = torch.randint(0, CFG.V, (2, 8))
    got = capture_inputs(m, x, ["layers.0.attn.wq", "layers.0.attn.wk", "layers.1.mlp.w_down"])
    assert got["layers.0.attn.wq"].shape == (16, CFG.D)
    assert torch.equal(got["layers.0.attn.wq"], got["layers.0.attn.wk"])  # both read the norm's output
    assert got["layers.1.mlp.w_down"].shape == (16, CFG.F)
    with torch.no_grad():
        h = m.layers[0].attn_norm(m.tok_emb(x))
    assert torch.allclose(got["layers.0.attn.wq"], h.reshape(-1, CFG.D))
    assert all(not mod._forward_pre_hooks for mod in m.modules())
    with pytest.raises(AttributeError):
        capture_inputs(m, x, ["layers.0.nope"])
    assert all(not mod._forward_pre_hooks for mod in m.modules())


def test_group_size_for():
    assert group_size_for(128, 64) == 64 and group_size_for(344, 64) == 43
    assert group_size_for(256, 128) == 128 and group_size_for(688, 64) == 43 and group_size_for(7, 64) == 7
    assert group_size_for(86, 32) == 2
    with pytest.raises(ValueError):
        group_size_for(64, 0)


def test_quantize_int4_groups_fit_each_layer():
    ref, m = model(), model()
    used = quantize_int4_(m, 32)
    assert used["layers.0.attn.wq"] == 32 and used["layers.0.mlp.w_down"] == 2  # 86 = 2 * 43
    assert m.layers[0].mlp.w_down.scales.shape == (CFG.D, 43)
    assert "lm_head" not in used and isinstance(m.lm_head, nn.Linear)
    used = quantize_int4_(m2 := model(), 64)
    assert used["layers.1.mlp.w_down"] == 43 and used["layers.1.mlp.w_up"] == 64
    x = torch.randint(0, CFG.V, (2, 16))
    with torch.no_grad():
        y = ref(x)
        errs = [relative_error(mod(x), y) for mod in (m2, quantize_int4_per_channel_(model()))]
    assert 0 < errs[0] < errs[1] < 0.5


def test_eval_windows_and_perplexity_and_kl():
    assert eval_windows(tokens(7 * 32 + 1), T=32, max_windows=3) == [0, 2, 4]
    assert eval_windows(tokens(7 * 32 + 1), T=32, max_windows=None) == list(range(7))
    m, x = model(), tokens(7 * 32 + 1)
    ppl, kl = perplexity_and_kl(m, m, x, T=32, B=2, max_windows=3)
    assert ppl == pytest.approx(perplexity(m, x, T=32, B=2, max_windows=3), rel=1e-5)
    assert abs(kl) < 1e-6
    q8 = quantize_model_(model(), bits=8)
    q4 = quantize_int4_per_channel_(model())
    (p8, kl8), (p4, kl4) = (perplexity_and_kl(q, m, x, T=32, B=2, max_windows=3) for q in (q8, q4))
    assert p8 == pytest.approx(perplexity(q8, x, T=32, B=2, max_windows=3), rel=1e-5)
    assert 0 < kl8 < kl4


@pytest.mark.skipif("target" not in list_checkpoints(), reason="no trained target checkpoint in data/")
def test_quantized_target_quality():
    """The issue's claims on the trained model, with the recorded protocol (64 held-out windows):
    int8 per channel within 1% of the original; int4 worse than int8; int4 per group (one group size
    that divides every input dim) better than int4 per channel."""
    import math

    ref = load_checkpoint("target")
    held = corpus.heldout_tokens()
    cfg = ref.cfg
    g = math.gcd(cfg.D, cfg.F, cfg.N * cfg.H)
    p0 = perplexity(ref, held)
    p8, kl8 = perplexity_and_kl(quantize_model_(load_checkpoint("target"), bits=8), ref, held)
    p4c, kl4c = perplexity_and_kl(quantize_int4_per_channel_(load_checkpoint("target")), ref, held)
    p4g, kl4g = perplexity_and_kl(quantize_model_(load_checkpoint("target"), bits=4, group_size=g), ref, held)
    assert abs(p8 / p0 - 1) < 0.01
    assert p4c > p8 and p4g > p8 and kl4c > kl8 and kl4g > kl8
    assert p4g < p4c and kl4g < kl4c
