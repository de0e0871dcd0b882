"""Reference measurements shipped in ``data/reference``: the matmul roofline of a real H100
(notebook 03) and the decode benchmark's runs (notebook 07), loaded and merged for overlays."""
from __future__ import annotations

import json
from pathlib import Path

from .. import hardware
from ..paths import data_path



def reference_dir() -> Path:
    """``data/reference``: reference measurements shipped with the repository."""
    return data_path("reference")


def load_references(pattern: str = "matmul_*.json") -> list[dict]:
    """Every reference measurement file in ``data/reference`` matching ``pattern`` (parsed JSON,
    with ``path`` added), sorted by file name; an empty list if there are none."""
    folder = reference_dir()
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob(pattern)):
        ref = json.loads(path.read_text())
        ref["path"] = str(path)
        out.append(ref)
    return out


def device_slug(info: hardware.DeviceInfo) -> str:
    """A file-name-friendly device name: "h100_sxm" for a matched spec, else from the name."""
    text = info.spec.key if info.spec else (info.type if info.type != "cuda" else info.name)
    return "_".join(hardware._words(text)) or info.type


SHAPE_FIELDS = ("L", "D", "N", "K", "H", "F", "V")


def load_decode_references(pattern: str = "decode_*.json") -> list[dict]:
    """Every ``data/reference/decode_*.json`` (``python -m lecture_lib.bench decode --json``), the
    files of one shape, dtype, batch and device merged into one result: the main file's bandwidth
    and roofline, with the rows of the others (e.g. Hugging Face's, run apart) appended. Sorted by
    model size."""
    merged = {}
    files = load_references(pattern)
    files.sort(key=lambda ref: all(r["rung"].startswith("HF") for r in ref["rows"]))  # main files first
    for ref in files:
        key = (tuple(ref["model"][k] for k in SHAPE_FIELDS), ref["dtype"], ref["batch"], ref["device_name"])
        if key not in merged:
            merged[key] = dict(ref, sources=[ref["path"]])
            continue
        base = merged[key]
        have = {r["rung"] for r in base["rows"]}
        base["rows"] = base["rows"] + [r for r in ref["rows"] if r["rung"] not in have]
        base["sources"].append(ref["path"])
    return sorted(merged.values(), key=lambda r: r["params"])
