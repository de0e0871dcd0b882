import math

import pytest
import torch
from torch import nn

from lecture_lib import ModelConfig, Transformer
from lecture_lib.cache import Int8KVCache, KVCache
from lecture_lib.quant import (
    Int4Linear,
    Int8Linear,
    dequantize,
    dequantize_absmax,
    dequantize_zeropoint,
    error_bound,
    fake_quantize,
    fake_quantize_float8,
    float8_values,
    format_table,
    int8_matmul,
    llm_int8_matmul,
    outlier_channels,
    pack_int4,
    quantize,
    quantize_absmax,
    quantize_model_,
    quantize_zeropoint,
    relative_error,
    unpack_int4,
    weight_bytes,
)

CUDA_SM80 = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
needs_sm80 = pytest.mark.skipif(not CUDA_SM80, reason="needs a CUDA GPU of compute capability 8.0+")


def cfg(**kw):
    # Input dims 128 (D, N*H) and 256 (F) take every tinygemm group size (32..128).
    return ModelConfig(**{"L": 2, "D": 128, "N": 4, "K": 2, "H": 32, "F": 256, "V": 256,
                          "S_max": 64, **kw})


def scaled_weights(out=64, inp=256):
    """Weights whose rows and input columns have very different magnitudes (as trained ones do)."""
    rows = torch.logspace(-2, 0, out)[torch.randperm(out)]
    cols = torch.logspace(-1, 1, inp)[torch.randperm(inp)]
    return torch.randn(out, inp) * rows[:, None] * cols[None, :]


# ---- formats ---------------------------------------------------------------------------------

def test_format_table():
    rows = {r["format"]: r for r in format_table()}
    assert rows["fp8 e4m3fn"]["max"] == 448 and rows["fp8 e4m3fnuz"]["max"] == 240
    assert rows["fp8 e5m2"]["max"] == 57344
    assert (rows["int8"]["min"], rows["int8"]["max"], rows["int8"]["bits"]) == (-128, 127, 8)
    assert (rows["int4"]["min"], rows["int4"]["max"], rows["int4"]["bytes"]) == (-8, 7, 0.5)
    assert rows["bf16"]["eps"] == 2**-7 and rows["bf16"]["mantissa_bits"] == 7
    assert rows["fp16"]["max"] == 65504 and rows["fp16"]["exponent_bits"] == 5
    assert (rows["fp8 e4m3fn"]["exponent_bits"], rows["fp8 e4m3fn"]["mantissa_bits"]) == (4, 3)
    assert rows["fp8 e4m3fn"]["smallest_subnormal"] == 2**-9
    assert rows["fp32"]["bytes"] == 4 and rows["bf16"]["bytes"] == 2


def test_float8_grid():
    v = float8_values(torch.float8_e4m3fn)
    assert v.max() == 448 and v.min() == -448 and (v == 0).sum() == 1
    assert len(v) == 253  # 256 codes - 2 NaNs - (-0)
    assert float8_values(torch.float8_e4m3fnuz).max() == 240
    x = torch.randn(1000)
    assert relative_error(fake_quantize_float8(x), x) < 0.05
    assert fake_quantize_float8(torch.tensor([500.0, -1e6]), scaled=False).tolist() == [448, -448]
    assert fake_quantize_float8(torch.tensor([1e-4]), scaled=False).item() == 0  # below 2**-10


# ---- the lecture's worked example ------------------------------------------------------------

def test_lecture_worked_example():
    q = quantize(5.2342, scale=0.1, zero_point=4)
    assert q.item() == 56
    assert dequantize(q, 0.1, 4).item() == pytest.approx(5.2)
    assert quantize(1e6, 0.1, 4).item() == 127 and quantize(-1e6, 0.1, 4).item() == -128


# ---- absmax / zero-point, granularity, error bound --------------------------------------------

