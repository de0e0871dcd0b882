"""Honest timing on every device: synchronize, warm up, repeat, report the median and the spread.

Why each piece exists:
- GPU work is asynchronous: a CUDA/MPS call returns as soon as the kernel is *queued*. Reading a
  host clock without ``synchronize`` times the queueing, not the work.
- The first calls pay one-off costs (CUDA context, cuBLAS heuristics, allocator growth, page
  faults, ``torch.compile``): ``warmup`` calls are run and thrown away.
- One measurement is noise. ``repeats`` calls give a distribution; the median resists outliers
  (a garbage collection, another process), and p10..p90 says how much to trust it.
- On CUDA, ``torch.cuda.Event(enable_timing=True)`` pairs time the work on the GPU's own clock.

    t = time_fn(lambda: x @ w, device="cuda")      # or: time_fn(torch.matmul, x, w)
    print(t)                                       # "1.23 ms ± 0.05 (median of 10)"
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..devices import synchronize

# --------------------------------------------------------------------------------------------
# Devices and clocks
# --------------------------------------------------------------------------------------------


def _as_device(device) -> torch.device | None:
    return None if device is None else torch.device(device)


def now(device=None) -> float:
    """``time.perf_counter()`` after the queued work on ``device`` has finished (seconds)."""
    synchronize(device)
    return time.perf_counter()


class Stopwatch:
    """Synchronized timestamps since a start, e.g. per generated token (TTFT, inter-token gaps).

        sw = Stopwatch(device)            # starts now
        ...; sw.mark()                    # seconds since start, after the queued work finished
        sw.marks, sw.gaps()               # all marks; differences between consecutive marks
    """

    def __init__(self, device=None):
        self.device = _as_device(device)
        self.marks: list[float] = []
        self.start()

    def start(self) -> None:
        self.marks = []
        self.t0 = now(self.device)

    def mark(self) -> float:
        t = now(self.device) - self.t0
        self.marks.append(t)
        return t

    def gaps(self) -> list[float]:
        """Time between consecutive marks (the first gap is from the start)."""
        points = [0.0] + self.marks
        return [b - a for a, b in zip(points, points[1:])]


# --------------------------------------------------------------------------------------------
# Timing results
# --------------------------------------------------------------------------------------------


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    pos = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def format_seconds(seconds: float, unit: str | None = None) -> str:
    """``0.00123 -> "1.23 ms"``; ``unit`` forces one of s, ms, µs, ns."""
    scales = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}
    if unit is None:
        unit = next((u for u, s in scales.items() if abs(seconds) >= s), "ns")
    return f"{seconds / scales[unit]:.3g} {unit}"


@dataclass
class Timing:
    """Repeated measurements of one thing, in seconds, with robust summaries.

    ``spread`` is p90 - p10: the width of the middle 80% of the runs. ``str()`` prints
    ``median ± spread/2``, so "1.23 ms ± 0.05" means the middle runs lay within about 1.18..1.28.
    """

    times: list[float]
    method: str = ""  # how it was measured: "cuda events" or "perf_counter"

    def _sorted(self) -> list[float]:
        if not self.times:
            raise ValueError("Timing has no measurements (times is empty).")
        return sorted(self.times)

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def median(self) -> float:
        return _percentile(self._sorted(), 50)

    @property
    def mean(self) -> float:
        return sum(self._sorted()) / self.n

    @property
    def min(self) -> float:
        return self._sorted()[0]

    @property
    def max(self) -> float:
        return self._sorted()[-1]

    @property
    def p10(self) -> float:
        return _percentile(self._sorted(), 10)

    @property
    def p90(self) -> float:
        return _percentile(self._sorted(), 90)

    @property
    def spread(self) -> float:
        return self.p90 - self.p10

    def __str__(self) -> str:
        median = format_seconds(self.median)
        unit = median.split()[1]
        half = format_seconds(self.spread / 2, unit).split()[0]
        return f"{median} ± {half} (median of {self.n})"


# --------------------------------------------------------------------------------------------
# Timing a function
# --------------------------------------------------------------------------------------------


def _infer_device(device, args) -> torch.device | None:
    if device is not None:
        return torch.device(device)
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    return None


def time_fn(
    fn: Callable,
    *args,
    warmup: int = 2,
    repeats: int = 10,
    device=None,
    min_time: float | None = None,
    max_repeats: int = 1000,
) -> Timing:
    """Time ``fn(*args)``: ``warmup`` untimed calls, then at least ``repeats`` timed calls.

    The device decides the clock:
    - ``device`` given, else the device of the first tensor in ``args``;
    - CUDA: a ``torch.cuda.Event`` pair around each call, read after a synchronize (GPU clock;
      includes any time the GPU waits for the host to launch kernels, i.e. launch overhead);
    - CPU and MPS: ``time.perf_counter`` with ``synchronize`` before each clock read;
    - no device at all (a closure with no tensor args): ``perf_counter`` with ``synchronize()``
      of every accelerator in use, which is always correct. Pass ``device=`` to use CUDA events.

    ``min_time`` (seconds): keep repeating until the timed calls add up to at least this long
    (never more than ``max_repeats`` calls), so fast functions get many samples and slow ones few.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    device = _infer_device(device, args)
    for _ in range(warmup):
        fn(*args)

    use_events = device is not None and device.type == "cuda"
    times: list[float] = []
    while True:
        if use_events:
            with torch.cuda.device(device):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()  # empty queue: start is stamped when we launch
                start.record()
                fn(*args)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)  # elapsed_time is in ms
        else:
            t0 = now(device)
            fn(*args)
            times.append(now(device) - t0)
        if len(times) >= max_repeats:
            break
        if len(times) >= repeats and (min_time is None or sum(times) >= min_time):
            break
    return Timing(times, method="cuda events" if use_events else "perf_counter")


