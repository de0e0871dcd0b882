"""Read a Llama-architecture GGUF file (llama.cpp's format) into the from-scratch model.

A GGUF file holds a key-value header (the architecture's sizes, the tokenizer, the chat template)
and tensors, many of them block-quantized: Q8_0 stores 32 weights as int8 with one fp16 scale,
Q4_1 stores 32 weights as 4-bit codes with an fp16 scale and an fp16 minimum. The ``gguf``
package (llama.cpp's own reader, pure Python) parses the file and dequantizes the blocks to
float; this module renames the tensors and undoes the one layout difference: llama.cpp's
converter permutes the rows of W_q and W_k so that each head's rotary pairs are adjacent
(i, i+1), while Hugging Face and this library pair (i, i + H/2).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..config import ModelConfig
from ..model import Transformer

# Tensor types we read (each is exercised by the tests); others are refused by name.
SUPPORTED_TYPES = ("F32", "F16", "Q8_0", "Q4_1")

_LAYER_NAMES = {"attn_q": "attn.wq", "attn_k": "attn.wk", "attn_v": "attn.wv", "attn_output": "attn.wo",
                "ffn_gate": "mlp.w_gate", "ffn_up": "mlp.w_up", "ffn_down": "mlp.w_down",
                "attn_norm": "attn_norm", "ffn_norm": "mlp_norm"}


def _reader(path):
    try:
        import gguf
    except ImportError as e:
        raise ImportError("Reading GGUF files needs the `gguf` package: pip install gguf") from e
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No GGUF file at {path}.")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF').")
    return gguf.GGUFReader(path)


def metadata(reader) -> dict:
    """The header's key-value pairs as Python values (the long tokenizer lists included)."""
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def config_from_gguf(meta: dict, tensor_names: set[str], name: str = "gguf") -> ModelConfig:
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF architecture {arch!r} is not supported: the from-scratch model loads "
                         "'llama' GGUF files only.")

    def get(key, default=None):
        value = meta.get(f"llama.{key}", default)
        if value is None:
            raise ValueError(f"The GGUF header lacks llama.{key}, which the model's shape needs.")
        return value

    if "rope_freqs.weight" in tensor_names:
        raise ValueError("This GGUF file carries a rope_freqs tensor (Llama 3.1-style RoPE scaling as "
                         "frequency factors), which the GGUF loader does not implement; load the Hugging "
                         "Face checkpoint with lecture_lib.hf.from_pretrained instead (it implements llama3 scaling).")
    scaling_type = meta.get("llama.rope.scaling.type", "none")
    if scaling_type not in ("none", "linear"):
        raise ValueError(f"GGUF RoPE scaling {scaling_type!r} is not implemented (plain and linear are).")
    scaling = ({"rope_type": "linear", "factor": float(meta["llama.rope.scaling.factor"])}
               if scaling_type == "linear" else None)
    D, N = get("embedding_length"), get("attention.head_count")
    H = meta.get("llama.attention.key_length", meta.get("llama.rope.dimension_count", D // N))
    if meta.get("llama.rope.dimension_count", H) != H:
        raise ValueError(f"RoPE on {meta['llama.rope.dimension_count']} of {H} head dimensions is not implemented.")
    V = meta.get("llama.vocab_size") or len(meta["tokenizer.ggml.tokens"])
    eps = float(f"{np.float32(get('attention.layer_norm_rms_epsilon')):g}")  # stored as float32: 1e-5, not 9.99e-6
    return ModelConfig(L=get("block_count"), D=D, N=N, K=get("attention.head_count_kv", N), H=H,
                       F=get("feed_forward_length"), V=V, S_max=get("context_length"),
                       rope_theta=float(get("rope.freq_base", 10000.0)), rope_scaling=scaling,
                       norm_eps=eps, tie_embeddings="output.weight" not in tensor_names,
                       name=name, source=f"GGUF file ({meta.get('general.name', name)})")


def _unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's row order (per head: pairs (0,1), (2,3), ...) back to rotate-half (0..H/2-1, then H/2..H-1)."""
    return rearrange(w, "(n half two) d -> (n two half) d", n=heads, two=2)


def state_dict_from_gguf(reader, cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Our tensor names -> float32 tensors, and a count of the GGUF tensor types read."""
    from gguf.quants import dequantize
    state, types = {}, {}
    for t in reader.tensors:
        kind = t.tensor_type.name
        if kind not in SUPPORTED_TYPES:
            raise ValueError(f"Tensor {t.name} is stored as {kind}, which this loader does not read "
                             f"(it reads {', '.join(SUPPORTED_TYPES)}). Convert the file with llama.cpp's "
                             "llama-quantize to one of those, or load the Hugging Face checkpoint.")
        types[kind] = types.get(kind, 0) + 1
        w = torch.from_numpy(np.array(dequantize(t.data, t.tensor_type), dtype=np.float32))  # a writable copy
        if t.name == "token_embd.weight":
            state["tok_emb.weight"] = w
        elif t.name == "output_norm.weight":
            state["norm.weight"] = w
        elif t.name == "output.weight":
            state["lm_head.weight"] = w
        elif m := re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", t.name):
            if m.group(2) not in _LAYER_NAMES:
                raise ValueError(f"Unexpected GGUF tensor {t.name!r}: not part of a plain Llama decoder.")
            if m.group(2) == "attn_q":
                w = _unpermute(w, cfg.N)
            elif m.group(2) == "attn_k":
                w = _unpermute(w, cfg.K)
            state[f"layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.weight"] = w
        else:
            raise ValueError(f"Unexpected GGUF tensor {t.name!r}: not part of a plain Llama decoder.")
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    return state, types


def load_gguf(path, *, device=None, dtype=torch.float32) -> tuple[Transformer, dict]:
    """The from-scratch Transformer of a Llama GGUF file, and the file's header (tokenizer, chat
    template, ...), with ``"lecture_lib.tensor_types"`` added: how many tensors of each type were read.
    Quantized weights are dequantized: the model computes with the values the file stores."""
    reader = _reader(path)
    meta = metadata(reader)
    cfg = config_from_gguf(meta, {t.name for t in reader.tensors}, name=Path(path).stem)
    state, types = state_dict_from_gguf(reader, cfg)
    meta["lecture_lib.tensor_types"] = types
    return Transformer.from_state_dict(cfg, state, dtype=dtype, device=device), meta
