"""Where the data files live: in a checkout (``<repo>/data``) or inside an installed wheel.

``pyproject.toml`` maps the top-level ``data/`` folder into the package as ``lecture_lib/data``
when a wheel is built (the Colab install), so both layouts are covered by one lookup.
"""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir() -> Path:
    """The folder holding models.json, hardware.json, checkpoints, reference measurements."""
    candidates = []
    if os.environ.get("LECTURE_LIB_DATA"):
        candidates.append(Path(os.environ["LECTURE_LIB_DATA"]))
    candidates += [_PACKAGE_DIR.parent / "data", _PACKAGE_DIR / "data"]
    for path in candidates:
        if (path / "models.json").is_file():
            return path
    raise FileNotFoundError(
        "lecture_lib cannot find its data folder (looked in: "
        + ", ".join(str(p) for p in candidates)
        + "). Run from a checkout of the repository, install it with pip, "
        "or set LECTURE_LIB_DATA to the folder that holds models.json."
    )


def data_path(*parts: str) -> Path:
    return data_dir().joinpath(*parts)
