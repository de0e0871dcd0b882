"""Per-sequence positions: one forward pass over a ragged batch gives, per sequence, the logits of
running that sequence alone (float64, so that any masking or RoPE mistake shows far above rounding)."""
import pytest
import torch

from lecture_lib import ModelConfig, Transformer
from lecture_lib.cache import KVCache, StaticKVCache

CFG = ModelConfig(L=2, D=32, N=4, K=2, H=8, F=64, V=50, S_max=48)
LENGTHS = [7, 3, 11]  # ragged prompts


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(CFG).double().eval()


def ragged_batch():
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, CFG.V, (n,), generator=g) for n in LENGTHS]
    T = max(LENGTHS)
    tokens = torch.zeros(len(prompts), T, dtype=torch.long)  # right-padded with token 0
    pos = torch.full((len(prompts), T), -1)  # -1: padding
    for b, p in enumerate(prompts):
        tokens[b, :len(p)] = p
        pos[b, :len(p)] = torch.arange(len(p))
    return prompts, tokens, pos


@pytest.mark.parametrize("make_cache", [None, KVCache.for_model, StaticKVCache.for_model],
                         ids=["no cache", "plain cache", "static cache"])
@torch.no_grad()
def test_ragged_prefill_equals_each_sequence_alone(model, make_cache):
    prompts, tokens, pos = ragged_batch()
    cache = make_cache(model, len(prompts), 32) if make_cache else None
    logits = model(tokens, cache, pos)
    for b, p in enumerate(prompts):
        alone = model(p[None])[0]
        assert (logits[b, :len(p)] - alone).abs().max() < 1e-9


@torch.no_grad()
def test_ragged_decode_steps_equal_each_sequence_alone(model):
    """Prefill ragged prompts into one cache, then decode 5 steps with every sequence at its own
    position ([B 1] positions): each step's logits equal the sequence's own cached run."""
    prompts, tokens, pos = ragged_batch()
    B = len(prompts)
    cache = KVCache.for_model(model, B, 32)
    logits = model(tokens, cache, pos)
    solo = []  # each sequence alone, with its own cache
    for p in prompts:
        c = KVCache.for_model(model, 1, 32)
        solo.append((c, model(p[None], c, 0)[0, -1]))
    nxt = torch.stack([logits[b, n - 1] for b, n in enumerate(LENGTHS)]).argmax(-1)
    lengths = torch.tensor(LENGTHS)
    for step in range(5):
        step_logits = model(nxt[:, None], cache, lengths[:, None])[:, 0]  # B V
        for b in range(B):
            c, last = solo[b]
            assert nxt[b] == last.argmax()  # the same greedy token as the solo run
            alone = model(nxt[b].view(1, 1), c, LENGTHS[b] + step)[0, -1]
            assert (step_logits[b] - alone).abs().max() < 1e-9
            solo[b] = (c, alone)
        nxt = step_logits.argmax(-1)
        lengths = lengths + 1


@torch.no_grad()
def test_shared_positions_as_a_tensor_equal_the_int_path(model):
    x = torch.randint(0, CFG.V, (2, 9))
    want = model(x)
    cache = KVCache.for_model(model, 2, 16)
    got = model(x, cache, torch.arange(9)[None].expand(2, 9))
    assert (got - want).abs().max() < 1e-9


def test_bad_positions_are_refused(model):
    x = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"must be \[B T\] = \(2, 3\)"):
        model(x, None, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="need a KV cache"):
        model(x, None, torch.arange(3))
    with pytest.raises(ValueError, match="use pos=0"):
        model(x, None, 2)
