"""Build the notebooks from their sources in notebooks/src (percent format), with the series'
template around them, and optionally execute them.

    python notebooks/build.py                 # rebuild every notebook (outputs are dropped)
    python notebooks/build.py 04 --execute    # rebuild and run notebook 04 in place
    python notebooks/build.py 07 --keep-outputs  # markdown edits only: keep the stored run's outputs

Source format: cells start at lines ``# %%`` (code) or ``# %% [markdown]`` (markdown lines are
comments, ``# `` stripped). The template adds, to every notebook:
  - an "Open in Colab" badge under the title (first markdown cell),
  - a setup cell that installs lecture_lib only on Colab, from the repository URL kept in
    pyproject.toml ([project.urls] Repository),
so the URL lives in one place and every notebook starts the same way.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import tomllib
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def repo_url() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"]


def colab_badge(name: str, branch: str = "main") -> str:
    slug = repo_url().removeprefix("https://github.com/")
    link = f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{name}"
    return f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})"


def colab_setup_source(branch: str = "main") -> str:
    return (
        "# On Colab only: install lecture_lib (a checkout already has it from requirements.txt).\n"
        "import sys\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install -q "lecture_lib @ git+{repo_url()}@{branch}"'
    )


def parse_percent(text: str) -> list[tuple[str, str]]:
    cells, kind, lines = [], None, []
    for line in text.splitlines():
        m = re.fullmatch(r"# %%( \[markdown\])?\s*", line)
        if m:
            if kind is not None:
                cells.append((kind, lines))
            kind, lines = ("markdown" if m.group(1) else "code"), []
        elif kind is not None:
            lines.append(line)
    if kind is not None:
        cells.append((kind, lines))
    out = []
    for kind, lines in cells:
        if kind == "markdown":
            lines = [re.sub(r"^# ?", "", l) for l in lines]
        out.append((kind, "\n".join(lines).strip("\n")))
    return out


def build(src: Path) -> nbformat.NotebookNode:
    name = src.with_suffix(".ipynb").name
    cells = parse_percent(src.read_text())
    if not cells or cells[0][0] != "markdown" or not cells[0][1].startswith("# "):
        raise ValueError(f"{src}: the first cell must be a markdown title ('# %% [markdown]' then '# # Title').")
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    title, *rest = cells
    nb.cells.append(nbformat.v4.new_markdown_cell(title[1] + "\n\n" + colab_badge(name)))
    nb.cells.append(nbformat.v4.new_code_cell(colab_setup_source()))
    for kind, source in rest:
        new = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(new(source))
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs of rebuilt notebooks small
        cell["id"] = f"c{i:03d}"
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 1200, keep_going: bool = False) -> None:
    """Run every cell in a kernel started in notebooks/, then print each cell's wall time.
    ``timeout``: seconds one cell may take. ``keep_going``: run the cells after a failing one too
    (one GPU run then reports every failure, not the first), and raise at the end if any failed."""
    from datetime import datetime

    from nbclient import NotebookClient

    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=keep_going,
                       interrupt_on_timeout=keep_going,
                       resources={"metadata": {"path": str(HERE)}}).execute()
        errors = [(i, out.get("ename"), out.get("evalue")) for i, cell in enumerate(nb.cells)
                  for out in cell.get("outputs", []) if out.get("output_type") == "error"]
        if errors:
            for i, name, value in errors:
                print(f"  ERROR in cell {i}: {name}: {value}", file=sys.stderr)
            raise RuntimeError(f"{len(errors)} cell(s) failed")
    finally:  # also after a failing cell: the times say where it got to
        for i, cell in enumerate(nb.cells):
            ex = cell.metadata.get("execution", {})
            if "iopub.execute_input" in ex and "shell.execute_reply" in ex:
                t0, t1 = (datetime.fromisoformat(ex[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
                print(f"  cell {i:>2}: {(t1 - t0).total_seconds():7.2f} s", file=sys.stderr)
            cell.metadata.pop("execution", None)  # keep stored notebooks free of timestamps
        nb.metadata.pop("widgets", None)  # saved widget state: large, and stale without a kernel
        drop_progress_bars(nb)


# A tqdm.auto bar stored without its widget state shows its first frame for ever ("0%| | 0/9"):
# a frozen bar in every stored notebook. Progress is for the live kernel; the stored run drops it.
_TQDM_TEXT = re.compile(r"^.*\d+%\|.*\|")
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def drop_progress_bars(nb: nbformat.NotebookNode) -> int:
    """Remove tqdm widget outputs (their text/plain is a bar) from every code cell; return how many."""
    dropped = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        keep = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if _WIDGET_VIEW in data and _TQDM_TEXT.match("".join(data.get("text/plain", ""))):
                dropped += 1
            else:
                keep.append(out)
        cell.outputs = keep
    return dropped


def report(nb: nbformat.NotebookNode) -> dict:
    """What a student would see go wrong in an executed notebook: its error outputs, its stderr
    outputs (red boxes in JupyterLab), and how many widget outputs it shows."""
    errors, stderr, widgets = [], [], 0
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"cell {i}: {out.get('ename')}: {out.get('evalue', '')[:200]}")
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                stderr.append(f"cell {i}: {out.get('text', '').strip()[:200]!r}")
            elif _WIDGET_VIEW in out.get("data", {}):
                widgets += 1
    return {"errors": errors, "stderr": stderr, "widgets": widgets}


def keep_outputs(nb, stored_path: Path) -> None:
    """Copy the stored notebook's outputs into the rebuilt one, for edits that touch only markdown.
    Refuses if any code cell changed: those outputs were produced by the old code."""
    stored = nbformat.read(stored_path, as_version=4)
    new_code = [c for c in nb.cells if c.cell_type == "code"]
    old_code = [c for c in stored.cells if c.cell_type == "code"]
    if [c.source for c in new_code] != [c.source for c in old_code]:
        raise SystemExit(f"{stored_path.name}: code cells changed since the stored run; "
                         f"execute it instead (python notebooks/build.py {stored_path.name[:2]} --execute)")
    for new, old in zip(new_code, old_code):
        new.outputs, new.execution_count = old.outputs, old.execution_count
    drop_progress_bars(nb)


def readme_table(sources: list[Path]) -> str:
    """The README's notebook table: number, title, lecture section, Colab badge."""
    rows = ["| # | notebook | follows | Colab |", "|---|---|---|---|"]
    for src in sources:
        title = parse_percent(src.read_text())[0][1]
        name = re.match(r"# (\d\d) · (.+)", title.splitlines()[0])
        follows = re.search(r"\*Follows (.+?)\*", title, re.S)
        rows.append(f"| {name.group(1)} | [{name.group(2)}](notebooks/{src.stem}.ipynb) | "
                    f"{' '.join(follows.group(1).split()) if follows else ''} | {colab_badge(src.stem + '.ipynb')} |")
    return "\n".join(rows)


