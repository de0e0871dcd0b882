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

from .config import ModelConfig
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


def config_from_hf(hf: dict, name: str = "hf") -> ModelConfig:
    """A ModelConfig from a HF ``config.json`` dict (Llama, Mistral and friends)."""
    if (hf.get("rope_scaling") or {}).get("rope_type", "default") not in ("default", None):
        raise NotImplementedError(
            f"rope_scaling {hf['rope_scaling']} is not implemented by the from-scratch model; "
            "use a checkpoint with plain RoPE (e.g. Llama 2, Llama 3.0, Mistral, TinyLlama)."
        )
    N = hf["num_attention_heads"]
    defaults = {"num_key_value_heads": N, "head_dim": hf["hidden_size"] // N, "max_position_embeddings": 2048,
                "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
    fields = {ours: hf.get(theirs) if hf.get(theirs) is not None else defaults.get(theirs)
              for ours, theirs in _CONFIG_KEYS.items()}
    fields["rope_theta"], fields["tie_embeddings"] = float(fields["rope_theta"]), bool(fields["tie_embeddings"])
    return ModelConfig(**fields, name=name, source=f"Hugging Face config ({hf.get('_name_or_path', name)})")


def config_to_hf(cfg: ModelConfig) -> dict:
    """The HF ``LlamaConfig`` keyword arguments of a ModelConfig (``transformers.LlamaConfig(**...)``)."""
    return {theirs: getattr(cfg, ours) for ours, theirs in _CONFIG_KEYS.items()}


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


def load_hf_weights(model: Transformer, hf_state: dict[str, torch.Tensor]) -> Transformer:
    state = convert_state_dict(hf_state)
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
        state["lm_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state, strict=True)
    return model


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
    model = load_hf_weights(Transformer(cfg), state)
    return model.to(device=device, dtype=dtype).eval()
