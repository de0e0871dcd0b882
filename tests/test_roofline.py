import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from lecture_lib import analysis, devices, hardware
from lecture_lib.measure import ceilings, oom, references, roofline


def test_batch_ladder():
    assert roofline.batch_ladder(1, 64) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    assert roofline.batch_ladder(4, 20) == [4, 6, 8, 12, 16, 20]


def test_copies_needed_and_cache():
    cache = roofline.cache_bytes("cpu")
    assert cache >= 64 * 1024
    assert roofline.copies_needed(100 * cache, "cpu") == 1  # already far bigger than the cache
    assert roofline.copies_needed(cache / 4, "cpu") == 8  # 2x the cache in quarters
    assert roofline.copies_needed(1, "cpu", max_copies=16) == 16


def test_matmul_sweep_records_are_sane():
    Bs, D, F = [1, 4, 16], 64, 96
    recs = roofline.matmul_sweep("cpu", torch.float32, Bs=Bs, D=D, F=F, seconds_per_point=0.001,
                                   cache_factor=0)
    assert [r["B"] for r in recs] == Bs
    for r in recs:
        B = r["B"]
        assert r["status"] == "ok" and r["kind"] == "matmul" and r["dtype"] == "fp32"
        assert r["flops"] == 2 * B * D * F == analysis.matmul_flops(B, D, F)
        assert r["bytes"] == 4 * (B * D + D * F + B * F)  # fp32: 4 bytes a number
        assert r["intensity"] == pytest.approx(r["flops"] / r["bytes"])
        assert r["seconds"] > 0 and r["flops_per_s"] == pytest.approx(r["flops"] / r["seconds"])
        assert r["bytes_per_s"] == pytest.approx(r["bytes"] / r["seconds"])
        assert r["weight_copies"] == 1  # cache_factor=0: no copies to defeat the cache
    json.dumps(recs)  # JSON-ready


def test_matmul_sweep_records_oom_and_goes_on(monkeypatch):
    real = torch.matmul

    def fake(x, w, out=None):
        if x.shape[0] >= 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real(x, w, out=out)

    monkeypatch.setattr(torch, "matmul", fake)
    recs = roofline.matmul_sweep("cpu", torch.float32, Bs=[1, 8, 2], D=32, F=32, seconds_per_point=0.001,
                                   cache_factor=0)
    assert [r["status"] for r in recs] == ["ok", "oom", "ok"]
    assert recs[1]["seconds"] is None and recs[1]["flops_per_s"] is None and recs[1]["flops"] > 0
    assert [r["B"] for r in roofline.ok_records(recs)] == [1, 2]


