"""Every notebook follows the series' template, and the stored notebooks are what the sources say."""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))
import build  # noqa: E402  (notebooks/build.py)

SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))


def test_there_are_notebooks():
    assert SOURCES


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_stored_notebook_matches_its_source_and_template(src):
    stored_path = src.parents[1] / f"{src.stem}.ipynb"
    assert stored_path.exists(), f"{stored_path.name} missing: run python notebooks/build.py {src.stem[:2]} --execute"
    stored = json.loads(stored_path.read_text())
    fresh = build.build(src)
    assert [c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in stored["cells"]] == \
        [c["source"] for c in fresh.cells], f"{stored_path.name} is out of date with {src.name}: rebuild it"
    title, colab, first = stored["cells"][0], stored["cells"][1], stored["cells"][2]
    title_text = "".join(title["source"])
    assert title_text.startswith("# ") and "Lecture 10" in title_text
    assert build.colab_badge(stored_path.name) in title_text
    assert build.repo_url() in "".join(colab["source"]) and "google.colab" in "".join(colab["source"])
    first_src = "".join(first["source"])
    assert first["cell_type"] == "code" and "setup(" in first_src, "first code cell must call notebook.setup()"
    code = [c for c in stored["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] is not None for c in code), "store notebooks executed"
    assert not any(o.get("output_type") == "error" for c in code for o in c["outputs"])
    printed = "".join("".join(o.get("text", "")) for o in first["outputs"])
    assert printed.startswith("Hardware: "), "the first output names the hardware"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_every_figure_is_stored(src):
    """Each cell that draws (plt.show()) stores a PNG: a run whose kernel had a non-inline
    matplotlib backend (e.g. MPLBACKEND=Agg) executes fine but stores no figures."""
    stored = json.loads((src.parents[1] / f"{src.stem}.ipynb").read_text())
    for i, cell in enumerate(stored["cells"]):
        if cell["cell_type"] == "code" and "plt.show()" in "".join(cell["source"]):
            pngs = [o for o in cell["outputs"] if "image/png" in o.get("data", {})]
            assert pngs, f"{src.stem}: cell {i} calls plt.show() but stored no figure: re-execute it"


def test_readme_names_the_repository_and_every_notebook():
    readme = (ROOT / "README.md").read_text()
    assert build.repo_url() in readme
    for src in SOURCES:
        assert f"notebooks/{src.stem}.ipynb" in readme, f"README's table lacks {src.stem}"
        assert build.colab_badge(f"{src.stem}.ipynb") in readme


def test_markers_stand_alone():
    """nbval silently ignores a marker with text after it on the same line."""
    for src in SOURCES:
        for line in src.read_text().splitlines():
            if re.match(r"#\s*NBVAL_", line):
                assert re.fullmatch(r"# NBVAL_(CHECK_OUTPUT|IGNORE_OUTPUT|SKIP|RAISES_EXCEPTION)", line), \
                    f"{src.name}: marker line {line!r} must stand alone"


def test_keep_outputs_copies_outputs_only_when_the_code_is_unchanged(tmp_path):
    src = SOURCES[0]
    stored_path = src.parents[1] / f"{src.stem}.ipynb"
    stored = build.nbformat.read(stored_path, as_version=4)
    fresh = build.build(src)
    build.keep_outputs(fresh, stored_path)  # the stored notebook is up to date: its outputs carry over
    assert [c.outputs for c in fresh.cells if c.cell_type == "code"] == \
        [c.outputs for c in stored.cells if c.cell_type == "code"]
    edited = tmp_path / stored_path.name
    code = next(c for c in stored.cells if c.cell_type == "code")
    code.source += "\nx = 1"
    build.nbformat.write(stored, edited)
    with pytest.raises(SystemExit, match="code cells changed"):
        build.keep_outputs(build.build(src), edited)


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_no_frozen_progress_bar_is_stored(src):
    """A tqdm widget stored without its state shows "0%| | 0/9" for ever: build.py drops them."""
    stored = json.loads((src.parents[1] / f"{src.stem}.ipynb").read_text())
    bars = [o for c in stored["cells"] for o in c.get("outputs", [])
            if build._WIDGET_VIEW in o.get("data", {})
            and build._TQDM_TEXT.match("".join(o["data"].get("text/plain", "")))]
    assert not bars, f"{src.stem}: {len(bars)} progress bars stored; rebuild with notebooks/build.py"


def test_drop_progress_bars_keeps_other_widgets():
    nb = build.nbformat.v4.new_notebook()
    bar = {"output_type": "display_data", "metadata": {},
           "data": {build._WIDGET_VIEW: {"model_id": "a"}, "text/plain": "sweep:   0%|          | 0/9 [00:00<?, ?it/s]"}}
    slider = {"output_type": "display_data", "metadata": {},
              "data": {build._WIDGET_VIEW: {"model_id": "b"}, "text/plain": "interactive(children=(IntSlider(value=4),))"}}
    cell = build.nbformat.v4.new_code_cell("x")
    cell.outputs = [build.nbformat.from_dict(bar), build.nbformat.from_dict(slider)]
    nb.cells = [cell]
    assert build.drop_progress_bars(nb) == 1
    assert [o["data"]["text/plain"][:11] for o in nb.cells[0].outputs] == ["interactive"]


def test_execute_keep_going_runs_every_cell_and_still_fails():
    """``--keep-going``: one GPU run reports every failing cell, not only the first, and a run
    with a failure is still refused (so it is never stored as the notebook)."""
    nb = build.nbformat.v4.new_notebook()
    nb.cells = [build.nbformat.v4.new_code_cell("assert 1 == 2, 'first failure'"),
                build.nbformat.v4.new_code_cell("print('ran after the failure')"),
                build.nbformat.v4.new_code_cell("raise ValueError('second failure')")]
    with pytest.raises(RuntimeError, match="2 cell"):
        build.execute(nb, timeout=60, keep_going=True)
    assert "ran after the failure" in nb.cells[1].outputs[0]["text"]
    assert [o["ename"] for c in (nb.cells[0], nb.cells[2]) for o in c.outputs] == ["AssertionError", "ValueError"]
    # without keep_going the first failure stops the run
    nb2 = build.nbformat.v4.new_notebook()
    nb2.cells = [build.nbformat.v4.new_code_cell("assert False"), build.nbformat.v4.new_code_cell("print('never')")]
    with pytest.raises(Exception):
        build.execute(nb2, timeout=60)
    assert not nb2.cells[1].outputs


def test_report_lists_errors_stderr_and_widgets():
    nb = build.nbformat.v4.new_notebook()
    out = build.nbformat.v4.new_output
    nb.cells = [build.nbformat.v4.new_code_cell("x"), build.nbformat.v4.new_code_cell("y")]
    nb.cells[0].outputs = [out("stream", name="stderr", text="a warning\n"), out("stream", name="stdout", text="fine")]
    nb.cells[1].outputs = [out("error", ename="ValueError", evalue="bad", traceback=[]),
                           out("display_data", data={build._WIDGET_VIEW: {"model_id": "m"}, "text/plain": "w"})]
    r = build.report(nb)
    assert r["errors"] == ["cell 1: ValueError: bad"]
    assert r["stderr"] == ["cell 0: 'a warning'"]
    assert r["widgets"] == 1
