"""Trained checkpoints: save and load (safetensors + a JSON card), and held-out perplexity.

A checkpoint ``<name>`` is two files in ``data/checkpoints/``:
- ``<name>.safetensors``: the weights, stored in fp16 to keep the repository small; the config JSON
  rides along in the file's metadata, so the file alone rebuilds the model;
- ``<name>.json``: the card: config, training settings, wall time and hardware, and the held-out
  perplexity measured on exactly the weights in the file (fp16 rounded, computed in fp32).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .model import Transformer
from .paths import data_path

STORE_DTYPE = torch.float16  # half the bytes of fp32; small models' weights fit its range easily
# The recorded held-out perplexity uses this protocol (64 windows of 256 predicted bytes, spread
# over the held-out text): a second or two on a laptop CPU, so a test can recompute it.
EVAL_T, EVAL_B, EVAL_WINDOWS = 256, 16, 64


def checkpoint_dir() -> Path:
    return data_path("checkpoints")


# ---------------------------------------------------------------------------------------------
# Evaluation


def eval_windows(tokens: torch.Tensor, T: int = EVAL_T, max_windows: int | None = EVAL_WINDOWS) -> list[int]:
    """Which windows ``perplexity`` scores: window i is tokens[i*T : i*T + T + 1]. All of them, or
    ``max_windows`` spread evenly over the text, so that a quick estimate still covers all of it."""
    n = (len(tokens) - 1) // T
    if n < 1:
        raise ValueError(f"Need at least T + 1 = {T + 1} tokens to score one window, got {len(tokens)}.")
    if max_windows is None or max_windows >= n:
        return list(range(n))
    return [i * n // max_windows for i in range(max_windows)]


def eval_batches(tokens: torch.Tensor, T: int = EVAL_T, B: int = EVAL_B,
                 max_windows: int | None = EVAL_WINDOWS, device=None):
    """The windows of ``eval_windows`` in batches of at most B, as [b T+1] tensors on ``device``:
    the one batching every perplexity in the library uses (inputs ``w[:, :-1]``, targets ``w[:, 1:]``)."""
    picked = eval_windows(tokens, T, max_windows)
    for first in range(0, len(picked), B):
        yield torch.stack([tokens[i * T:i * T + T + 1] for i in picked[first:first + B]]).to(device)


@torch.no_grad()
def perplexity(model: Transformer, tokens: torch.Tensor, T: int = EVAL_T, B: int = EVAL_B,
               max_windows: int | None = EVAL_WINDOWS) -> float:
    """exp(mean next-token NLL) over the fixed, non-overlapping windows of ``eval_windows``.

    Each window scores its last T tokens, each given only the window before it (the first token
    is context only). Same windows every call: the number is deterministic.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    for windows in eval_batches(tokens, T, B, max_windows, device):
        logits = model(windows[:, :-1]).float()  # fp32 softmax even for a bf16/fp16 model
        nll += torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="sum").item()
        count += windows[:, 1:].numel()
    model.train(was_training)
    return math.exp(nll / count)


def unigram_perplexity(train_tokens: torch.Tensor, heldout_tokens: torch.Tensor, V: int = 256) -> float:
    """Perplexity of byte frequencies counted on the training text (add-one smoothed): the
    baseline that any model which uses context at all must beat."""
    counts = torch.bincount(train_tokens, minlength=V).double() + 1.0
    logp = (counts / counts.sum()).log()
    return math.exp(-logp[heldout_tokens].mean().item())


# ---------------------------------------------------------------------------------------------
# Saving and loading


