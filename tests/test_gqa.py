import pytest
import torch

from lecture_lib import ModelConfig, Transformer
from lecture_lib.cache import KVCache
from lecture_lib.gqa import expand_kv_heads, pool_kv_heads
from lecture_lib.measure.gqa_sweep import decode_sweep


def tiny(**kw):
    return ModelConfig(**{"L": 2, "D": 64, "N": 8, "K": 2, "H": 8, "F": 96, "V": 97, "S_max": 64, **kw})


@pytest.mark.parametrize("K", [1, 2, 4])
def test_expand_kv_heads_computes_the_same_function_with_n_kv_heads(K):
    torch.manual_seed(0)
    gqa = Transformer(tiny(K=K)).eval()
    mha = expand_kv_heads(gqa)
    assert mha.cfg.K == mha.cfg.N == 8
    x = torch.randint(0, 97, (2, 16))
    torch.testing.assert_close(mha(x), gqa(x), atol=1e-5, rtol=1e-5)
    # ...with a G times larger KV cache.
    assert KVCache.for_model(mha, 2, 16).nbytes == KVCache.for_model(gqa, 2, 16).nbytes * (8 // K)


def test_pool_kv_heads_means_each_group_and_inverts_expand():
    torch.manual_seed(0)
    mha = Transformer(tiny(K=8)).eval()
    pooled = pool_kv_heads(mha, 2)
    assert pooled.cfg.K == 2
    wk = mha.layers[0].attn.wk.weight.view(8, 8, 64)  # K H D
    torch.testing.assert_close(pooled.layers[0].attn.wk.weight.view(2, 8, 64), wk.view(2, 4, 8, 64).mean(1))
    torch.testing.assert_close(pooled.layers[1].attn.wq.weight, mha.layers[1].attn.wq.weight)
    # Pooling a model whose heads are already tied within groups changes nothing.
    gqa = Transformer(tiny(K=2)).eval()
    x = torch.randint(0, 97, (2, 12))
    torch.testing.assert_close(pool_kv_heads(expand_kv_heads(gqa), 2)(x), gqa(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="K divides"):
        pool_kv_heads(mha, 3)


def test_decode_sweep_records_bytes_and_times():
    cfg = tiny(S_max=32)
    points = decode_sweep(cfg, [8, 2, 1], B=2, S=48, device="cpu", warmup=1, repeats=2, rounds=2)
    assert [p.K for p in points] == [8, 2, 1]
    for p in points:
        assert not p.oom and p.timing.n == 4 and p.step_time > 0
        # KV cache: B·S·2·L·K·H·4 bytes in fp32, exactly what the cache allocated.
        assert p.kv_cache_bytes == 2 * 48 * 2 * 2 * p.K * 8 * 4
        # One step reads every weight but only B rows of the embedding table, and the whole cache.
        assert p.bytes_per_step == p.kv_cache_bytes + p.weight_bytes - (97 - 2) * 64 * 4
        assert p.peak_bytes is None  # no peak counter on a CPU
    assert points[0].kv_cache_bytes == 8 * points[2].kv_cache_bytes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_decode_sweep_catches_out_of_memory_on_cuda():
    free = torch.cuda.mem_get_info()[0]
    cfg = tiny(S_max=32)
    # A cache bigger than the free memory: recorded as OOM, the next point still runs.
    B = int(free // (48 * 2 * 2 * 8 * 8 * 2)) * 2
    points = decode_sweep(cfg, [8], B=B, S=48, device="cuda", dtype=torch.bfloat16, repeats=1, rounds=1)
    points += decode_sweep(cfg, [1], B=2, S=48, device="cuda", dtype=torch.bfloat16, repeats=1, rounds=1)
    assert points[0].oom and points[0].timing is None
    assert not points[1].oom and points[1].peak_bytes > 0


@pytest.mark.parametrize("K", [8, 2, 1])
def test_grouped_decode_cache_gives_the_plain_cache_logits(K):
    from lecture_lib.cache.grouped import GroupedDecodeKVCache
    torch.manual_seed(0)
    model = Transformer(tiny(K=K)).eval()
    x = torch.randint(0, 97, (2, 12))
    plain, grouped = KVCache.for_model(model, 2, 16), GroupedDecodeKVCache.for_model(model, 2, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x[:, :8], grouped, 0), model(x[:, :8], plain, 0))  # prefill
        for p in range(8, 12):  # decode steps: the grouped path, one token at a time
            torch.testing.assert_close(model(x[:, p:p + 1], grouped, p), model(x[:, p:p + 1], plain, p),
                                       atol=1e-5, rtol=1e-5)
        # a later chunk of several tokens (masked prefill at pos > 0) as well
        torch.testing.assert_close(model(x[:, 8:12], grouped, 8), model(x[:, 8:12], plain, 8), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="int positions"):
        model(x[:, :1], grouped, torch.tensor([3]))


def test_decode_sweep_graphed_on_cpu_runs_eager_and_records_bytes():
    from lecture_lib.measure.gqa_sweep import decode_sweep_graphed, sweep_batch
    cfg = tiny(S_max=32)
    points = decode_sweep_graphed(cfg, [8, 2, 1], B=2, S=48, device="cpu", repeats=2, rounds=2)
    for p in points:
        assert not p.oom and p.timing.n == 4 and p.step_time > 0 and p.eager_timing is None
        assert p.kv_cache_bytes == 2 * 48 * 2 * 2 * p.K * 8 * 4
        assert p.bytes_per_step == p.kv_cache_bytes + p.weight_bytes - (97 - 2) * 64 * 4
    assert sweep_batch(cfg, [8, 1], S=48, device="cpu", max_B=5)[0] == 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_decode_sweep_graphed_on_cuda_follows_the_bytes():
    from lecture_lib.measure.gqa_sweep import decode_sweep_graphed, sweep_batch
    cfg = ModelConfig(L=2, D=256, N=8, K=8, H=64, F=512, V=512, S_max=8192)
    B, _ = sweep_batch(cfg, [8, 1], S=8192, device="cuda", dtype=torch.float16, max_B=8)
    assert B >= 1
    points = decode_sweep_graphed(cfg, [8, 1], B=B, S=8192, device="cuda", dtype=torch.float16, repeats=5, rounds=2)
    mha, mqa = points
    assert mha.eager_timing is not None and mha.peak_bytes > mqa.peak_bytes
    assert mqa.step_time < 0.5 * mha.step_time  # 8x fewer KV bytes, and the cache dominates
