"""Load Hugging Face Llama-family weights (``LlamaForCausalLM`` layout) into the from-scratch model.

The names differ but the tensors are the same: our RoPE uses HF's rotate-half convention, so no
permutation of the q/k projections is needed. Works offline on a local folder of safetensors files;
``from_pretrained`` downloads only when given a hub id and ``huggingface_hub`` is installed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from .config import ModelConfig, check_rope_scaling
from .model import Transformer

_LAYER_NAMES = {
    "self_attn.q_proj": "attn.wq", "self_attn.k_proj": "attn.wk", "self_attn.v_proj": "attn.wv",
    "self_attn.o_proj": "attn.wo", "mlp.gate_proj": "mlp.w_gate", "mlp.up_proj": "mlp.w_up",
    "mlp.down_proj": "mlp.w_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm",
}


# Our ModelConfig field <-> the Hugging Face LlamaConfig key: the one mapping, used both ways.
_CONFIG_KEYS = {"L": "num_hidden_layers", "D": "hidden_size", "N": "num_attention_heads",
                "K": "num_key_value_heads", "H": "head_dim", "F": "intermediate_size", "V": "vocab_size",
                "S_max": "max_position_embeddings", "rope_theta": "rope_theta", "norm_eps": "rms_norm_eps",
                "tie_embeddings": "tie_word_embeddings"}


# Architecture fields that change the function if set, with the value plain Llama has. A config
# that sets any of them otherwise is refused rather than loaded into a model that ignores them.
_PLAIN_LLAMA = {
    "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "qk_norm": False, "use_qk_norm": False,
    "attn_logit_softcapping": None, "final_logit_softcapping": None, "partial_rotary_factor": 1.0,
    "embedding_multiplier": 1.0, "residual_multiplier": 1.0, "attention_multiplier": None,
    "logits_scaling": 1.0, "query_pre_attn_scalar": None, "layer_types": None,
}
_MODEL_TYPES = ("llama", "mistral")


def rope_from_hf(hf: dict) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from either spelling of a HF config: transformers 5's
    ``rope_parameters`` {"rope_type", "rope_theta", ...}, or the older top-level ``rope_theta`` with
    ``rope_scaling`` {"type" or "rope_type", "factor", ...}. Unknown rope types raise (via
    ``config.check_rope_scaling``): a scaling silently dropped would give wrong logits."""
    params = hf.get("rope_parameters") or {}
    if params and all(isinstance(v, dict) for v in params.values()):
        raise ValueError(f"rope_parameters per layer type ({', '.join(params)}) are not implemented by "
                         "the from-scratch model, whose layers all share one RoPE.")
    merged = {**(hf.get("rope_scaling") or {}), **params}
    theta = float(merged.pop("rope_theta", None) or hf.get("rope_theta") or 10000.0)
    kind = merged.pop("rope_type", None) or merged.pop("type", None) or "default"
    merged.pop("type", None)
    if merged.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"partial_rotary_factor = {merged['partial_rotary_factor']} (RoPE on part of each "
                         "head) is not implemented by the from-scratch model.")
    merged.pop("partial_rotary_factor", None)
    if kind == "default":
        if merged:
            raise ValueError(f"Plain RoPE with extra fields {merged}: the from-scratch model would ignore them.")
        return theta, None
    if kind == "llama3":  # HF falls back to the model's own context when the original is not given
        merged.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
    scaling = {"rope_type": kind, **merged}
    check_rope_scaling(scaling)
    return theta, scaling


def check_architecture(hf: dict) -> None:
    """Raise if a HF config describes something other than the plain Llama decoder we implement."""
    model_type = hf.get("model_type", "llama")
    if model_type not in _MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not a plain Llama decoder; the from-scratch model "
                         f"loads {', '.join(map(repr, _MODEL_TYPES))} configs only.")
    changed = {k: hf[k] for k, plain in _PLAIN_LLAMA.items() if k in hf and hf[k] != plain}
    if changed:
        raise ValueError(f"This config sets {changed}, which the from-scratch Llama decoder does not implement "
                         f"(plain Llama has {({k: _PLAIN_LLAMA[k] for k in changed})}); its logits would be wrong.")
    window = hf.get("sliding_window")
    if window is not None and hf.get("use_sliding_window", True) and window < hf.get("max_position_embeddings", 0):
        raise ValueError(
            f"sliding_window = {window}: this model attends only to the last {window} positions, and the "
            f"from-scratch decoder attends to all of them. Below {window} tokens the two agree: load with "
            f"max_position_embeddings set to at most {window} in config.json to use it there.")


