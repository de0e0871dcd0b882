"""Stored decode ladders (notebook 07): load the benchmark's JSON runs, pick the ones of a device
class, split each rung's step into memory time and the rest, compare int8 with compiled bf16, and
draw a ladder as horizontal bars against its roofline.

A *ladder* is one ``python -m lecture_lib.bench decode ... --json`` result (``bench.run_decode``):
the rungs naive, cached, static, compiled, int8, ... of one model shape on one device, with the
copy bandwidth measured in the same process. Several files of one shape, dtype, batch and device
(e.g. Hugging Face's rows, run apart) merge into one ladder: the file with the most of our rungs
gives the bandwidth and roofline, the others add the rungs it lacks.

Stored runs live in ``data/reference``: ``decode_h100_*.json`` (H100, full ladders with Hugging
Face's rows) and ``h200/decode_h200_*.json`` (H200). ``repeats/`` and ``cpu_*`` files are left out
of the ladders (``int8_gains`` reads every GPU run, repeats included).
"""
from __future__ import annotations

import json
from pathlib import Path

from .bench import RUNGS
from .references import SHAPE_FIELDS, reference_dir

HF_RUNGS = ("HF eager", "HF static")
ORDER = (*RUNGS, *HF_RUNGS)
# The rungs a ladder must have to count as complete (the road from naive to compiled).
FULL = ("naive", "cached", "static", "compiled")
# Where each device class keeps its ladders, relative to data/reference.
CLASS_PATTERNS = {"H100": "decode_h100_*.json", "H200": "h200/decode_h200_*.json"}


def device_class(device_name: str | None) -> str | None:
    """"H200" for "NVIDIA H200", "H100" for "NVIDIA H100 80GB HBM3", ...; None for other devices."""
    name = (device_name or "").upper()
    return next((c for c in CLASS_PATTERNS if c in name), None)


def _load(pattern: str, folder: Path | None = None) -> list[dict]:
    folder = Path(folder) if folder is not None else reference_dir()
    out = []
    for path in sorted(folder.glob(pattern)):
        ref = json.loads(path.read_text())
        ref["path"] = str(path)
        out.append(ref)
    return out


def _ours(ref: dict) -> int:
    return sum(r["rung"] in RUNGS for r in ref["rows"])


def merge(files: list[dict]) -> list[dict]:
    """Merge runs of one (shape, dtype, batch, device) into one ladder each; rows in ladder order
    (naive ... int4, then Hugging Face's); sorted by model size. ``sources``: the merged paths."""
    merged: dict = {}
    for ref in sorted(files, key=lambda r: (-_ours(r), r.get("path", ""))):  # the fullest file first
        key = (tuple(ref["model"][k] for k in SHAPE_FIELDS), ref["dtype"], ref["batch"], ref["device_name"])
        if key not in merged:
            merged[key] = dict(ref, rows=list(ref["rows"]), sources=[ref.get("path", "")])
            continue
        base = merged[key]
        have = {r["rung"] for r in base["rows"]}
        base["rows"] += [r for r in ref["rows"] if r["rung"] not in have]
        base["sources"].append(ref.get("path", ""))
    for ladder in merged.values():
        ladder["rows"].sort(key=lambda r: ORDER.index(r["rung"]) if r["rung"] in ORDER else len(ORDER))
    return sorted(merged.values(), key=lambda r: r["params"])


def is_full(ladder: dict) -> bool:
    """Does the ladder have every rung from naive to compiled, measured (status ok)?"""
    ok = {r["rung"] for r in ladder["rows"] if r["status"] == "ok"}
    return all(r in ok for r in FULL)


def load_ladders(device_class_name: str, folder: Path | None = None) -> list[dict]:
    """The stored ladders of one device class ("H100", "H200"), merged by shape."""
    return merge(_load(CLASS_PATTERNS[device_class_name], folder))


def reference_ladders(device_name: str | None = None, folder: Path | None = None) -> tuple[str, list[dict]]:
    """(class, ladders) to show beside a run on ``device_name``: the full ladders stored for its
    device class if there are any, else the H100's (the complete reference, with Hugging Face's rows)."""
    own = device_class(device_name)
    if own is not None:
        full = [lad for lad in load_ladders(own, folder) if is_full(lad)]
        if full:
            return own, full
    return "H100", [lad for lad in load_ladders("H100", folder) if is_full(lad)]


def all_gpu_runs(folder: Path | None = None) -> list[dict]:
    """Every stored GPU decode run, one file each (not merged): the H100 files, their repeats, the H200's."""
    runs = []
    for pattern in (*CLASS_PATTERNS.values(), "repeats/decode_*.json"):
        runs += [r for r in _load(pattern, folder) if r.get("device_type") == "cuda"]
    return runs


def rows_by_rung(res: dict) -> dict[str, dict]:
    """The measured (status ok) rows of a ladder, by rung name."""
    return {r["rung"]: r for r in res["rows"] if r["status"] == "ok"}