@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("gran", [{}, {"axis": 0}, {"group_size": 32}])
def test_absmax_roundtrip_within_half_a_step(bits, gran):
    w = scaled_weights()
    q, scale = quantize_absmax(w, bits, **gran)
    qmax = 2 ** (bits - 1) - 1
    assert q.dtype == torch.int8 and q.abs().max() <= qmax and q.abs().max() == qmax
    err = (dequantize_absmax(q, scale) - w).abs()
    step = scale.expand_as(w) if scale.dim() < 2 or scale.shape[-1] == 1 else \
        scale.repeat_interleave(32, -1)
    assert (err <= step / 2 * (1 + 1e-5)).all()
    granularity = {0: "tensor", 1: "channel", 2: "group"}[len(gran) and (1 if "axis" in gran else 2)]
    bound = error_bound(w, bits, "absmax", granularity, group_size=32)
    assert torch.equal(bound, step / 2)
    assert (err <= bound * (1 + 1e-5)).all()


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_zeropoint_roundtrip_within_half_a_step(bits, granularity):
    w = scaled_weights() + 0.3
    err = (fake_quantize(w, bits, "zeropoint", granularity, 64) - w).abs()
    assert (err <= error_bound(w, bits, "zeropoint", granularity, 64) * (1 + 1e-5)).all()
    q, scale, zero = quantize_zeropoint(w, bits, axis=0)
    assert q.dtype == torch.uint8 and q.max() <= 2**bits - 1 and zero.max() <= 2**bits - 1
    assert relative_error(dequantize_zeropoint(q, scale, zero), w) < (0.02 if bits == 8 else 0.3)


def test_zero_is_exact_under_zeropoint():
    w = torch.tensor([[-0.37, 0.0, 1.91, 0.52, 0.0, -0.05]])
    assert (fake_quantize(w, 4, "zeropoint", "tensor")[w == 0] == 0).all()


def test_zeropoint_beats_absmax_on_skewed_tensor():
    w = torch.rand(64, 256)  # all positive: absmax wastes the negative half of its codes
    for bits in (8, 4):
        e_abs = relative_error(fake_quantize(w, bits, "absmax", "tensor"), w)
        e_zp = relative_error(fake_quantize(w, bits, "zeropoint", "tensor"), w)
        assert e_zp < 0.6 * e_abs


@pytest.mark.parametrize("scheme", ["absmax", "zeropoint"])
def test_finer_granularity_is_more_accurate(scheme):
    w = scaled_weights()
    err = {g: relative_error(fake_quantize(w, 4, scheme, g, group_size=32), w)
           for g in ("tensor", "channel", "group")}
    assert err["group"] < err["channel"] < err["tensor"]


def test_bad_arguments_are_clear_errors():
    w = torch.randn(8, 176)
    for bits in (1, 9, 4.0, True):
        with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
            quantize_absmax(w, bits)
    with pytest.raises(ValueError, match=r"group_size = 128 does not divide .*176.*\[1, 2, 4, 8, 11, 16"):
        fake_quantize(w, 4, granularity="group", group_size=128)
    with pytest.raises(ValueError, match="granularity must be one of"):
        fake_quantize(w, 4, granularity="row")
    with pytest.raises(ValueError, match="scheme must be one of"):
        fake_quantize(w, 4, scheme="minmax")
    with pytest.raises(ValueError, match="not both"):
        quantize_absmax(w, 8, axis=0, group_size=16)


def test_all_zero_rows_stay_zero():
    w = torch.zeros(4, 32)
    w[0] = torch.randn(32)
    for scheme in ("absmax", "zeropoint"):
        w_hat = fake_quantize(w, 4, scheme, "channel")
        assert torch.isfinite(w_hat).all() and (w_hat[1:] == 0).all()


def test_pack_int4_roundtrip_and_order():
    q = torch.randint(0, 16, (5, 12), dtype=torch.uint8)
    p = pack_int4(q)
    assert p.shape == (5, 6) and p.dtype == torch.uint8
    assert torch.equal(unpack_int4(p), q)
    assert pack_int4(torch.tensor([[0xA, 0x3]])).item() == 0xA3  # element 0 in the high nibble


# ---- weight-only linear layers ---------------------------------------------------------------

def test_int8_linear_close_to_linear():
    # Derivation: each weight errs by at most s_i/2 (s_i = max_j |W_ij| / 127), so
    # |y_i - y_hat_i| <= s_i/2 * ||x||_1 always; with errors spread uniformly on [-s/2, s/2] the
    # relative output error is about s / (sqrt(12) * std(W)) = (max|W|/std(W)) / (127 * sqrt(12)):
    # for Gaussian rows of 512 weights max/std is about 3.3, so about 0.75%.
    lin = nn.Linear(512, 256, bias=True)
    nn.init.normal_(lin.weight, std=0.02)
    q = Int8Linear.from_linear(lin)
    assert q.weight.dtype == torch.int8 and q.scales.shape == (256,)
    x = torch.randn(32, 512)
    y, y_hat = lin(x), q(x)
    s = q.scales[None, :]
    assert ((y_hat - y).abs() <= s / 2 * x.abs().sum(-1, keepdim=True) + 1e-5).all()
    w = lin.weight.detach()
    predicted = (w.abs().amax(1) / w.std(1)).pow(2).mean().sqrt().item() / (127 * math.sqrt(12))
    rel = relative_error(y_hat - lin.bias, y - lin.bias)
    assert rel < 1.3 * predicted and rel < 0.01
    assert torch.equal(q.dequantized_weight(), dequantize_absmax(*quantize_absmax(w, 8, axis=0)))