def config_from_hf(hf: dict, name: str = "hf") -> ModelConfig:
    """A ModelConfig from a HF ``config.json`` dict (Llama, Mistral and friends), or a ValueError
    naming the field that the from-scratch model does not implement."""
    check_architecture(hf)
    N = hf["num_attention_heads"]
    defaults = {"num_key_value_heads": N, "head_dim": hf["hidden_size"] // N, "max_position_embeddings": 2048,
                "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
    fields = {ours: hf.get(theirs) if hf.get(theirs) is not None else defaults.get(theirs)
              for ours, theirs in _CONFIG_KEYS.items() if ours != "rope_theta"}
    fields["rope_theta"], fields["rope_scaling"] = rope_from_hf(hf)
    fields["tie_embeddings"] = bool(fields["tie_embeddings"])
    return ModelConfig(**fields, name=name, source=f"Hugging Face config ({hf.get('_name_or_path', name)})")


def config_to_hf(cfg: ModelConfig) -> dict:
    """The HF ``LlamaConfig`` keyword arguments of a ModelConfig (``transformers.LlamaConfig(**...)``),
    RoPE in the older ``rope_theta``/``rope_scaling`` spelling, which transformers 4 and 5 both accept."""
    return {**{theirs: getattr(cfg, ours) for ours, theirs in _CONFIG_KEYS.items()}, "rope_scaling": cfg.rope_scaling}


def convert_state_dict(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename HF ``LlamaForCausalLM`` tensors to this library's names."""
    out = {}
    for key, w in hf_state.items():
        key = key.removeprefix("model.")
        if key == "embed_tokens.weight":
            out["tok_emb.weight"] = w
        elif key in ("norm.weight", "lm_head.weight"):
            out[key] = w
        elif m := re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", key):
            if m.group(2) not in _LAYER_NAMES:
                raise KeyError(f"Unexpected tensor {key!r}: not part of a Llama-style decoder.")
            out[f"layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.weight"] = w
        elif "rotary_emb" not in key:
            raise KeyError(f"Unexpected tensor {key!r}: not part of a Llama-style decoder.")
    return out


def to_hf_state_dict(state: dict[str, torch.Tensor], tie_embeddings: bool) -> dict[str, torch.Tensor]:
    """This library's tensor names back to HF ``LlamaForCausalLM``'s (the inverse of
    ``convert_state_dict``); a tied head is left out, as transformers saves it."""
    theirs = {v: k for k, v in _LAYER_NAMES.items()}
    out = {}
    for key, w in state.items():
        if key == "tok_emb.weight":
            out["model.embed_tokens.weight"] = w
        elif key == "norm.weight":
            out["model.norm.weight"] = w
        elif key == "lm_head.weight":
            if not tie_embeddings:
                out[key] = w
        elif m := re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", key):
            out[f"model.layers.{m.group(1)}.{theirs[m.group(2)]}.weight"] = w
        else:
            raise KeyError(f"Unexpected tensor {key!r}: not part of the from-scratch decoder.")
    return out


def load_hf_weights(model: Transformer, hf_state: dict[str, torch.Tensor]) -> Transformer:
    model.load_state_dict(_our_state(model.cfg, hf_state), strict=True)
    return model


def _our_state(cfg: ModelConfig, hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = convert_state_dict(hf_state)
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
        state["lm_head.weight"] = state["tok_emb.weight"]
    return state


def from_pretrained(path_or_repo: str, *, device=None, dtype=torch.float32) -> Transformer:
    """A from-scratch Transformer with the weights of a local HF folder or a hub id (needs network)."""
    path = Path(path_or_repo)
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download
        except ImportError as e:
            raise ImportError(f"{path_or_repo!r} is not a local folder, and downloading it needs "
                              "`pip install huggingface_hub`.") from e
        path = Path(snapshot_download(path_or_repo, allow_patterns=["config.json", "*.safetensors"]))
    cfg = config_from_hf(json.loads((path / "config.json").read_text()), name=path.name)
    state = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(file))
    if not state:
        raise FileNotFoundError(f"No *.safetensors files in {path}; only safetensors checkpoints are supported.")
    # from_state_dict casts each tensor from the file's dtype straight to ``dtype`` (float64 weights
    # are not rounded through float32 on the way).
    return Transformer.from_state_dict(cfg, _our_state(cfg, state), dtype=dtype, device=device)
