import json

import pytest
import torch

from lecture_lib import analysis, get_config
from lecture_lib.measure.bench import main, parse_shape, run_decode

ROW_FIELDS = {"rung", "status", "new_tokens", "tok_per_s", "ms_per_step", "bytes_per_step", "gb_per_s",
              "pct_bandwidth", "roofline_tok_per_s", "pct_roofline", "compile_s", "ttft_s", "note"}


def test_bench_cli_runs_on_cpu_and_writes_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    main(["decode", "--device", "cpu", "--preset", "tiny", "--new", "8", "--rungs", "naive,cached,static,compiled",
          "--repeats", "1", "--json", str(path)])
    table = capsys.readouterr().out
    assert "tok/s" in table and "static" in table and "SKIPPED" in table  # compiled: not on a CPU
    result = json.loads(path.read_text())
    for key in ("date", "device", "torch", "bandwidth_bytes_per_s", "roofline_tok_per_s", "rows", "model"):
        assert key in result
    rows = {r["rung"]: r for r in result["rows"]}
    assert set(rows) == {"naive", "cached", "static", "compiled"}
    assert rows["compiled"]["status"] == "skipped"
    assert result["greedy_tokens_agree"] == {"cached": True, "static": True}
    cfg = get_config("tiny")
    expected = analysis.decode_bytes_per_step(cfg, 1, 16 + 8 / 2, 4, 4)  # fp32, mean position
    bw = result["bandwidth_bytes_per_s"]
    for name in ("naive", "cached", "static"):
        r = rows[name]
        assert set(r) == ROW_FIELDS and r["status"] == "ok" and r["tok_per_s"] > 0
        assert r["bytes_per_step"] == pytest.approx(expected)
        assert r["gb_per_s"] * 1e9 == pytest.approx(r["bytes_per_step"] * r["tok_per_s"])
        assert r["pct_bandwidth"] == pytest.approx(100 * r["gb_per_s"] * 1e9 / bw)
        assert r["roofline_tok_per_s"] == pytest.approx(bw / expected)
    assert rows["static"]["compile_s"] is not None


def test_bench_batch_int8_rows_and_bytes():
    result = run_decode(get_config("tiny"), batch=2, prompt_len=8, new=6, rungs=("cached", "int8"),
                        repeats=1, device="cpu", bandwidth=1e10)
    rows = {r["rung"]: r for r in result["rows"]}
    assert rows["int8"]["status"] == "ok", rows["int8"]["note"]
    cfg = get_config("tiny")
    fp32 = analysis.decode_bytes_per_step(cfg, 2, 8 + 3, 4, 4)
    assert rows["cached"]["bytes_per_step"] == pytest.approx(fp32)
    # int8: linear weights 1 byte + one fp32 scale per output row, instead of 4 bytes a weight;
    # the bench counts what the quantized model stores, the formula what it should
    assert rows["int8"]["bytes_per_step"] == pytest.approx(analysis.int8_decode_bytes_per_step(cfg, 2, 8 + 3, 4, 4))
    linear, rows_out = analysis.linear_params(cfg), analysis.linear_out_features(cfg)
    assert rows_out == cfg.L * ((cfg.N + 2 * cfg.K) * cfg.H + 2 * cfg.D + 2 * cfg.F) + cfg.V
    assert analysis.int8_decode_bytes_per_step(cfg, 2, 8 + 3, 4, 4) == fp32 - 3 * linear + 4 * rows_out
    assert rows["cached"]["ms_per_step"] == pytest.approx(1e3 * 2 / rows["cached"]["tok_per_s"])


def test_bare_command_compares_naive_and_cached(capsys):
    result = main(["--preset", "tiny", "--new", "4", "--repeats", "1"])
    assert [r["rung"] for r in result["rows"]] == ["naive", "cached"]
    assert "naive" in capsys.readouterr().out


def test_hf_rows_on_cpu():
    pytest.importorskip("transformers")
    result = run_decode(get_config("tiny"), new=6, rungs=("cached",), hf=True, repeats=1, device="cpu",
                        bandwidth=1e10)
    rows = {r["rung"]: r for r in result["rows"]}
    for name in ("HF eager", "HF static"):
        assert rows[name]["status"] == "ok", rows[name]["note"]
        assert rows[name]["tok_per_s"] > 0


def test_parse_shape_and_errors():
    cfg = parse_shape("L=16,D=2048,N=32,K=8,H=64,F=8192,V=128256")
    assert (cfg.L, cfg.D, cfg.N, cfg.K, cfg.H, cfg.F, cfg.V) == (16, 2048, 32, 8, 64, 8192, 128256)
    with pytest.raises(ValueError, match="KEY=INT"):
        parse_shape("L=2,Q=3")
    with pytest.raises(ValueError, match="unknown rungs"):
        run_decode(get_config("tiny"), rungs=("warp",), device="cpu")


def test_a_failing_rung_is_recorded_and_the_others_still_run(monkeypatch):
    import lecture_lib.measure.bench as bench

    def boom(*a):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

    monkeypatch.setattr(bench, "rung_static", boom)
    result = run_decode(get_config("tiny"), new=4, rungs=("static", "cached"), repeats=1, device="cpu",
                        bandwidth=1e10)
    rows = {r["rung"]: r for r in result["rows"]}
    assert rows["static"]["status"] == "oom" and rows["cached"]["status"] == "ok"
