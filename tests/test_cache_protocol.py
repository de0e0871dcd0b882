"""One contract, every cache: the same tests run over each implementation of
``lecture_lib.cache_protocol.KVCacheProtocol``."""
import pytest
import torch

from lecture_lib import ModelConfig, Transformer
from lecture_lib.cache import Int8KVCache, KVCache, KVCacheProtocol, StaticKVCache

CFG = ModelConfig(L=2, D=32, N=4, K=2, H=8, F=64, V=50, S_max=32)
B, S = 3, 16
CACHES = {
    "plain": lambda dtype=torch.float32, b=B: KVCache(CFG, b, S, dtype=dtype),
    "static": lambda dtype=torch.float32, b=B: StaticKVCache(CFG, b, S, dtype=dtype),
    "int8": lambda dtype=torch.float32, b=B: Int8KVCache(CFG, b, S, dtype=dtype),
}
# int8 stores each H-vector with one absmax scale: values come back within half a step (scale/2)
TOL = {"plain": 0.0, "static": 0.0, "int8": 1 / 127}


def kv(T, b=B, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(b, CFG.K, T, CFG.H, generator=g).to(dtype)
    return k, -2 * k


@pytest.fixture(params=list(CACHES))
def kind(request):
    return request.param


def close(got, want, kind):
    scale = want.abs().amax(-1, keepdim=True)  # int8: error bound relative to each vector's max
    assert ((got - want).abs() <= TOL[kind] * scale + 1e-6).all()


def test_implements_the_protocol(kind):
    cache = CACHES[kind]()
    assert isinstance(cache, KVCacheProtocol)
    assert (cache.B, cache.S_max, cache.dtype) == (B, S, torch.float32)


def test_int_positions_return_the_filled_prefix(kind):
    cache = CACHES[kind]()
    k0, v0 = kv(5)
    k, v = cache.update(0, 0, k0, v0)
    assert k.shape == v.shape == (B, CFG.K, 5, CFG.H) and k.dtype == torch.float32
    k1, v1 = kv(2, seed=1)
    k, v = cache.update(0, 5, k1, v1)  # appending: slots 5, 6
    assert k.shape == (B, CFG.K, 7, CFG.H)
    close(k, torch.cat([k0, k1], 2), kind)
    close(v, torch.cat([v0, v1], 2), kind)


def test_shared_tensor_positions_return_the_whole_buffer(kind):
    cache = CACHES[kind]()
    k1, v1 = kv(1)
    k, v = cache.update(1, torch.tensor([4]), k1, v1)
    assert k.shape == v.shape == (B, CFG.K, S, CFG.H)
    close(k[:, :, 4:5], k1, kind)
    close(v[:, :, 4:5], v1, kind)


def test_per_sequence_positions_write_each_sequence_at_its_own_slots(kind):
    cache = CACHES[kind]()
    k1, v1 = kv(2)
    pos = torch.tensor([[3, 4], [0, -1], [7, 8]])  # sequence 1 has one token and one padding
    k, _ = cache.update(0, pos, k1, v1)
    assert k.shape == (B, CFG.K, S, CFG.H)
    close(k[0, :, 3:5], k1[0], kind)
    close(k[1, :, 0:1], k1[1, :, 0:1], kind)
    close(k[2, :, 7:9], k1[2], kind)
    assert (k[1, :, 1:] == 0).all()  # padding wrote nothing
    assert (k[0, :, :3] == 0).all() and (k[0, :, 5:] == 0).all()


def test_capacity_is_checked_with_a_clear_error(kind):
    cache = CACHES[kind]()
    with pytest.raises(ValueError, match=f"need 20 positions but the KV cache holds S_max = {S}"):
        cache.check_fits(20)
    with pytest.raises(ValueError, match="S_max = 16"):
        cache.update(0, 14, *kv(3))
    with pytest.raises(ValueError, match="RoPE table"):
        type(cache)(CFG, 1, 64)


def test_another_batch_or_dtype_is_refused(kind):
    cache = CACHES[kind]()
    with pytest.raises(ValueError, match=r"holds B = 3 sequences.*new keys are \(2, 2, 1, 8\)"):
        cache.update(0, 0, *kv(1, b=2))
    with pytest.raises(ValueError, match="stores torch.float32 but the model computes in torch.float64"):
        cache.update(0, 0, *kv(1, dtype=torch.float64))


def test_nbytes_is_what_was_allocated(kind):
    cache = CACHES[kind](dtype=torch.bfloat16)
    n = 2 * CFG.L * B * CFG.K * S * CFG.H  # keys and values
    expected = {"plain": 2 * n, "static": 2 * n, "int8": n + 2 * (n // CFG.H)}[kind]  # int8: + a bf16 scale per H
    assert cache.nbytes == expected


def test_a_model_decodes_the_same_through_every_exact_cache():
    model = Transformer(CFG).eval()
    x = torch.randint(0, CFG.V, (B, 6))
    with torch.no_grad():
        want = model(x)[:, -1]
        for make in (KVCache.for_model, StaticKVCache.for_model):
            cache = make(model, B, S)
            model(x[:, :5], cache, 0)
            got = model(x[:, 5:], cache, 5)[:, -1]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
