import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from lecture_lib.cache import KVCache
from lecture_lib import ModelConfig, Transformer, get_config
from lecture_lib.model import apply_rope


def tiny(**kw):
    return ModelConfig(**{"L": 2, "D": 64, "N": 8, "K": 2, "H": 8, "F": 96, "V": 97, "S_max": 64, **kw})


def test_presets_load_with_sources():
    cfg = get_config("llama2-13b")
    assert (cfg.L, cfg.D, cfg.N, cfg.K, cfg.H, cfg.F, cfg.V) == (40, 5120, 40, 40, 128, 13824, 32000)
    assert cfg.G == 1 and "lecture" in cfg.source
    assert get_config("llama3-8b").G == 4
    with pytest.raises(KeyError, match="Known presets"):
        get_config("llama9")


def test_n_not_divisible_by_k_is_a_clear_error():
    with pytest.raises(ValueError, match=r"N = 8 query heads is not divisible by K = 3.*\[1, 2, 4, 8\]"):
        tiny(K=3)


@pytest.mark.parametrize("K", [8, 2, 1])  # MHA, GQA, MQA
def test_cache_gives_same_logits_as_full_forward(K):
    model = Transformer(tiny(K=K)).eval()
    x = torch.randint(0, 97, (3, 20))
    full = model(x)
    cache = KVCache.for_model(model, 3, 20)
    parts = [model(x[:, :7], cache, 0)] + [model(x[:, i : i + 1], cache, i) for i in range(7, 20)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_static_positions_give_same_logits():
    """The CUDA-graph-friendly path (whole cache read, tail masked) computes the same function."""
    model = Transformer(tiny()).eval()
    x = torch.randint(0, 97, (2, 12))
    full = model(x)
    cache = KVCache.for_model(model, 2, 32)
    parts = [model(x[:, :5], cache, torch.arange(5))]
    parts += [model(x[:, i : i + 1], cache, torch.tensor([i])) for i in range(5, 12)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def reference_mha(x, wq, wk, wv, wo, N, H, cos, sin):
    """Textbook multi-head attention, one head at a time, causal."""
    B, T, _ = x.shape
    q = apply_rope(rearrange(x @ wq.T, "B T (N H) -> B N T H", N=N), cos, sin)
    k = apply_rope(rearrange(x @ wk.T, "B T (N H) -> B N T H", N=N), cos, sin)
    v = rearrange(x @ wv.T, "B T (N H) -> B N T H", N=N)
    heads = []
    for n in range(N):
        scores = q[:, n] @ k[:, n].transpose(-1, -2) / math.sqrt(H)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        heads.append(torch.softmax(scores, -1) @ v[:, n])
    return torch.cat(heads, -1) @ wo.T


def test_gqa_with_k_equal_n_is_plain_multi_head_attention():
    cfg = tiny(K=8)
    attn = Transformer(cfg).layers[0].attn
    x = torch.randn(2, 10, cfg.D)
    cos, sin = Transformer(cfg).rope_cos[:10], Transformer(cfg).rope_sin[:10]
    ours = attn(x, cos, sin, None, None, 0, 0)
    ref = reference_mha(x, attn.wq.weight, attn.wk.weight, attn.wv.weight, attn.wo.weight, 8, 8, cos, sin)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_gqa_equals_mha_with_kv_heads_repeated():
    """K KV heads serving G query heads each is MHA whose K/V projections repeat each head G times."""
    gqa = Transformer(tiny(K=2)).eval()
    mha = Transformer(tiny(K=8)).eval()
    state = gqa.state_dict()
    for name, w in list(state.items()):
        if name.endswith(("attn.wk.weight", "attn.wv.weight")):
            state[name] = rearrange(w, "(K H) D -> K H D", H=8).repeat_interleave(4, dim=0).reshape(64, 64)
    mha.load_state_dict(state)
    x = torch.randint(0, 97, (2, 9))
    torch.testing.assert_close(mha(x), gqa(x), atol=1e-5, rtol=1e-5)


def test_tied_embeddings_share_one_matrix():
    model = Transformer(tiny(tie_embeddings=True))
    assert model.lm_head.weight is model.tok_emb.weight
    untied = Transformer(tiny())
    assert untied.num_params() - model.num_params() == 97 * 64


def test_too_long_input_is_a_clear_error():
    model = Transformer(tiny(S_max=16))
    with pytest.raises(ValueError, match="exceed the model's S_max = 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = KVCache.for_model(model, 1, 8)
    with pytest.raises(ValueError, match="KV cache holds S_max = 8"):
        model(torch.zeros(1, 9, dtype=torch.long), cache, 0)


def test_causality_future_tokens_do_not_change_past_logits():
    model = Transformer(tiny()).eval()
    x = torch.randint(0, 97, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % 97
    torch.testing.assert_close(model(x)[:, :8], model(y)[:, :8])
    assert not torch.allclose(model(x)[:, 8:], model(y)[:, 8:])
