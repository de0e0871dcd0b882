"""The Triton int8 matrix-vector kernel (lecture_lib.int8_gemv): on a CUDA GPU with Triton it must
compute the same function as the portable Int8Linear form; elsewhere it must stay out of the way."""
import pytest
import torch
from torch import nn

from lecture_lib.quant import int8_gemv
from lecture_lib.quant import Int8Linear

cuda = pytest.mark.skipif(not int8_gemv.available(), reason="needs a CUDA GPU and Triton")


def test_cpu_inputs_take_the_portable_path():
    assert not int8_gemv.use_kernel(torch.zeros(1, 8))
    torch.manual_seed(0)
    lin = nn.Linear(24, 10, bias=True)
    q = Int8Linear.from_linear(lin)
    x = torch.randn(3, 24)
    ref = nn.functional.linear(x, q.dequantized_weight(), q.bias)
    torch.testing.assert_close(q(x), ref, rtol=1e-5, atol=1e-5)


def test_decode_shapes_of_llama3_8b():
    from lecture_lib.config import get_config

    from lecture_lib.measure.gemv_bench import decode_shapes

    shapes = decode_shapes(get_config("llama3-8b"))
    assert shapes["wqkv"] == (6144, 4096) and shapes["w_down"] == (4096, 14336)
    assert shapes["w_gate_up"] == (2 * 14336, 4096)
    assert shapes["lm_head"] == (128256, 4096)


def _reference(x, w, s):
    return x.double() @ (w.double() * s.double()[:, None]).T


@cuda
@pytest.mark.parametrize("M,N,K", [(1, 4096, 4096), (1, 1000, 333), (3, 257, 1024), (16, 96, 64),
                                   (1, 128256, 512), (1, 128256, 2048), (16, 2048, 2048)])
def test_kernel_matches_float64(M, N, K):
    torch.manual_seed(M * N + K)
    x = torch.randn(M, K, dtype=torch.bfloat16, device="cuda")
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8, device="cuda")
    s = torch.rand(N, dtype=torch.bfloat16, device="cuda") / 64 + 1e-3
    y = int8_gemv.int8_linear(x, w, s)
    assert y.shape == (M, N) and y.dtype == torch.bfloat16
    ref = _reference(x, w, s)
    assert torch.isfinite(y).all()
    err = ((y.double() - ref).norm() / ref.norm()).item()
    assert err < 1e-2, err  # bf16 output rounding is about 2e-3


@cuda
@pytest.mark.parametrize("M,N,K", [(2, 1031, 1500), (1, 128256, 2048), (1, 4096, 1024)])
def test_every_output_written_for_each_tile_config(M, N, K):
    """Poison the output, run each tile config by itself (ragged and exact shapes), check all of it."""
    torch.manual_seed(1)
    x = torch.randn(M, K, dtype=torch.bfloat16, device="cuda")
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8, device="cuda")
    s = torch.rand(N, dtype=torch.bfloat16, device="cuda") / 64 + 1e-3
    ref = _reference(x, w, s)
    for cfg in int8_gemv._configs():
        y = torch.full((M, N), float("nan"), dtype=torch.bfloat16, device="cuda")
        int8_gemv._launch(int8_gemv._int8_gemv_kernel, x, w, s, y, **cfg.kwargs,
                          num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        assert torch.isfinite(y).all(), cfg
        assert ((y.double() - ref).norm() / ref.norm()).item() < 1e-2, cfg


@cuda
def test_int8linear_uses_the_kernel_and_agrees_with_the_portable_form():
    torch.manual_seed(2)
    lin = nn.Linear(512, 384, bias=True).cuda().bfloat16()
    q = Int8Linear.from_linear(lin)
    x = torch.randn(1, 1, 512, dtype=torch.bfloat16, device="cuda")
    assert int8_gemv.use_kernel(x)
    fast = q(x)
    q.kernel = "torch"
    portable = q(x)
    torch.testing.assert_close(fast, portable, rtol=2e-2, atol=2e-2)
    big = torch.randn(int8_gemv.MAX_ROWS + 1, 512, dtype=torch.bfloat16, device="cuda")
    assert not int8_gemv.use_kernel(big)  # prefill-sized inputs keep the dequantize + matmul form


@cuda
def test_kernel_compiles_with_fullgraph_and_cuda_graphs():
    torch.manual_seed(3)
    q = Int8Linear.from_linear(nn.Linear(256, 512).cuda().bfloat16())
    x = torch.randn(1, 256, dtype=torch.bfloat16, device="cuda")
    eager = q(x)
    step = torch.compile(q, fullgraph=True, mode="reduce-overhead")
    for _ in range(3):  # warm-up, record, replay
        got = step(x).clone()
    torch.testing.assert_close(got, eager, rtol=1e-2, atol=1e-2)
