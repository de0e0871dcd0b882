"""int8 weight-only matrix-vector product: a hand-written Triton kernel for decode.

A decode step multiplies a few activation rows (M = B tokens) by every weight matrix, so its time
is the time to read the weights. int8 weights halve those bytes, but only if the kernel reads the
int8 bytes and converts them in registers. ``Int8Linear``'s portable form,
``F.linear(x, W.to(x.dtype)) * scales``, does not: eager, it writes a bf16 copy of W and reads it
again (3 bytes per weight instead of 2). Under ``torch.compile`` Inductor fuses the conversion into
its own matrix-vector kernel, but on an H100 that kernel read only about 1.0-1.4 TB/s of the
~3 TB/s copy bandwidth (int8 decode was 1.17x bf16, not the 2x the bytes allow).

This kernel computes, for each activation row m and output channel n,

    y[m, n] = scales[n] * sum_k x[m, k] * W[n, k]        (W: int8 [N K], one scale per row n)

Each program owns BLOCK_N output channels of one row m. It walks K in BLOCK_K-wide tiles: a
[BLOCK_N BLOCK_K] int8 tile of W (contiguous along K, so loads are wide and coalesced) times the
matching piece of x, accumulated in float32 registers; one reduction over K at the end, the scale
applied once per output. The grid puts the M programs of one weight tile side by side, so for
M > 1 the repeats of a tile come from L2, not from memory. Tile sizes are autotuned per (N, K).

``int8_linear(x, weight, scales)`` is a ``torch.library`` custom op: ``torch.compile`` keeps it as
one opaque call (``fullgraph`` holds) and CUDA graphs capture its launch. It needs a CUDA GPU and
Triton (bundled with CUDA builds of PyTorch); ``available()`` says whether both are there.

    python -m lecture_lib.quant.int8_gemv            # time it against bf16 and Inductor at 8B shapes
"""
from __future__ import annotations

import torch

try:  # CPU-only builds of PyTorch come without Triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

MAX_ROWS = 16  # more activation rows than this: the product is no longer a pure weight read


HAS_TRITON = triton is not None


def available() -> bool:
    """True when the Triton kernel can run: Triton importable and a CUDA GPU present."""
    return HAS_TRITON and torch.cuda.is_available()


def use_kernel(x: torch.Tensor) -> bool:
    """Whether ``Int8Linear`` should call the kernel for input ``x`` ([..., K]): a CUDA tensor,
    Triton present, at most ``MAX_ROWS`` rows. (Plain checks, so torch.compile traces through.)"""
    return x.is_cuda and HAS_TRITON and x.numel() // max(x.shape[-1], 1) <= MAX_ROWS


