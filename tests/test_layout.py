"""The layout the README describes: imports run one way (core <- quant <- cache <- decode <- pretrained <- measure),
model.py imports nothing but config and the cache protocol, every subpackage says what lives in
it, and the built wheel holds every module and data file."""
import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lecture_lib"
LAYERS = ["core", "quant", "cache", "decode", "pretrained", "measure", "serving", "parallel"]  # each may import only from the ones before it


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "core"


def imports(path: Path) -> set[str]:
    """lecture_lib modules imported by a file, at any depth (function-level imports count too)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("lecture_lib"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if (LIB.parent / (sub.replace(".", "/") + ".py")).exists()
                              or (LIB.parent / sub.replace(".", "/")).is_dir() else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lecture_lib")}
    return found - {me}


FILES = sorted(LIB.rglob("*.py"))
GRAPH = {module_name(p): imports(p) for p in FILES}


def test_imports_run_one_way():
    bad = []
    for mod, deps in GRAPH.items():
        if mod in ("lecture_lib", "lecture_lib.bench", "lecture_lib.serve", "lecture_lib.loadgen"):  # the door, CLI aliases
            continue
        for dep in deps:
            if LAYERS.index(layer(dep)) > LAYERS.index(layer(mod)):
                bad.append(f"{mod} ({layer(mod)}) imports {dep} ({layer(dep)})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_cycles():
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(path + [m])
        state[m] = "open"
        for dep in GRAPH.get(m, ()):
            if dep in GRAPH and dep != "lecture_lib":
                visit(dep, path + [m])
        state[m] = "done"

    for m in GRAPH:
        if m != "lecture_lib":
            visit(m, [])


def test_model_imports_only_config_and_the_cache_protocol():
    assert GRAPH["lecture_lib.model"] == {"lecture_lib.config", "lecture_lib.cache_protocol"}


@pytest.mark.parametrize("package", sorted({p.parent for p in FILES if p.parent != LIB}), ids=lambda p: p.name)
def test_every_subpackage_says_what_lives_there(package):
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    assert len(doc) > 200 and ("does not" in doc or "What does not" in doc), package


def test_the_wheel_holds_every_module_and_data_file(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("lecture_lib-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in FILES}
    assert modules - names == set(), "modules missing from the wheel"
    data = {"lecture_lib/data/" + str(p.relative_to(ROOT / "data")) for p in (ROOT / "data").rglob("*")
            if p.is_file() and p.suffix in (".json", ".md", ".safetensors", ".gz")}
    assert data and data - names == set(), "data files missing from the wheel"