def update_readme(sources: list[Path]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- notebooks -->", "<!-- /notebooks -->"
    head, rest = text.split(start)
    _, tail = rest.split(end)
    readme.write_text(f"{head}{start}\n{readme_table(sources)}\n{end}{tail}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("only", nargs="*", help="notebook number prefixes, e.g. 04 07 (default: all)")
    p.add_argument("--execute", action="store_true", help="run each notebook and store its outputs")
    p.add_argument("--keep-going", action="store_true",
                   help="with --execute: run every cell even after a failing one (a failed run is still not stored)")
    p.add_argument("--cell-timeout", type=int, default=1200, help="seconds one cell may take (default 1200)")
    p.add_argument("--check", action="store_true",
                   help="run each notebook in this environment (e.g. a Colab-like venv) and report its errors, "
                        "stderr outputs and widgets; writes nothing")
    p.add_argument("--keep-outputs", action="store_true",
                   help="keep the stored outputs (only if no code cell changed): for markdown edits")
    args = p.parse_args(argv)
    sources = sorted((HERE / "src").glob("[0-9][0-9]_*.py"))
    update_readme(sources)  # the table always lists every notebook
    if args.only:
        sources = [s for s in sources if any(s.name.startswith(o) for o in args.only)]
    failures = []
    if args.check:
        for src in sources:
            nb, start = build(src), time.perf_counter()
            try:
                execute(nb, timeout=args.cell_timeout, keep_going=True)
            except Exception:  # counted below: the report lists every failing cell
                pass
            r = report(nb)
            print(f"{src.stem}: {time.perf_counter() - start:.0f} s, {len(r['errors'])} errors, "
                  f"{len(r['stderr'])} stderr outputs, {r['widgets']} widget outputs", flush=True)
            for line in r["errors"] + r["stderr"]:
                print(f"    {line}", flush=True)
            if r["errors"] or r["stderr"]:
                failures.append(src.stem)
        if failures:
            sys.exit(f"problems in: {', '.join(failures)}")
        return
    for src in sources:
        nb = build(src)
        if args.keep_outputs and not args.execute:
            keep_outputs(nb, HERE / f"{src.stem}.ipynb")
        if args.execute:
            print(f"executing {src.stem} ...", file=sys.stderr, flush=True)
            try:
                execute(nb, timeout=args.cell_timeout, keep_going=args.keep_going)
            except Exception:
                failed = HERE / f"{src.stem}.failed.ipynb"
                nbformat.write(nb, failed)
                print(f"FAILED: partial run written to {failed}", file=sys.stderr)
                if args.keep_going:
                    failures.append(src.stem)
                    continue
                raise
        nbformat.write(nb, HERE / f"{src.stem}.ipynb")
        print(f"wrote notebooks/{src.stem}.ipynb", file=sys.stderr)
    if failures:
        sys.exit(f"failed: {', '.join(failures)}")


if __name__ == "__main__":
    main()