def test_int4_linear_matches_its_dequantized_weight():
    lin = nn.Linear(256, 64, bias=False)
    q = Int4Linear.from_linear(lin, group_size=32)
    assert q.weight.shape == (64, 128) and q.weight.dtype == torch.uint8
    assert q.scales.shape == q.zeros.shape == (64, 8)
    w_hat = fake_quantize(lin.weight, 4, "zeropoint", "group", 32)
    torch.testing.assert_close(q.dequantized_weight(), w_hat, rtol=0, atol=1e-6)
    x = torch.randn(3, 5, 256)
    torch.testing.assert_close(q(x), x @ w_hat.T, rtol=1e-5, atol=1e-5)
    assert relative_error(q(x), lin(x)) < 0.15
    with pytest.raises(ValueError, match="does not divide in_features"):
        Int4Linear.from_linear(nn.Linear(176, 8), group_size=128)


def test_tinygemm_conventions_on_cpu():
    """The CUDA kernel's scale/zero layout ([in/g out 2], w = (q - 8) * s + z) is shared with the
    CPU op, so the conversion in Int4Linear.tinygemm_ can be checked here (not the nibble order)."""
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        pytest.skip("this torch has no CPU int4 kernel")
    lin = nn.Linear(256, 64, bias=False)
    q = Int4Linear.from_linear(lin, group_size=32, scale_dtype=torch.bfloat16)
    codes = unpack_int4(q.weight).to(torch.int32)
    scale = q.scales.float()
    sz = torch.stack([scale, (8 - q.zeros.float()) * scale], -1).transpose(0, 1).contiguous()
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 2)
    x = torch.randn(4, 256, dtype=torch.bfloat16)
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 32, sz.to(torch.bfloat16))
    assert relative_error(y, q(x.float())) < 0.02


def tiny_model(dtype=torch.float32, device="cpu", **kw):
    return Transformer(cfg(**kw)).to(device=device, dtype=dtype).eval()


def quantized_copy(model, **kw):
    m = Transformer(model.cfg).to(device=model.lm_head.weight.device, dtype=model.lm_head.weight.dtype)
    m.load_state_dict(model.state_dict())
    return quantize_model_(m.eval(), **kw)


def test_quantize_model_keeps_logits_close():
    model = tiny_model()
    x = torch.randint(0, 256, (2, 24))
    ref = model(x)
    m8 = quantized_copy(model, bits=8)
    m4 = quantized_copy(model, bits=4, group_size=32)
    assert isinstance(m8.layers[0].attn.wq, Int8Linear) and isinstance(m8.lm_head, nn.Linear)
    assert isinstance(m4.layers[1].mlp.w_down, Int4Linear)
    # One int8 layer errs by ~0.7% (test_int8_linear_close_to_linear), one int4 layer with groups
    # of 32 by ~8%; two layers of attention and MLP in series compound that to ~1.2% and ~15%.
    e8, e4 = relative_error(m8(x), ref), relative_error(m4(x), ref)
    assert e8 < 0.02 and 5 * e8 < e4 < 0.25
    m8_all = quantized_copy(model, bits=8, skip=())
    assert isinstance(m8_all.lm_head, Int8Linear) and relative_error(m8_all(x), ref) < 0.025


def test_quantize_model_errors_and_skip():
    model = tiny_model(F=176)
    with pytest.raises(ValueError, match=r"w_down \(in = 176\).*gcd is 16"):
        quantize_model_(model, bits=4, group_size=128)
    assert all(isinstance(m, nn.Linear) for m in (model.layers[0].mlp.w_down, model.lm_head))
    with pytest.raises(ValueError, match="bits=8"):
        quantize_model_(model, bits=3)
    quantize_model_(model, bits=8, skip=("lm_head", "w_down"))
    assert isinstance(model.layers[0].mlp.w_down, nn.Linear)
    assert isinstance(model.layers[0].mlp.w_up, Int8Linear)
    if not CUDA_SM80:
        with pytest.raises(ValueError, match="CUDA"):
            quantize_model_(tiny_model(), bits=4, group_size=32, backend="tinygemm")