def test_other_errors_are_not_swallowed(monkeypatch):
    monkeypatch.setattr(torch, "matmul", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        roofline.matmul_sweep("cpu", torch.float32, Bs=[1], D=16, F=16)


def test_is_oom():
    assert oom.is_oom(torch.cuda.OutOfMemoryError("x"))
    assert oom.is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ..."))
    assert not oom.is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def _synthetic(P, beta, D=4096, F=4096, size=2, Bs=None, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    recs = []
    for B in Bs or roofline.batch_ladder(1, 8192):
        intensity = analysis.matmul_intensity(B, D, F, size)
        y = min(P, beta * intensity) * math.exp(noise * rng.standard_normal())
        recs.append({"kind": "matmul", "B": B, "D": D, "F": F, "element_size": size, "status": "ok",
                     "intensity": intensity, "flops_per_s": y})
    return recs


def test_ridge_from_sweep_finds_a_known_ridge():
    P, beta = 600e12, 2.5e12  # ridge 240 FLOP/byte
    est = roofline.ridge_from_sweep(_synthetic(P, beta))
    assert est.intensity == pytest.approx(240, rel=1e-9)
    assert est.plateau_flops == pytest.approx(P) and est.bandwidth == pytest.approx(beta)
    # B with that intensity, from the matmul's shape: intensity(B) = 240
    assert analysis.matmul_intensity(est.B, 4096, 4096) == pytest.approx(240, rel=1e-9)
    assert 240 < est.B < 280  # a bit above 240: the W read is not the only traffic
    assert est.knee_B == 256  # first ladder B at >= 80% of the plateau (192 gives ~190/240 < 0.8)
    assert "ridge 240" in str(est)


def test_ridge_from_sweep_with_noise_and_unsorted_input():
    P, beta = 50e9, 10e9  # a CPU-like ridge of 5 FLOP/byte, fp32 numbers
    recs = _synthetic(P, beta, D=2048, F=2048, size=4, Bs=roofline.batch_ladder(1, 512), noise=0.05)
    est = roofline.ridge_from_sweep(list(reversed(recs)) + [{"status": "oom", "B": 4096}])
    assert est.intensity == pytest.approx(5, rel=0.2)
    assert est.plateau_flops == pytest.approx(P, rel=0.1)


def test_ridge_from_sweep_needs_two_points():
    with pytest.raises(ValueError, match="at least 2"):
        roofline.ridge_from_sweep(_synthetic(1e12, 1e10, Bs=[1]))


def test_memory_bound_slope():
    recs = _synthetic(600e12, 2.5e12)
    assert roofline.memory_bound_slope(recs, B_max=64) == pytest.approx(1, abs=0.02)
    assert abs(roofline.memory_bound_slope(recs, B_max=8192, B_min=1024)) < 0.01  # the plateau
    with pytest.raises(ValueError, match="at least 3"):
        roofline.memory_bound_slope(recs, B_max=2)


def test_mlp_attention_measurements_tiny():
    recs = roofline.mlp_attention_measurements("cpu", torch.float32, D=64, F=128, H=16, prefill_tokens=32, S=48,
                                               decode_Bs=[1, 4], seconds_per_point=0.001, cache_factor=0)
    kinds = [(r["kind"], r["phase"], r["B"]) for r in recs]
    assert kinds == [("mlp", "prefill", 1), ("mlp", "decode", 1), ("mlp", "decode", 4),
                     ("attention", "prefill", 1), ("attention", "decode", 1), ("attention", "decode", 4)]
    assert all(r["status"] == "ok" and r["seconds"] > 0 for r in recs)
    mlp_pre, mlp_dec = recs[0], recs[2]
    assert mlp_pre["T"] == 32 and mlp_pre["flops"] == analysis.mlp_flops(1, 32, 64, 128)
    assert mlp_dec["bytes"] == analysis.mlp_bytes(4, 1, 64, 128, 4)
    att_pre, att_dec = recs[3], recs[5]
    assert att_pre["S"] == att_pre["T"] == 32 and att_pre["N"] == 4
    assert att_pre["intensity"] == pytest.approx(0.5 * 32 / 2)  # S/2 at bf16, halved in fp32
    assert att_dec["S"] == 48 and att_dec["intensity"] == pytest.approx(0.5 * 48 / 49)
    assert att_dec["flops"] == analysis.attention_flops(4, 48, 1, 64)


def test_mlp_attention_rejects_bad_heads():
    with pytest.raises(ValueError, match="multiple of the head dim"):
        roofline.mlp_attention_measurements("cpu", torch.float32, D=60, H=16)


def _check_reference(ref):
    assert ref["tiny"] is True and ref["dtype"] == "fp32" and ref["device_type"] == "cpu"
    assert ref["device"].startswith("CPU: ") and ref["torch"] == torch.__version__ and ref["date"]
    assert ref["ceilings"]["bandwidth"] > 0 and ref["ceilings"]["flops"] > 0
    assert ref["matmul"]["D"] == 64 and len(ref["matmul"]["records"]) == 7
    assert all(r["status"] == "ok" for r in ref["matmul"]["records"])
    assert "intensity" in ref["ridge"] and ref["ridge"]["intensity"] > 0
    phases = {(r["kind"], r["phase"]) for r in ref["mlp_attention"]["records"]}
    assert phases == {("mlp", "prefill"), ("mlp", "decode"), ("attention", "prefill"), ("attention", "decode")}


def test_cli_writes_valid_json(tmp_path, capsys):
    out = tmp_path / "ref" / "matmul_test.json"
    assert roofline.main(["--tiny", "--device", "cpu", "--dtype", "fp32", "--out", str(out)]) == 0
    _check_reference(json.loads(out.read_text()))
    printed = capsys.readouterr().out
    assert "ceilings:" in printed and f"wrote {out}" in printed


def test_cli_as_a_module(tmp_path):
    out = tmp_path / "matmul_cpu.json"
    subprocess.run([sys.executable, "-m", "lecture_lib.measure.roofline", "--tiny", "--device", "cpu", "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    _check_reference(json.loads(out.read_text()))


def test_load_references(tmp_path, monkeypatch):
    monkeypatch.setattr(references, "reference_dir", lambda: tmp_path / "missing")
    assert references.load_references() == []
    monkeypatch.setattr(references, "reference_dir", lambda: tmp_path)
    assert references.load_references() == []
    (tmp_path / "matmul_b.json").write_text(json.dumps({"device": "b"}))
    (tmp_path / "matmul_a.json").write_text(json.dumps({"device": "a"}))
    (tmp_path / "other.json").write_text("{}")
    refs = references.load_references()
    assert [r["device"] for r in refs] == ["a", "b"] and refs[0]["path"].endswith("matmul_a.json")


def test_shipped_references_have_the_expected_format():
    """Whatever sits in data/reference/ must be readable by notebook 03."""
    for ref in references.load_references():
        assert {"device", "date", "dtype", "torch", "ceilings", "matmul", "ridge", "mlp_attention"} <= set(ref)
        assert ref["tiny"] is False, f"{ref['path']} was made with --tiny: not a reference measurement"
        assert roofline.ok_records(ref["matmul"]["records"])


def test_device_slug():
    info = hardware.detect("cpu")
    assert references.device_slug(info) == "cpu"
    info.type, info.spec = "cuda", hardware.get_spec("H100 SXM")
    assert references.device_slug(info) == "h100_sxm"


def _blocks(pre_flops, dec_flops, pre_I=1000.0, dec_I=1.0, kind="mlp"):
    ok = {"status": "ok", "kind": kind}
    return [dict(ok, phase="prefill", B=1, intensity=pre_I, flops_per_s=pre_flops),
            dict(ok, phase="decode", B=1, intensity=dec_I, flops_per_s=dec_flops),
            dict(ok, phase="decode", B=8, intensity=8 * dec_I, flops_per_s=8 * dec_flops),
            {"status": "oom", "kind": kind, "phase": "decode", "B": 64, "intensity": 64.0, "flops_per_s": None}]


def test_best_flops():
    recs = _blocks(600e12, 2e12)
    assert roofline.best_flops(recs, "mlp", "decode") == 16e12
    assert roofline.best_flops(recs, "mlp", "decode", B=1) == 2e12
    assert roofline.best_flops(recs, "mlp", "prefill") == 600e12
    with pytest.raises(ValueError, match="B = 64"):
        roofline.best_flops(recs, "mlp", "decode", B=64)  # that point ran out of memory
    with pytest.raises(ValueError, match="attention"):
        roofline.best_flops(recs, "attention", "decode")


def test_prefill_decode_ratio_is_about_the_ridge():
    P, beta = 700e12, 3e12  # ridge 233 FLOP/byte
    # both phases exactly on their roofline: measured == predicted == ridge / decode intensity
    measured, predicted = roofline.prefill_decode_ratio(_blocks(P, beta * 1.0), P, beta)
    assert predicted == pytest.approx(P / beta) and measured == pytest.approx(predicted)
    # decode at half the bandwidth line: twice the predicted ratio
    measured, predicted = roofline.prefill_decode_ratio(_blocks(P, beta / 2, kind="attention"), P, beta, "attention")
    assert measured == pytest.approx(2 * predicted)
    # a prefill below the ridge is memory-bound too: the prediction is the intensity ratio
    _, predicted = roofline.prefill_decode_ratio(_blocks(P, beta, pre_I=50.0), P, beta)
    assert predicted == pytest.approx(50.0)
    with pytest.raises(ValueError, match="B = 1"):
        roofline.prefill_decode_ratio(_blocks(P, beta)[:1], P, beta)
