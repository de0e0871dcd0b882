"""The shipped decode benchmark results (data/reference/decode_*.json) are complete, consistent
with themselves, and the README's H100 table quotes them exactly."""
import json
import re
from pathlib import Path

import pytest

from lecture_lib.measure import bench, references

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "data" / "reference"
FILES = sorted(REF.glob("decode_*.json")) + sorted((REF / "repeats").glob("decode_*.json"))


def test_there_are_reference_runs():
    assert {p.name for p in FILES} >= {"decode_h100_llama3.2-1b-like.json", "decode_h100_llama3-8b.json"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_reference_run_is_complete_and_consistent(path):
    ref = json.loads(path.read_text())
    assert "H100" in ref["device_name"] and ref["device_type"] == "cuda"
    assert (ref["dtype"], ref["batch"], ref["prompt"], ref["new"]) == ("bf16", 1, 16, 256)
    assert ref["model"]["name"] in path.name and ref["rows"]
    bw = ref["bandwidth_bytes_per_s"]
    assert 2.5e12 < bw < 3.35e12, "an H100 80GB HBM3 copies at about 3 TB/s"
    for row in ref["rows"]:
        assert row["status"] == "ok" and row["rung"] in (*bench.RUNGS, "HF eager", "HF static"), row
        # tok/s, bytes per step, GB/s and % of bandwidth must be one measurement, not edited apart
        assert row["gb_per_s"] == pytest.approx(row["tok_per_s"] * row["bytes_per_step"] / 1e9, rel=1e-6)
        assert row["pct_bandwidth"] == pytest.approx(100 * row["gb_per_s"] * 1e9 / bw, rel=1e-6)


README_ROWS = {  # README's H100 table: row label -> rung
    "naive (no cache, eager)": "naive",
    "KV cache, eager": "cached",
    "static cache, fused projections, eager": "static",
    "static cache + `torch.compile` / CUDA graphs": "compiled",
    "int8 weight-only, compiled, Triton GEMV (`int8_gemv`)": "int8",
    "int8 weight-only, compiled, Inductor's own kernel": "int8_inductor",
    "int4 weight-only (groups of 128), compiled": "int4",
    "Hugging Face `generate`, eager": "HF eager",
    "Hugging Face `generate`, static cache (compiled)": "HF static",
}


def test_readme_h100_table_quotes_the_reference_files():
    rows = {}  # the files of one shape merged as notebook 07 merges them
    for ref in references.load_decode_references():
        if "H100" in ref["device_name"]:
            for row in ref["rows"]:
                rows[ref["model"]["name"], row["rung"]] = row
    readme = (ROOT / "README.md").read_text()
    seen = 0
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] not in README_ROWS:
            continue
        rung = README_ROWS[cells[0]]
        for name, cell in zip(("llama3.2-1b-like", "llama3-8b"), cells[1:]):
            tok_s, pct = re.match(r"\**([\d,]+) \((\d+(?:\.\d)?)%", cell).groups()
            row = rows[name, rung]
            assert int(tok_s.replace(",", "")) == round(row["tok_per_s"]), (cells[0], name)
            assert float(pct) == pytest.approx(row["pct_bandwidth"], abs=0.51), (cells[0], name)
        seen += 1
    assert seen == len(README_ROWS), "every rung has its row in the README's H100 table"
