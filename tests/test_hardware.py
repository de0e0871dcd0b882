import json

import pytest
import torch

from lecture_lib import devices
from lecture_lib import hardware as hw
from lecture_lib.measure import ceilings
from lecture_lib.paths import data_path

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

EXPECTED = ["H100 SXM", "H100 PCIe", "H200", "A100 SXM 80GB", "A100 40GB", "L4", "T4", "B200"]


# --- Specs ------------------------------------------------------------------------------------


def test_specs_load_with_sources():
    specs = hw.load_specs()
    assert set(EXPECTED) <= set(specs)
    assert "_about" in json.loads(data_path("hardware.json").read_text())
    for key, s in specs.items():
        assert s.key == key and s.source and s.name_patterns
        assert s.memory_bandwidth > 1e11 and s.memory_bytes > 1e10
        assert s.flops_for("fp16") > 1e13
        assert s.supports_bf16 == (s.flops["bf16"] is not None)
        assert s.supports_bf16 == (s.compute_capability >= (8, 0))
        assert s.supports_fp8 == (s.flops.get("fp8") is not None)
        assert {devices.dtype_name(k) for k in s.flops} == set(s.flops)  # keys are canonical names


def test_lecture_h100_numbers_and_ridge():
    h100 = hw.get_spec("H100 SXM")
    assert h100.flops_for("bf16") == 989e12
    assert h100.memory_bandwidth == 3.35e12 and h100.memory_bytes == 80e9
    assert h100.ridge() == pytest.approx(295.22, abs=0.01)
    assert round(h100.ridge()) == 295  # the lecture's assert
    assert h100.ridge(torch.bfloat16) == h100.ridge("bfloat16")
    assert h100.ridge("fp8") == pytest.approx(2 * h100.ridge(), rel=0.01)


@pytest.mark.parametrize("key, bw, bf16", [
    ("H100 PCIe", 2.0e12, 756e12), ("H200", 4.8e12, 989e12), ("A100 SXM 80GB", 2.039e12, 312e12),
    ("A100 40GB", 1.555e12, 312e12), ("L4", 300e9, 121e12), ("B200", 8.0e12, 2.25e15),
])
def test_lecture_table_figures(key, bw, bf16):
    s = hw.get_spec(key)
    assert s.memory_bandwidth == bw and s.flops_for("bf16") == bf16


def test_t4_has_no_bf16():
    t4 = hw.get_spec("t4")
    assert not t4.supports_bf16 and t4.compute_capability == (7, 5)
    assert t4.ridge("fp16") == pytest.approx(65e12 / 320e9)
    with pytest.raises(ValueError, match="no bf16"):
        t4.ridge("bf16")


def test_get_spec_is_forgiving_and_errors_list_names():
    assert hw.get_spec("h100-sxm").key == "H100 SXM"
    with pytest.raises(KeyError, match="H100 SXM"):
        hw.get_spec("RTX 4090")


@pytest.mark.parametrize("device_name, key", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB"),
    ("NVIDIA L4", "L4"),
    ("Tesla T4", "T4"),
    ("NVIDIA B200", "B200"),
    ("NVIDIA L40S", None),  # "L4" must not match "L40S"
    ("NVIDIA GH200 480GB", None),  # nor "H200" match "GH200"
    ("NVIDIA GeForce RTX 4090", None),
])
def test_match_spec(device_name, key):
    spec = hw.match_spec(device_name)
    assert (spec.key if spec else None) == key


# --- dtypes -----------------------------------------------------------------------------------