def test_weight_bytes():
    model = tiny_model(dtype=torch.bfloat16)
    n_linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert weight_bytes(model, linear_only=True) == 2 * n_linear
    assert weight_bytes(model) == 2 * model.num_params()
    b16 = weight_bytes(model, linear_only=True)
    b8 = weight_bytes(quantized_copy(model, bits=8, skip=()), linear_only=True)
    b4 = weight_bytes(quantized_copy(model, bits=4, group_size=128, skip=(), backend="torch"),
                      linear_only=True)
    # int8: 1 byte a weight + a 2-byte scale per row; int4: 0.5 byte + 3 bytes per 128 weights.
    assert 0.5 <= b8 / b16 < 0.52
    assert 0.25 <= b4 / b16 < 0.27
    tied = Transformer(cfg(tie_embeddings=True))
    assert weight_bytes(tied) == 4 * tied.num_params()


# ---- int8 KV cache ---------------------------------------------------------------------------

def run_cached(model, cache, x, static=False):
    pos = (lambda i, T: torch.arange(i, i + T, device=x.device)) if static else (lambda i, T: i)
    out = [model(x[:, :8], cache, pos(0, 8))]
    out += [model(x[:, i : i + 1], cache, pos(i, 1)) for i in range(8, x.shape[1])]
    return torch.cat(out, 1)


@pytest.mark.parametrize("static", [False, True])
def test_int8_kv_cache_logits_close(static):
    model = tiny_model()
    x = torch.randint(0, 256, (2, 20))
    ref = run_cached(model, KVCache.for_model(model, 2, 20), x)
    cache = Int8KVCache.for_model(model, 2, 20)
    assert cache.k.dtype == torch.int8 and cache.k_scale.dtype == torch.float32
    got = run_cached(model, cache, x, static)
    assert relative_error(got, ref) < 0.01
    assert relative_error(got, model(x)) < 0.01


def test_int8_kv_cache_update_contract():
    c = cfg()
    cache = Int8KVCache(c, 2, 16, dtype=torch.float32)
    k, v = torch.randn(2, c.K, 5, c.H), torch.randn(2, c.K, 5, c.H)
    k_out, v_out = cache.update(1, 3, k, v)
    assert k_out.shape == (2, c.K, 8, c.H) and k_out.dtype == torch.float32
    step = k.abs().amax(-1, keepdim=True) / 127
    assert ((k_out[:, :, 3:] - k).abs() <= step / 2 * (1 + 1e-5)).all()
    assert (k_out[:, :, :3] == 0).all()
    with pytest.raises(ValueError, match="KV cache holds S_max = 16"):
        cache.update(0, 14, k, v)


def test_int8_kv_cache_bytes():
    c = cfg()
    full = KVCache(c, 4, 64, dtype=torch.bfloat16)
    q = Int8KVCache(c, 4, 64, dtype=torch.bfloat16)
    n_scales = 2 * c.L * 4 * c.K * 64  # one per (layer, sequence, head, position), for k and v
    assert q.nbytes == full.nbytes // 2 + 2 * n_scales
    assert q.nbytes / full.nbytes == pytest.approx(0.5 + 1 / c.H)


# ---- outliers --------------------------------------------------------------------------------

def test_outliers_hurt_int8_and_llm_int8_fixes_it():
    x = torch.randn(16, 256)
    w = torch.randn(128, 256) * 0.02
    x[:, [7, 100]] *= 60  # two outlier feature dims, as in large models' hidden states
    assert outlier_channels(x).tolist() == [7, 100]
    ref = x @ w.T
    plain = relative_error(int8_matmul(x, w), ref)
    mixed = relative_error(llm_int8_matmul(x, w), ref)
    assert mixed < 0.01 < plain / 2 and mixed < plain / 5
    clean = torch.randn(16, 256)
    assert relative_error(int8_matmul(clean, w), clean @ w.T) < 0.01


# ---- CUDA (run on a GPU; skipped elsewhere) --------------------------------------------------