def _paths(name_or_path) -> tuple[Path, Path]:
    """(<x>.safetensors, <x>.json) for a checkpoint name, an alias in a card, or a path."""
    p = Path(name_or_path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    if p.parent == Path(".") and not p.with_suffix(".safetensors").exists():
        folder = checkpoint_dir()
        p = folder / p.name
        if not p.with_suffix(".safetensors").exists():  # an alias such as "gqa-k2" -> "target"
            for card in sorted(folder.glob("*.json")):
                if p.name in json.loads(card.read_text()).get("aliases", []):
                    p = card.with_suffix("")
                    break
    weights = p.with_suffix(".safetensors")
    if not weights.exists():
        raise FileNotFoundError(
            f"No checkpoint {name_or_path!r} (looked for {weights}). Known checkpoints: "
            f"{', '.join(list_checkpoints()) or 'none'}. Train them with `python -m lecture_lib.train`."
        )
    return weights, p.with_suffix(".json")


@torch.no_grad()
def round_weights_(model: Transformer, dtype: torch.dtype = STORE_DTYPE) -> Transformer:
    """Round the parameters, in place, to what a file in ``dtype`` holds (kept in their dtype).

    Not ``model.half().float()``: that would also round the RoPE tables, which are not stored
    but rebuilt in full precision when a checkpoint loads.
    """
    for p in model.parameters():
        p.copy_(p.to(dtype))
    return model


def save_checkpoint(model: Transformer, path, meta: dict | None = None,
                    dtype: torch.dtype = STORE_DTYPE) -> Path:
    """Write ``<path>.safetensors`` (weights in ``dtype``) and ``<path>.json`` (config + meta).

    Perplexities in ``meta`` should be measured after ``round_weights_(model, dtype)`` (as
    ``lecture_lib.train`` does), since that is what loads back.
    """
    path = Path(path)
    path = path.with_suffix("") if path.suffix == ".safetensors" else path
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        del state["lm_head.weight"]  # the same tensor as tok_emb.weight; safetensors refuses shared memory
    save_file(state, str(path.with_suffix(".safetensors")), metadata={"config": json.dumps(cfg.to_dict())})
    card = {"name": path.name, "config": cfg.to_dict(), "stored_dtype": str(dtype).removeprefix("torch."),
            "num_params": model.num_params(), **(meta or {})}
    card["file_bytes"] = path.with_suffix(".safetensors").stat().st_size
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return path.with_suffix(".safetensors")


def load_checkpoint(name_or_path, device=None, dtype: torch.dtype | None = None,
                    S_max: int | None = None) -> Transformer:
    """The trained model, in eval mode, in ``dtype`` (default fp32) on ``device`` (default CPU).

    ``S_max`` enlarges the RoPE table (and default KV cache) for longer generations; it changes no
    weight, but the models were trained on windows of 256 bytes, so quality past that is untested.
    """
    weights, _ = _paths(name_or_path)
    cfg = read_config(weights)
    state = load_file(str(weights))
    if S_max is not None:
        cfg = cfg.replace(S_max=S_max)
    model = Transformer(cfg)
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.to(device=device or "cpu", dtype=dtype or torch.float32).eval()


def read_config(weights: Path) -> ModelConfig:
    """The ModelConfig stored in a checkpoint's safetensors header, with clear errors for a file
    that is not safetensors, or one not written by ``save_checkpoint`` (no config in it)."""
    size = weights.stat().st_size
    with open(weights, "rb") as f:  # safetensors: 8 bytes of header length, then a JSON header
        n = int.from_bytes(f.read(8), "little")
        try:
            if size < 8 or not 2 <= n <= size - 8:
                raise ValueError
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"{weights} is not a safetensors file (its first bytes are no safetensors "
                             f"header). Pass a checkpoint written by save_checkpoint, or re-download it.") from None
    config = (header.get("__metadata__") or {}).get("config")
    if config is None:
        raise ValueError(f"{weights} is a safetensors file without the model config in its metadata, so it "
                         "was not written by lecture_lib.checkpoints.save_checkpoint. For a Hugging Face "
                         "checkpoint (a folder with config.json) use lecture_lib.hf.from_pretrained.")
    return ModelConfig.from_dict(json.loads(config))


def load_meta(name_or_path) -> dict:
    """The JSON card: config, training settings, wall time, hardware, perplexities."""
    return json.loads(_paths(name_or_path)[1].read_text())


def list_checkpoints() -> list[str]:
    """Names of the checkpoints in data/checkpoints (aliases not repeated)."""
    folder = checkpoint_dir()
    return sorted(p.stem for p in folder.glob("*.safetensors")) if folder.is_dir() else []
