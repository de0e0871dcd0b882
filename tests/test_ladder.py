"""measure.ladder (stored decode ladders), measure.launch (eager vs graph timing, op counts) and
measure.agreement (greedy agreement of two exact decode paths), used by notebook 07."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lecture_lib import get_config  # noqa: E402
from lecture_lib.decode import generate_cached  # noqa: E402
from lecture_lib.measure import agreement, bench, ladder, launch  # noqa: E402


def _row(rung, tok, nbytes=1e9, status="ok"):
    return {"rung": rung, "status": status, "tok_per_s": tok, "ms_per_step": 1e3 / tok, "bytes_per_step": nbytes,
            "gb_per_s": nbytes * tok / 1e9, "pct_bandwidth": 100 * nbytes * tok / 1e12,
            "roofline_tok_per_s": 1e12 / nbytes, "pct_roofline": 100 * tok / 1e3, "note": ""}


def _run(device, rows, params=1.5e9):
    return {"device_name": device, "device_type": "cuda", "dtype": "bf16", "batch": 1, "params": params,
            "model": {k: 1 for k in bench.SHAPE_FIELDS} | {"name": "m"}, "bandwidth_bytes_per_s": 1e12,
            "roofline_tok_per_s": 1e3, "date": "2026-12-01", "rows": rows}


def test_device_class():
    assert ladder.device_class("NVIDIA H200") == "H200"
    assert ladder.device_class("NVIDIA H100 80GB HBM3") == "H100"
    assert ladder.device_class("Tesla T4") is None and ladder.device_class(None) is None


def test_merge_takes_the_fullest_file_and_orders_rows():
    part = _run("NVIDIA H200", [_row("int8", 900, 5e8), _row("compiled", 700)]) | {"path": "a_run1.json"}
    full = _run("NVIDIA H200", [_row(r, t) for r, t in [("naive", 50), ("cached", 60), ("static", 40), ("compiled", 800)]]
                ) | {"path": "b_ladder.json", "bandwidth_bytes_per_s": 2e12}
    hf = _run("NVIDIA H200", [_row("HF eager", 30)]) | {"path": "c_hf.json"}
    (lad,) = ladder.merge([part, hf, full])
    assert lad["bandwidth_bytes_per_s"] == 2e12 and lad["sources"][0] == "b_ladder.json"
    assert [r["rung"] for r in lad["rows"]] == ["naive", "cached", "static", "compiled", "int8", "HF eager"]
    assert ladder.rows_by_rung(lad)["compiled"]["tok_per_s"] == 800  # the full file's, not the partial one's
    assert ladder.is_full(lad) and not ladder.is_full(part)


def test_reference_ladders_fall_back_to_h100(tmp_path):
    (tmp_path / "h200").mkdir()
    h100 = _run("NVIDIA H100 80GB HBM3", [_row(r, 100) for r in ladder.FULL])
    (tmp_path / "decode_h100_m.json").write_text(json.dumps(h100))
    (tmp_path / "h200" / "decode_h200_m.json").write_text(json.dumps(_run("NVIDIA H200", [_row("compiled", 800)])))
    assert ladder.reference_ladders("NVIDIA H200", tmp_path)[0] == "H100"  # H200 has no full ladder
    (tmp_path / "h200" / "decode_h200_m_ladder.json").write_text(
        json.dumps(_run("NVIDIA H200", [_row(r, 100) for r in ladder.FULL])))
    cls, refs = ladder.reference_ladders("NVIDIA H200", tmp_path)
    assert cls == "H200" and len(refs) == 1 and len(refs[0]["sources"]) == 2
    assert ladder.reference_ladders(None, tmp_path)[0] == "H100"


def test_stored_ladders_are_full():
    cls, refs = ladder.reference_ladders(None)
    assert cls == "H100" and len(refs) == 2 and all(ladder.is_full(r) for r in refs)
    assert {r["model"]["name"] for r in refs} == {"llama3.2-1b-like", "llama3-8b"}


def test_int8_gains_split_and_prediction():
    res = _run("NVIDIA H200", [_row("cached", 50), _row("compiled", 500), _row("int8", 700, 5e8)])
    (g,) = ladder.int8_gains([res])
    assert g["gain"] == pytest.approx(1.4) and g["bytes_gain"] == pytest.approx(2.0)
    split = {r: (ms, mem, rest) for r, ms, mem, rest in ladder.time_split(res)}
    assert split["compiled"] == pytest.approx((2.0, 1.0, 1.0))  # 1 GB at 1 TB/s: 1 ms of the 2 ms step
    # memory time halves, the rest stays: 2 / (1 + 0.5)
    assert ladder.int8_prediction(res) == pytest.approx(2 / 1.5)
    assert ladder.int8_prediction(_run("x", [_row("compiled", 5)])) is None


def test_draw_ladder_runs_with_a_skipped_rung():
    res = _run("CPU", [_row("cached", 50), {"rung": "compiled", "status": "skipped", "note": ""}, _row("int8", 70, 5e8)])
    res["device_type"] = "cpu"
    fig, ax = plt.subplots()
    ladder.draw_ladder(ax, res, "t")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[1] == "compiled (Inductor)" and len(labels) == 3
    plt.close(fig)


def test_launch_eager_and_graph_on_cpu():
    layer = torch.nn.Linear(64, 32)
    eager, graph = launch.eager_and_graph_seconds(layer, torch.randn(1, 64), repeats=3, stat="min")
    assert eager > 0 and graph is None
    cfg = get_config("tiny")
    model = bench.build_model(cfg, "cpu", torch.float32)
    eager, graph = launch.step_seconds(model, S=8, repeats=2)
    assert eager > 0 and graph is None
    n = launch.eager_ops_per_step(cfg)
    assert n > 10 * cfg.L  # every layer runs norms, projections, RoPE, attention, MLP
    assert launch.eager_ops_per_step(cfg.replace(L=2 * cfg.L)) > n  # more layers, more operations


def test_agreement_fp32_is_exact_and_a_wrong_reference_is_caught():
    cfg = get_config("tiny")
    model = bench.build_model(cfg, "cpu", torch.float32)
    prompt = torch.randint(0, cfg.V, (2, 5), generator=torch.Generator().manual_seed(1))
    ref = generate_cached(model, prompt, 12).tokens
    out = agreement.teacher_forced_agreement(model, prompt, ref)
    assert out["rate"] == 1.0 and out["n"] == 24 and out["mismatches"] == []
    assert model.layers[0].attn.wqkv is None  # the model itself is left unfused
    wrong = (ref + 1) % cfg.V
    bad = agreement.teacher_forced_agreement(model, prompt, wrong)
    assert bad["rate"] < 0.5 and all(gap > 0 for _, gap in bad["mismatches"])
    assert agreement.first_divergence(ref, ref) is None
    other = ref.clone()
    other[1, 7] += 1
    assert agreement.first_divergence(ref, other) == 7


def test_bench_progress_goes_where_asked(capsys):
    cfg = get_config("tiny")
    bench.run_decode(cfg, new=3, rungs=("cached",), repeats=1, device="cpu", bandwidth=1e10, progress=None)
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    bench.run_decode(cfg, new=3, rungs=("cached",), repeats=1, device="cpu", bandwidth=1e10, progress="stdout")
    out = capsys.readouterr()
    assert out.err == "" and "[cached]" in out.out
    bench.run_decode(cfg, new=3, rungs=("cached",), repeats=1, device="cpu", bandwidth=1e10)
    assert "[cached]" in capsys.readouterr().err  # the default (and the CLI) still logs to stderr
    with pytest.raises(ValueError, match="progress"):
        bench.run_decode(cfg, new=3, rungs=("cached",), device="cpu", bandwidth=1e10, progress="loud")
