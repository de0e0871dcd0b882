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

    python -m lecture_lib.measure.gemv_bench    # time it against bf16 and Inductor at 8B shapes
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