# --------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------


@dataclass
class MemoryReport:
    """What ``peak_memory`` saw. ``bytes`` is None where the device keeps no peak counter."""

    device: torch.device
    bytes: int | None = None  # CUDA: peak bytes allocated by tensors during the block
    start_bytes: int | None = None  # CUDA/MPS: bytes allocated at the start of the block
    end_bytes: int | None = None  # CUDA/MPS: bytes allocated at the end of the block
    rss_growth_bytes: int | None = None  # CPU (Unix): growth of the process's peak RSS
    note: str = ""

    @property
    def extra_bytes(self) -> int | None:
        """Peak minus start: the most the block added on top of what was already allocated."""
        if self.bytes is None or self.start_bytes is None:
            return None
        return self.bytes - self.start_bytes


def _max_rss_bytes() -> int | None:
    try:
        import resource
        import sys
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes


@contextlib.contextmanager
def peak_memory(device):
    """Measure the memory a block of code needs; yields a ``MemoryReport`` filled in at exit.

        with peak_memory("cuda") as mem:
            logits = model(tokens)
        print(mem.bytes, mem.extra_bytes)

    - CUDA: ``bytes`` = ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at
      entry: the high-water mark of memory held by tensors (including tensors that existed
      before the block: see ``extra_bytes``). The caching allocator may reserve more than this
      from the driver (``torch.cuda.memory_reserved``). Resetting the counter is global to the
      device, so do not nest these blocks.
    - MPS: no peak counter exists; ``bytes`` is None, start/end allocated bytes are recorded.
    - CPU: PyTorch keeps no allocation counters; ``bytes`` is None. ``rss_growth_bytes`` is how
      much the *process's lifetime* peak resident memory grew during the block (0 if the block
      stayed below an earlier peak), so it is only an upper-bound hint. To count a tensor's
      bytes exactly, sum ``t.nbytes``.
    """
    device = torch.device(device)
    report = MemoryReport(device=device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        report.start_bytes = torch.cuda.memory_allocated(device)
        report.note = "CUDA: peak bytes allocated by tensors (max_memory_allocated)"
        yield report
        synchronize(device)
        report.bytes = torch.cuda.max_memory_allocated(device)
        report.end_bytes = torch.cuda.memory_allocated(device)
    elif device.type == "mps":
        synchronize(device)
        report.start_bytes = torch.mps.current_allocated_memory()
        report.note = "MPS has no peak-memory counter: only start/end allocated bytes are known"
        yield report
        synchronize(device)
        report.end_bytes = torch.mps.current_allocated_memory()
    else:
        rss0 = _max_rss_bytes()
        report.note = (
            "CPU: PyTorch keeps no allocation counters; rss_growth_bytes is the growth of the "
            "process's lifetime peak RSS (0 if the block stayed below an earlier peak)"
        )
        yield report
        rss1 = _max_rss_bytes()
        if rss0 is not None and rss1 is not None:
            report.rss_growth_bytes = rss1 - rss0


# --------------------------------------------------------------------------------------------
# CUDA graphs
# --------------------------------------------------------------------------------------------


@dataclass
class GraphedFn:
    """A captured CUDA graph: calling it replays the graph and returns the static output.

    ``graphed(*new_args)`` first copies ``new_args`` into the static input tensors (same shapes);
    ``graphed()`` replays on whatever the static inputs hold now. The output tensor is *reused*
    by every replay: ``.clone()`` it if you keep it past the next call.
    """

    graph: "torch.cuda.CUDAGraph"
    static_args: tuple
    static_output: object = field(repr=False)

    def __call__(self, *new_args):
        if new_args:
            if len(new_args) != len(self.static_args):
                raise ValueError(
                    f"the graph was captured with {len(self.static_args)} args, got {len(new_args)}."
                )
            for static, new in zip(self.static_args, new_args):
                if isinstance(static, torch.Tensor):
                    if static.shape != new.shape:
                        raise ValueError(
                            f"a CUDA graph replays fixed shapes: captured {tuple(static.shape)}, "
                            f"got {tuple(new.shape)}. Capture one graph per shape."
                        )
                    static.copy_(new)
        self.graph.replay()
        return self.static_output


def capture_cuda_graph(fn: Callable, *static_args, warmup: int = 3) -> GraphedFn:
    """Record ``fn(*static_args)`` once as a CUDA graph; replays then cost one launch in total.

    Why: in batch-1 decode each kernel is tiny and the CPU's per-kernel launch cost (a few µs,
    hundreds of kernels per token) can exceed the GPU work. A graph replays the whole recorded
    kernel sequence with one launch. The price: fixed shapes, fixed input/output memory (the
    ``static_args`` tensors are the inputs, forever), no host sync or CPU branching on values
    inside ``fn``.

    Warm-up runs on a side stream, as PyTorch requires (cuBLAS/allocator set-up must not be
    captured). Run under ``torch.inference_mode()`` or ``no_grad`` for inference.
    """
    if not torch.cuda.is_available():
        raise RuntimeError(
            "capture_cuda_graph needs a CUDA GPU (torch.cuda.is_available() is False). "
            "CUDA graphs have no CPU/MPS equivalent: call fn directly there."
        )
    tensors = [a for a in static_args if isinstance(a, torch.Tensor)]
    off_gpu = [str(t.device) for t in tensors if t.device.type != "cuda"]
    if off_gpu:
        raise ValueError(
            f"capture_cuda_graph: inputs must live on a CUDA device, got {off_gpu}. "
            "Move them with .to('cuda') before capturing."
        )
    device = tensors[0].device if tensors else torch.device("cuda")
    with torch.cuda.device(device):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn(*static_args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = fn(*static_args)
        torch.cuda.synchronize()
    return GraphedFn(graph, static_args, static_output)


def graph_seconds(fn: Callable, *args, calls: int = 10, repeats: int = 20) -> float:
    """Seconds per ``fn(*args)`` on a CUDA GPU with no launch overhead: ``calls`` calls captured in
    one CUDA graph (as the compiled decode step runs them), the graph replayed ``repeats`` times
    (CUDA events), the median replay divided by ``calls``. For kernel timings that should compare
    with the decode step's, not with eager launches."""
    graphed = capture_cuda_graph(lambda *a: [fn(*a) for _ in range(calls)][-1], *args)
    return time_fn(graphed, warmup=3, repeats=repeats, device="cuda").median / calls


def decode_step_seconds(model, B: int = 1, S: int = 64, repeats: int = 20, T: int = 1,
                        calls: int = 10) -> float:
    """Seconds of one KV-cached forward of T new tokens per sequence (T = 1: a decode step; T > 1:
    e.g. speculative sampling's verification of T - 1 drafted tokens) at batch B with S tokens
    already in the cache: the static cache and a [T] position tensor, as the compiled path runs
    it. On a CUDA GPU the forward is captured in a CUDA graph (``graph_seconds``), so kernel-launch
    overhead is gone and what is left is its memory traffic and compute; elsewhere it runs eager
    (median of ``repeats``). The cache holds zeros: the time does not depend on the values read.
    ``calls``: forwards per captured graph (GPU only); fewer for long forwards, whose graph launch
    is negligible anyway, so that the measurement stays short."""
    from ..cache.static import StaticKVCache
    device = model.norm.weight.device
    cache = StaticKVCache.for_model(model, B, S + T)
    x = torch.zeros(B, T, dtype=torch.long, device=device)
    pos = torch.arange(S, S + T, device=device)
    with torch.inference_mode():
        step = lambda tokens: model(tokens, cache, pos)  # noqa: E731
        if device.type == "cuda":
            return graph_seconds(step, x, calls=calls, repeats=repeats)
        return time_fn(step, x, warmup=2, repeats=repeats, device=device).median


def forward_seconds(model, B: int = 1, T: int = 64, repeats: int = 20, calls: int = 10) -> float:
    """Seconds of one forward of ``model`` over tokens [B, T] with no KV cache (pos 0, causal
    attention among the T tokens): a prefill's forward, or the step of naive decoding that
    recomputes a prefix of T tokens. On a CUDA GPU the forward is captured in a CUDA graph
    (``graph_seconds``, ``calls`` forwards a graph) so that kernel launches do not count; elsewhere
    it runs eager (median of ``repeats``). Token ids are zeros: the time does not depend on them."""
    device = model.norm.weight.device
    x = torch.zeros(B, T, dtype=torch.long, device=device)
    with torch.inference_mode():
        if device.type == "cuda":
            return graph_seconds(model, x, calls=calls, repeats=repeats)
        return time_fn(model, x, warmup=2, repeats=repeats, device=device).median