def int8_gains(runs: list[dict]) -> list[dict]:
    """For each run with both a compiled and an int8 rung: int8 tok/s over compiled bf16 tok/s, and
    what the bytes alone would give (bf16 bytes / int8 bytes)."""
    out = []
    for res in runs:
        by = rows_by_rung(res)
        if "compiled" in by and "int8" in by:
            c16, c8 = by["compiled"], by["int8"]
            out.append({"file": Path(res.get("path", "")).name, "device": res["device_name"],
                        "model": res["model"]["name"], "params": res["params"],
                        "gain": c8["tok_per_s"] / c16["tok_per_s"],
                        "bytes_gain": c16["bytes_per_step"] / c8["bytes_per_step"]})
    return out


def time_split(res: dict) -> list[tuple[str, float, float, float]]:
    """(rung, ms per step, memory time in ms, the rest in ms) of each measured rung: the memory time
    is the bytes a step must read over the copy bandwidth measured in the same run."""
    out = []
    for r in res["rows"]:
        if r["status"] == "ok":
            mem = r["bytes_per_step"] / res["bandwidth_bytes_per_s"] * 1e3
            out.append((r["rung"], r["ms_per_step"], mem, max(r["ms_per_step"] - mem, 0.0)))
    return out


def int8_prediction(res: dict, rung: str = "int8") -> float | None:
    """int8 tok/s over compiled predicted if only the memory time shrinks with the bytes (the rest of
    the compiled step, launches and small kernels, unchanged); None without both rungs."""
    by = rows_by_rung(res)
    if "compiled" not in by or rung not in by:
        return None
    split = {name: (ms, mem, rest) for name, ms, mem, rest in time_split(res)}
    ms, mem, rest = split["compiled"]
    ratio = by[rung]["bytes_per_step"] / by["compiled"]["bytes_per_step"]
    return ms / (rest + mem * ratio)


LABELS = {"naive": "naive (recomputes the prefix)", "cached": "cached (KV cache, eager)",
          "static": "static (fixed shapes, eager)", "compiled": "compiled (CUDA graphs)",
          "int8": "int8 (half the bytes)", "int8_inductor": "int8, Inductor's kernel",
          "int4": "int4 (a quarter)", "HF eager": "HF generate, eager", "HF static": "HF generate, static"}


def label(res: dict, rung: str) -> str:
    """A bar's label; on a CPU 'compiled' means Inductor without CUDA graphs."""
    text = LABELS.get(rung, rung)
    if res.get("device_type") != "cuda":
        text = text.replace("compiled (CUDA graphs)", "compiled (Inductor)")
    return text


def draw_ladder(ax, res: dict, title: str) -> None:
    """Horizontal bars of decode tokens/s per rung (log scale, top to bottom in ladder order), the
    unquantized model's roofline as a dashed line, a quantized rung's own roofline as a dotted tick,
    a rung that did not run (OOM, skipped) named where its bar would be."""
    from ..axes import label_log_axis
    from ..plotting import COLORS, human_bytes

    colors = {"naive": COLORS["naive"], "cached": COLORS["cached"], "static": "#17becf",
              "compiled": COLORS["measured"], "int8": "#8c564b", "int8_inductor": "#c49c94", "int4": "#e377c2"}
    roof = res["roofline_tok_per_s"]
    ok = [r for r in res["rows"] if r["status"] == "ok"]
    lo = min([r["tok_per_s"] for r in ok] + [roof]) / 2
    hi = max([roof] + [r["roofline_tok_per_s"] for r in ok]) * 4  # room for the value labels
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    rows = res["rows"]
    ys = list(range(len(rows)))[::-1]  # first rung on top
    own_label = "its own roofline (fewer bytes)"
    for y, r in zip(ys, rows):
        if r["status"] != "ok":
            ax.text(lo * 1.1, y, r["status"].upper(), va="center", color="grey")
            continue
        ax.barh(y, r["tok_per_s"], color=colors.get(r["rung"], COLORS["theory"]), alpha=0.85, height=0.7)
        ax.text(r["tok_per_s"] * 1.05, y, f"{r['tok_per_s']:,.0f} ({r['tok_per_s'] / roof:.0%})", va="center")
        if abs(r["roofline_tok_per_s"] / roof - 1) > 0.05:  # a quantized rung reads fewer bytes
            ax.plot([r["roofline_tok_per_s"]] * 2, [y - 0.4, y + 0.4], ":", color=COLORS["roofline"], lw=2,
                    label=own_label)
            own_label = None
    hf = [y for y, r in zip(ys, rows) if r["rung"] in HF_RUNGS]
    if hf:  # Hugging Face's rows apart from ours
        ax.axhline(max(hf) + 0.5, color="grey", lw=0.8)
    step_bytes = res["batch"] * res["bandwidth_bytes_per_s"] / roof
    ax.axvline(roof, color=COLORS["roofline"], ls="--",
               label=f"roofline {roof:,.0f} tok/s\n({human_bytes(step_bytes)}/step at "
                     f"{res['bandwidth_bytes_per_s'] / 1e9:,.0f} GB/s)")
    ax.set_yticks(ys, [label(res, r["rung"]) for r in rows])
    label_log_axis(ax.xaxis)
    ax.set(xlabel="decode tokens/s (batch 1), log scale; in brackets: % of the roofline", title=title)
    ax.legend(loc="best")