def test_dtype_names():
    assert devices.dtype_name(torch.bfloat16) == "bf16" == devices.dtype_name("bfloat16")
    assert devices.dtype_name(torch.float8_e4m3fn) == "fp8"
    assert devices.as_torch_dtype("fp16") is torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        devices.dtype_name("fp12")


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend there is a CUDA GPU of a given compute capability (CPU-only test of the logic)."""

    def install(capability, name="Fake GPU"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)

    return install


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                               ((8, 9), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_pick_dtype_on_cuda_follows_capability(fake_cuda, capability, dtype):
    fake_cuda(capability)
    assert devices.pick_dtype("cuda") is dtype


def test_check_dtype_bf16_on_t4_says_what_to_do(fake_cuda):
    fake_cuda((7, 5), "Tesla T4")
    with pytest.raises(ValueError, match=r"bf16 needs compute capability >= 8\.0") as err:
        devices.check_dtype("cuda", torch.bfloat16)
    assert "Tesla T4" in str(err.value) and "torch.float16" in str(err.value)
    assert devices.check_dtype("cuda", "fp16") is torch.float16
    assert devices.check_dtype("cuda", torch.float32) is torch.float32


def test_check_dtype_fp8_needs_ada_or_hopper(fake_cuda):
    fake_cuda((8, 0), "NVIDIA A100-SXM4-40GB")
    with pytest.raises(ValueError, match=r"fp8 compute needs compute capability >= 8\.9"):
        devices.check_dtype("cuda", torch.float8_e4m3fn)
    fake_cuda((9, 0), "NVIDIA H100 80GB HBM3")
    assert devices.check_dtype("cuda", "fp8") is torch.float8_e4m3fn
    assert devices.check_dtype("cuda", "bf16") is torch.bfloat16


def test_check_dtype_cpu():
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        assert devices.check_dtype("cpu", dtype) is dtype  # slow 16-bit matmul is allowed
    with pytest.raises(ValueError, match="upcast"):
        devices.check_dtype("cpu", torch.float8_e5m2)
    with pytest.raises(ValueError, match="not a floating-point"):
        devices.check_dtype("cpu", torch.int8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match="is_available"):
        devices.check_dtype("cuda", "fp16")


def test_pick_device_and_dtype_defaults():
    device = devices.pick_device()
    assert device.type in ("cuda", "mps", "cpu")
    assert devices.pick_dtype("cpu") is torch.float32
    assert devices.pick_dtype("mps") is torch.float16  # a choice, needs no Mac to check
    if device.type == "cpu":
        assert devices.pick_dtype() is torch.float32


# --- detection and measurement ----------------------------------------------------------------


def test_detect_cpu():
    info = hw.detect("cpu")
    assert info.type == "cpu" and info.name and info.spec is None
    assert info.num_threads >= 1 and info.dtype is torch.float32
    text = info.describe()
    assert text.startswith("CPU: ") and f"torch {torch.__version__}" in text and text.endswith("fp32")


def test_measure_copy_bandwidth_cpu():
    bw = ceilings.measure_copy_bandwidth("cpu", nbytes=16 * 2**20, seconds=0.1)
    assert 1e8 < bw < 1e13  # 0.1 GB/s .. 10 TB/s: any real CPU


def test_measure_matmul_flops_cpu():
    flops = ceilings.measure_matmul_flops("cpu", torch.float32, n=256, seconds=0.1)
    assert 1e7 < flops < 1e14


def test_measure_ceilings_cpu():
    c = ceilings.measure_ceilings("cpu", "fp32", seconds=0.2, nbytes=8 * 2**20, n=256)
    assert c.bandwidth > 0 and c.flops > 0 and c.ridge == pytest.approx(c.flops / c.bandwidth)
    assert "GB/s" in str(c) and "fp32" in str(c)


@cuda
def test_detect_cuda():
    info = hw.detect("cuda")
    assert info.type == "cuda" and info.compute_capability == torch.cuda.get_device_capability()
    assert info.name == torch.cuda.get_device_name() and info.name in info.describe()
    assert info.dtype is devices.pick_dtype("cuda")
    if info.spec is not None:
        assert info.spec.key in info.describe()


@cuda
def test_cuda_ceilings_below_datasheet():
    """A missing synchronize would give impossible numbers: measured must stay under the peak."""
    info = hw.detect("cuda")
    bw = ceilings.measure_copy_bandwidth("cuda", seconds=0.3)
    flops = ceilings.measure_matmul_flops("cuda", info.dtype, n=4096, seconds=0.3)
    assert bw > 1e10 and flops > 1e12
    if info.spec is not None:
        assert 0.2 * info.spec.memory_bandwidth < bw < 1.05 * info.spec.memory_bandwidth
        assert flops < 1.05 * info.spec.flops_for(info.dtype)


def test_notebook_setup_takes_a_device_and_dtype(capsys):
    from lecture_lib.notebook import setup

    env = setup(device="cpu", dtype="fp32")
    assert (env.device.type, env.dtype) == ("cpu", torch.float32)
    assert "dtype fp32" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not a floating-point dtype"):
        setup(device="cpu", dtype="int8")
