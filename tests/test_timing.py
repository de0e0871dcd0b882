import time

import pytest
import torch

from lecture_lib.measure.timing import (
    Stopwatch,
    Timing,
    capture_cuda_graph,
    format_seconds,
    now,
    peak_memory,
    synchronize,
    time_fn,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# --- Timing statistics ------------------------------------------------------------------------


def test_timing_statistics():
    t = Timing([i / 1000 for i in range(10, 0, -1)])  # 1..10 ms, unsorted
    assert t.n == 10
    assert t.median == pytest.approx(5.5e-3)
    assert t.mean == pytest.approx(5.5e-3)
    assert t.min == pytest.approx(1e-3) and t.max == pytest.approx(10e-3)
    assert t.p10 == pytest.approx(1.9e-3)  # linear interpolation, as numpy.percentile
    assert t.p90 == pytest.approx(9.1e-3)
    assert t.spread == pytest.approx(7.2e-3)
    assert str(t) == "5.5 ms ± 3.6 (median of 10)"


def test_timing_single_value_and_empty():
    t = Timing([0.25])
    assert t.median == t.p10 == t.p90 == 0.25 and t.spread == 0
    assert str(t) == "250 ms ± 0 (median of 1)"
    with pytest.raises(ValueError, match="empty"):
        Timing([]).median


def test_format_seconds():
    assert format_seconds(1.5) == "1.5 s"
    assert format_seconds(0.00123) == "1.23 ms"
    assert format_seconds(4.2e-6) == "4.2 µs"
    assert format_seconds(3e-9) == "3 ns"
    assert format_seconds(0.002, "µs") == "2e+03 µs"


# --- time_fn on the CPU -----------------------------------------------------------------------


def test_time_fn_measures_a_sleep():
    t = time_fn(lambda: time.sleep(0.01), warmup=1, repeats=5)
    assert t.n == 5 and t.method == "perf_counter"
    assert 0.0095 <= t.median < 0.05  # sleep never returns early; a busy machine may overshoot


def test_time_fn_warmup_and_repeats_are_counted():
    calls = []
    t = time_fn(lambda: calls.append(1), warmup=3, repeats=4)
    assert len(calls) == 7 and t.n == 4


def test_time_fn_min_time_and_max_repeats():
    t = time_fn(lambda: time.sleep(0.002), warmup=0, repeats=1, min_time=0.02)
    assert sum(t.times) >= 0.02 and t.n >= 2
    t = time_fn(lambda: None, warmup=0, repeats=1, min_time=10.0, max_repeats=50)
    assert t.n == 50  # the cap wins over min_time


def test_time_fn_passes_args_and_infers_device():
    x = torch.randn(64, 64)
    t = time_fn(torch.matmul, x, x, repeats=3)
    assert t.n == 3 and t.min > 0 and t.method == "perf_counter"


def test_time_fn_rejects_bad_counts():
    with pytest.raises(ValueError):
        time_fn(lambda: None, repeats=0)


def test_now_and_stopwatch():
    assert now("cpu") <= now()
    synchronize("cpu")
    sw = Stopwatch("cpu")
    for _ in range(3):
        time.sleep(0.002)
        sw.mark()
    assert len(sw.marks) == 3 and sw.marks == sorted(sw.marks)
    assert sum(sw.gaps()) == pytest.approx(sw.marks[-1])
    assert all(g >= 0.0019 for g in sw.gaps())


def test_peak_memory_cpu_is_honest_about_what_it_knows():
    with peak_memory("cpu") as mem:
        x = torch.ones(1000)
    assert mem.bytes is None and mem.extra_bytes is None
    assert "CPU" in mem.note
    assert mem.rss_growth_bytes is None or mem.rss_growth_bytes >= 0
    del x


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_graph_without_cuda_raises_clearly():
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        capture_cuda_graph(torch.relu, torch.ones(3))


# --- CUDA -------------------------------------------------------------------------------------


@cuda
def test_time_fn_uses_cuda_events():
    x = torch.randn(2048, 2048, device="cuda")
    t = time_fn(torch.matmul, x, x, repeats=5)
    assert t.method == "cuda events" and t.min > 0
    # The same work timed by hand with synchronize + perf_counter must roughly agree: proves
    # the events bracket the work, not just its launch.
    hand = []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.matmul(x, x)
        torch.cuda.synchronize()
        hand.append(time.perf_counter() - t0)
    assert 0.3 < t.median / sorted(hand)[2] < 2.0


@cuda
def test_cuda_events_include_host_time():
    x = torch.zeros(1, device="cuda")

    def slow_launch():
        time.sleep(0.01)  # the GPU idles while the host is busy: that time counts
        x.add_(1)

    t = time_fn(slow_launch, device="cuda", warmup=1, repeats=3)
    assert t.method == "cuda events" and 0.008 <= t.median < 0.05


@cuda
def test_cuda_graph_replay_equals_eager():
    torch.manual_seed(0)
    w = torch.randn(256, 256, device="cuda")

    def f(x):
        return torch.relu(x @ w) + 1

    x = torch.randn(8, 256, device="cuda")
    with torch.inference_mode():
        graphed = capture_cuda_graph(f, x)
        out1 = graphed()
        torch.testing.assert_close(out1, f(x), rtol=1e-4, atol=1e-4)
        x2 = torch.randn(8, 256, device="cuda")
        out2 = graphed(x2)  # copies x2 into the static input, then replays
        torch.testing.assert_close(out2, f(x2), rtol=1e-4, atol=1e-4)
        assert out1.data_ptr() == out2.data_ptr()  # the output buffer is reused by every replay
        with pytest.raises(ValueError, match="fixed shapes"):
            graphed(torch.randn(4, 256, device="cuda"))


@cuda
def test_cuda_graph_rejects_cpu_inputs():
    with pytest.raises(ValueError, match="CUDA device"):
        capture_cuda_graph(torch.relu, torch.ones(3))


@cuda
def test_peak_memory_cuda():
    n = 64 * 2**20
    with peak_memory("cuda") as mem:
        x = torch.empty(n, dtype=torch.uint8, device="cuda")
        del x
    assert mem.bytes is not None and mem.extra_bytes >= n
    assert mem.end_bytes < mem.bytes


@cuda
def test_graph_seconds_times_a_kernel_without_launch_overhead():
    from lecture_lib.measure.timing import graph_seconds

    x = torch.randn(4096, 4096, device="cuda")
    t = graph_seconds(torch.mul, x, 2.0, calls=10)
    # reads and writes 64 MiB: at most a few TB/s, so well above a microsecond, well below 10 ms
    assert 1e-6 < t < 1e-2
    assert 2 * x.numel() * 4 / t < 10e12  # no faster than any GPU's memory


def test_decode_step_seconds_grows_with_the_cache_read():
    """A decode step that reads a long KV cache takes longer than one that reads a short one
    (CPU, eager): the function times the step it says it times."""
    from lecture_lib.config import ModelConfig
    from lecture_lib.measure.timing import decode_step_seconds
    from lecture_lib.model import Transformer
    torch.manual_seed(0)
    model = Transformer(ModelConfig(L=2, D=64, N=4, K=4, H=16, F=128, V=64, S_max=8192)).eval()
    short = min(decode_step_seconds(model, B=8, S=16, repeats=5) for _ in range(3))
    long = min(decode_step_seconds(model, B=8, S=8000, repeats=5) for _ in range(3))
    assert 0 < short < long