if triton is not None:

    def _configs():
        # Candidates from a sweep on an H100 (python -m lecture_lib.quant.int8_gemv --sweep).
        return [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
                for bn, bk, w, s in [(4, 1024, 4, 3), (4, 1024, 4, 1), (16, 512, 8, 3),
                                     (4, 2048, 8, 2), (2, 2048, 4, 2), (8, 512, 8, 3),
                                     (8, 512, 4, 3), (16, 512, 8, 4)]]

    @triton.jit
    def _int8_gemv_kernel(x_ptr, w_ptr, s_ptr, y_ptr, M, N, K,
                          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # One 1-D grid of M x cdiv(N, BLOCK_N) programs, the row m varying fastest: the M programs
        # that need the same W tile run side by side, so its repeats come from L2, not memory.
        pid = tl.program_id(0)
        m = pid % M
        offs_n = (pid // M) * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        n_ok = offs_n < N
        w_ptrs = w_ptr + offs_n[:, None].to(tl.int64) * K + offs_k[None, :]
        x_ptrs = x_ptr + m.to(tl.int64) * K + offs_k
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)  # reduced over K once, at the end
        for k0 in range(0, K, BLOCK_K):
            k_ok = offs_k < K - k0
            w = tl.load(w_ptrs, mask=n_ok[:, None] & k_ok[None, :], other=0)
            x = tl.load(x_ptrs, mask=k_ok, other=0.0)
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
            w_ptrs += BLOCK_K
            x_ptrs += BLOCK_K
        scale = tl.load(s_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        y = tl.sum(acc, axis=1) * scale
        tl.store(y_ptr + m.to(tl.int64) * N + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_ok)

    _flush = {}

    def _bench_from_memory(kernel_call, quantiles):
        """Time a config as the decode step runs it: in a CUDA graph (no host launch overhead)
        and with its weights in memory, not in L2 (a write over twice the L2 before each call
        evicts them; the write's own time is measured alone and subtracted)."""
        dev = torch.cuda.current_device()
        if dev not in _flush:
            l2 = torch.cuda.get_device_properties(dev).L2_cache_size or 64 * 2**20
            _flush[dev] = torch.empty(2 * l2, dtype=torch.uint8, device="cuda")
        buf = _flush[dev]

        def flushed_call():
            buf.zero_()
            kernel_call()

        both = triton.testing.do_bench_cudagraph(flushed_call, rep=40, return_mode="median")
        flush = triton.testing.do_bench_cudagraph(buf.zero_, rep=40, return_mode="median")
        t = max(both - flush, 1e-6)
        return [t] * len(quantiles) if quantiles else t

    _tuned_kernel = triton.autotune(configs=_configs(), key=["N", "K"],
                                    do_bench=_bench_from_memory)(_int8_gemv_kernel)

    def _launch(kernel, x2: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor,
                y: torch.Tensor, **meta) -> None:
        M, K = x2.shape
        N = weight.shape[0]
        grid = lambda META: (M * triton.cdiv(N, META["BLOCK_N"]),)  # noqa: E731
        kernel[grid](x2, weight, scales, y, M, N, K, **meta)


@torch.library.custom_op("lecture_lib::int8_linear", mutates_args=(), device_types="cuda")
def int8_linear(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``x @ (weight * scales[:, None]).T`` for int8 ``weight`` [N K], ``scales`` [N], x [..., K];
    the result has x's dtype. CUDA + Triton only (see ``available``)."""
    K = x.shape[-1]
    if weight.dtype != torch.int8 or weight.dim() != 2 or weight.shape[1] != K:
        raise ValueError(f"int8_linear needs an int8 weight [N K] with K = x.shape[-1] = {K}; "
                         f"got {weight.dtype} {tuple(weight.shape)}.")
    x2 = x.reshape(-1, K).contiguous()
    y = torch.empty(x2.shape[0], weight.shape[0], dtype=x.dtype, device=x.device)
    _launch(_tuned_kernel, x2, weight.contiguous(), scales.contiguous(), y)
    return y.reshape(*x.shape[:-1], weight.shape[0])


@int8_linear.register_fake
def _(x, weight, scales):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


# --------------------------------------------------------------------------------------------
# Self-benchmark: GB/s of each way to multiply by an int8 matrix, at a model's decode shapes
# --------------------------------------------------------------------------------------------


def decode_shapes(cfg) -> dict[str, tuple[int, int]]:
    """(N, K) of every distinct weight matrix of one fast decode step (Q/K/V and gate/up fused)."""
    return {"wqkv": ((cfg.N + 2 * cfg.K) * cfg.H, cfg.D), "wo": (cfg.D, cfg.N * cfg.H),
            "w_gate_up": (2 * cfg.F, cfg.D), "w_down": (cfg.D, cfg.F), "lm_head": (cfg.V, cfg.D)}


def _time_in_graph(call, mats, repeats: int = 20) -> float:
    """Seconds per ``call(W)``, from CUDA-graph replays of one call per matrix in ``mats``.

    A graph replays without host launch overhead (as the decode step does), and one call per
    matrix, with the matrices together several times the L2, means each call reads its W from
    memory. Median over ``repeats`` replays."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm up (autotuning, compiling) outside the capture
            for w in mats:
                call(w)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for w in mats:
            call(w)
    graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3 / len(mats))
    return sorted(times)[len(times) // 2]


def _sweep_configs():
    return [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
            for bn in (1, 2, 4, 8, 16) for bk in (512, 1024, 2048, 4096) for w in (4, 8, 16)
            for st in (1, 3) if bn * bk <= 16384 and bn * bk >= 32 * w]


def _main(argv=None) -> None:  # pragma: no cover - needs a CUDA GPU
    import argparse

    from ..config import get_config
    from ..measure.ceilings import measure_copy_bandwidth

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="llama3-8b")
    p.add_argument("--rows", type=int, default=1, help="activation rows M (the batch)")
    p.add_argument("--sweep", action="store_true",
                   help="also time each of many tile configs by itself (prints the best 5 per matrix)")
    p.add_argument("--csv", help="write every timing to this CSV file")
    args = p.parse_args(argv)
    if not available():
        raise SystemExit("python -m lecture_lib.quant.int8_gemv needs a CUDA GPU and Triton.")
    import torch._inductor.config as inductor_config

    inductor_config.coordinate_descent_tuning = True
    dev, dt = torch.device("cuda"), torch.bfloat16
    bw = measure_copy_bandwidth(dev)
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bw / 1e9:.0f} GB/s, M = {args.rows}, "
          f"torch {torch.__version__}, triton {triton.__version__}; timed as CUDA-graph replays")
    inductor = torch.compile(lambda x, w, s: torch.nn.functional.linear(x, w.to(x.dtype)) * s,
                             dynamic=False)
    rows = []
    for name, (N, K) in decode_shapes(get_config(args.preset)).items():
        # Enough copies of W that one pass over them is several times the 50 MB L2.
        copies = max(2, int(4 * 50e6 // (N * K)) + 1)
        ws = [torch.randint(-127, 128, (N, K), dtype=torch.int8, device=dev) for _ in range(copies)]
        wb = [torch.randn(N, K, dtype=dt, device=dev) for _ in range(max(2, copies // 2))]
        s = torch.rand(N, dtype=dt, device=dev) / 100
        x = torch.randn(args.rows, K, dtype=dt, device=dev)
        ref = (x.double() @ (ws[0].double() * s.double()[:, None]).T)
        got = int8_linear(x, ws[0], s)
        err = ((got.double() - ref).norm() / ref.norm()).item()
        assert err < 1e-2, f"{name}: relative error {err:.2e}"
        y = torch.empty(args.rows, N, dtype=dt, device=dev)
        variants = [("bf16 F.linear (cuBLAS)", lambda w: torch.nn.functional.linear(x, w), wb, 2),
                    ("int8 Inductor (compiled)", lambda w: inductor(x, w, s), ws, 1),
                    ("int8 Triton (autotuned)", lambda w: int8_linear(x, w, s), ws, 1)]
        if args.sweep:
            for cfg in _sweep_configs():
                meta = dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
                variants.append((f"  {meta}", lambda w, meta=meta: _launch(
                    _int8_gemv_kernel, x, w, s, y, **meta), ws, 1))
        timed = []
        for vname, call, mats, bytes_per_weight in variants:
            sec = _time_in_graph(call, mats)
            gbs = N * K * bytes_per_weight / sec / 1e9
            timed.append((name, f"{N}x{K}", vname, sec * 1e6, gbs, 100 * gbs * 1e9 / bw))
        rows += timed[:3] + sorted(timed[3:], key=lambda r: r[3])
        print(f"{name}: relative error vs float64 {err:.1e}", flush=True)
        del ws, wb
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as f:
            csv.writer(f).writerows([("matrix", "NxK", "kernel", "us", "GB/s", "% copy")] + rows)
    print(f"\n{'matrix':<12} {'N x K':<12} {'kernel':<64} {'us':>7} {'GB/s':>6} {'% copy':>6}")
    shown = {}
    for r in rows:
        shown[r[0]] = shown.get(r[0], 0) + 1
        if shown[r[0]] <= 8:  # the 3 fixed rows and the 5 fastest configs
            print(f"{r[0]:<12} {r[1]:<12} {r[2]:<64} {r[3]:>7.1f} {r[4]:>6.0f} {r[5]:>6.1f}")


if __name__ == "__main__":  # pragma: no cover
    _main()
