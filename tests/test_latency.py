"""lecture_lib.measure.latency, opcount, timing.forward_seconds and analysis.attention_linear_crossover
(CPU: the GPU branches run the same calls as a CUDA-graph replay)."""
import numpy as np
import pytest
import torch

from lecture_lib import analysis
from lecture_lib.config import ModelConfig
from lecture_lib.measure import latency, opcount
from lecture_lib.measure.timing import forward_seconds
from lecture_lib.model import Transformer
from lecture_lib.cache import KVCache

cfg = ModelConfig(L=2, D=64, N=4, K=4, H=16, F=128, V=64, S_max=2048)


def _model():
    torch.manual_seed(0)
    return Transformer(cfg).eval()


def test_summed_steps_matches_a_direct_sum():
    # step time = a + b·n measured at a few positions: the interpolated sum is close to the exact one
    positions = np.array([8, 16, 32, 64, 128, 256])
    step = 1e-3 * (1 + positions / 32)
    T = np.array([1, 10, 100, 249])
    got = latency.summed_steps(positions, step, 8, T)
    exact = [sum(1e-3 * (1 + n / 32) for n in range(8, 8 + t)) for t in T]
    np.testing.assert_allclose(got, exact, rtol=0.05)
    assert got[0] == pytest.approx(step[0])  # one step: the first measured step itself


def test_summed_steps_of_a_power_law_has_the_power_plus_one():
    # steps ∝ n² summed from a small start: total ∝ T³ (the naive step in the attention regime)
    positions = np.geomspace(1, 4096, 9)
    total = latency.summed_steps(positions, positions ** 2, 1, [512, 1024, 2048, 4095])
    slope = np.polyfit(np.log([512, 1024, 2048, 4095]), np.log(total), 1)[0]
    assert slope == pytest.approx(3.0, abs=0.05)


def test_summed_steps_refuses_to_extrapolate():
    with pytest.raises(ValueError, match="outside the measured positions"):
        latency.summed_steps([8, 64], [1.0, 2.0], 8, [100])
    with pytest.raises(ValueError, match="increase"):
        latency.summed_steps([64, 8], [1.0, 2.0], 8, [10])


def test_decode_batch_sweep_cpu_times_every_batch():
    model = _model()
    sweep = latency.decode_batch_sweep(model, [1, 64], S=512, repeats=3)
    assert sweep.how == "eager" and sweep.batch_sizes == [1, 64] and not sweep.skipped
    t = sweep.array()
    assert np.all(t > 0) and t[1] > t[0]  # 64 sequences' KV caches take longer to read than one


def test_step_memory_bytes_counts_the_cache():
    model = _model()
    small, big = latency.step_memory_bytes(model, 1, 100), latency.step_memory_bytes(model, 8, 100)
    cache8 = analysis.kv_cache_bytes(cfg, 8, 101, bytes_per_value=4)
    assert big > cache8 and big > 7 * small


def test_forward_seconds_grows_with_the_prefix():
    model = _model()
    short = min(forward_seconds(model, B=1, T=16, repeats=3) for _ in range(2))
    long = min(forward_seconds(model, B=1, T=2048, repeats=3) for _ in range(2))
    assert 0 < short < long


def test_count_ops_sees_the_cache_bookkeeping():
    model = _model()
    x = torch.randint(0, cfg.V, (1, 9))
    with torch.inference_mode():
        cache = KVCache.for_model(model, 1, 16)
        model(x[:, :8], cache, 0)
        cached = opcount.count_ops(model, x[:, 8:], cache, 8)
        naive = opcount.count_ops(model, x)
    # the cached step writes K and V into the cache (copy_) and reads the filled prefix back, per layer
    assert cached["aten.copy_"] >= 2 * cfg.L and naive["aten.copy_"] == 0
    assert sum(cached.values()) > sum(naive.values())
    assert 0 < opcount.kernel_ops(naive) < sum(naive.values())
    assert naive["aten.linear"] == cached["aten.linear"] == 7 * cfg.L + 1  # q k v o gate up down, LM head


def test_attention_linear_crossover():
    c = ModelConfig(L=2, D=64, N=4, K=4, H=16, F=128, V=64)
    S = analysis.attention_linear_crossover(c)
    # at S keys a decoded token's attention FLOPs equal its linear ones
    lin = analysis.decode_flops_per_token(c, 0)
    assert analysis.decode_flops_per_token(c, round(S)) == pytest.approx(2 * lin, rel=0.01)
    assert S == analysis.linear_params(c) / (2 * 2 * 4 * 16)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_graph_path_forward_and_sweep_on_cuda():
    torch.manual_seed(0)
    model = Transformer(cfg.replace(D=256, N=4, K=4, H=64, F=512)).to("cuda", torch.bfloat16).eval()
    short = forward_seconds(model, B=1, T=16, repeats=5, calls=2)
    long = forward_seconds(model, B=8, T=2048, repeats=5, calls=2)
    assert 0 < short < long
    sweep = latency.decode_batch_sweep(model, [1, 256], S=2000, repeats=5)
    assert sweep.how == "CUDA graph" and not sweep.skipped
    t = sweep.array()
    assert t[1] > t[0]  # 256 sequences' caches (2 GB) take longer to read than one