@needs_sm80
def test_cuda_int8_linear_bf16():
    lin = nn.Linear(1024, 512, bias=False, device="cuda", dtype=torch.bfloat16)
    q = Int8Linear.from_linear(lin)
    assert q.scales.dtype == torch.bfloat16
    x = torch.randn(8, 1024, device="cuda", dtype=torch.bfloat16)
    y = q(x)
    assert y.dtype == torch.bfloat16 and relative_error(y, lin(x)) < 0.02


@needs_sm80
@pytest.mark.parametrize("group_size", [32, 64, 128, 256])
@pytest.mark.parametrize("shape", [(512, 256), (192, 96), (160, 40)])  # inner_k_tiles 8, 4, 2
def test_cuda_int4_tinygemm_matches_portable(group_size, shape):
    inp, out = shape
    if inp % group_size:
        pytest.skip(f"group_size {group_size} does not divide in_features {inp}")
    lin = nn.Linear(inp, out, bias=True, device="cuda", dtype=torch.bfloat16)
    portable = Int4Linear.from_linear(lin, group_size)
    fast = Int4Linear.from_linear(lin, group_size).tinygemm_()
    assert fast.backend == "tinygemm" and fast.weight.dtype == torch.int32
    w_p, w_f = portable.dequantized_weight(), fast.dequantized_weight()
    step = portable.scales.float().repeat_interleave(group_size, -1)
    # Same codes; the kernel's zero (8 - zero) * scale is rounded to bf16 (<= 8 * 2**-9 steps).
    assert ((w_p - w_f).abs() <= 0.05 * step + 1e-6).all()
    x = torch.randn(3, 7, inp, device="cuda", dtype=torch.bfloat16)
    y_p, y_f = portable(x), fast(x)
    assert y_f.shape == (3, 7, out) and y_f.dtype == torch.bfloat16
    assert relative_error(y_f, y_p) < 0.01
    assert relative_error(y_f, lin(x)) < 0.15
    assert weight_bytes(fast) == inp * out // 2 + 4 * out * inp // group_size + 2 * out


@needs_sm80
def test_cuda_quantized_model_and_kv_cache():
    model = tiny_model(torch.bfloat16, "cuda")
    x = torch.randint(0, 256, (2, 20), device="cuda")
    ref = model(x).float()
    m8 = quantized_copy(model, bits=8)
    m4 = quantized_copy(model, bits=4, group_size=32)  # auto: bf16 on sm80+ -> tinygemm
    m4p = quantized_copy(model, bits=4, group_size=32, backend="torch")
    assert m4.layers[0].attn.wq.backend == "tinygemm" and m4p.layers[0].attn.wq.backend == "torch"
    e8, e4 = relative_error(m8(x), ref), relative_error(m4(x), ref)
    assert e8 < 0.03 and e8 < e4 < 0.25
    assert relative_error(m4(x), m4p(x)) < 0.03
    cache = Int8KVCache.for_model(model, 2, 20)
    assert cache.k_scale.dtype == torch.bfloat16 and cache.k.device.type == "cuda"
    got = run_cached(model, cache, x, static=True)
    assert got.dtype == torch.bfloat16
    assert relative_error(got, run_cached(model, KVCache.for_model(model, 2, 20), x)) < 0.03


def test_cpu_kernels_compute_the_same_product_in_bf16_precision():
    """use_cpu_kernels_ switches to PyTorch's packed CPU kernels (bf16 activations): the product
    must equal the portable layer's to bf16 rounding, and a decode step must still pick the same
    tokens as the portable path on a small model."""
    from lecture_lib.quant import Int4Linear, Int8Linear, use_cpu_kernels_
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        pytest.skip("this torch has no CPU int4 kernel")
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 96, bias=False)
    x = torch.randn(3, 5, 128)
    for make in (lambda: Int8Linear.from_linear(lin), lambda: Int4Linear.from_linear(lin, group_size=64)):
        layer = make()
        with torch.no_grad():
            exact = layer(x)
            holder = torch.nn.Sequential(layer)
            switched = use_cpu_kernels_(holder)
            fast = holder[0](x)
        assert sum(switched.values()) == 1
        assert fast.shape == exact.shape and fast.dtype == exact.dtype
        # bf16 keeps 8 bits of mantissa: relative error about 2^-8 on each input and the output
        assert (fast - exact).abs().max() <= 0.02 * exact.abs().max()
    assert Int4Linear.from_linear(lin, group_size=64).cpu_int4_().backend == "cpu"
    with pytest.raises(ValueError, match="group_size"):
        Int4Linear.from_linear(torch.nn.Linear(96, 8, bias=False), group_size=96).cpu_int4_()
