"""Model configuration in the lecture's notation, with presets from ``data/models.json``.

B batch, S tokens conditioned on (KV length), T tokens processed, D model dim, F MLP dim,
N query heads, K KV heads, G = N/K query heads per KV head, H head dim, L layers, V vocab.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache

from .paths import data_path


@dataclass(frozen=True)
class ModelConfig:
    L: int = 2  # layers
    D: int = 64  # model (residual) dimension
    N: int = 4  # query heads
    K: int = 4  # key/value heads: K = N is MHA, 1 < K < N is GQA, K = 1 is MQA
    H: int = 16  # head dimension (D = N * H in the usual configs, not required)
    F: int = 176  # SwiGLU hidden dimension
    V: int = 256  # vocabulary size
    S_max: int = 256  # longest sequence (prompt + generated) the KV cache and RoPE table hold
    rope_theta: float = 10000.0
    # RoPE frequency scaling, as Hugging Face spells it: None (plain RoPE), {"rope_type": "linear",
    # "factor": f}, or Llama 3.1's {"rope_type": "llama3", "factor", "low_freq_factor",
    # "high_freq_factor", "original_max_position_embeddings"}. See model.rope_inv_freq.
    rope_scaling: dict | None = None
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    sliding_window: int | None = None  # recorded for KV arithmetic; the decoder attends to all
    name: str = "custom"
    source: str = ""

    def __post_init__(self):
        for field in ("L", "D", "N", "K", "H", "F", "V", "S_max"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{field} must be a positive integer, got {value!r}.")
        if self.N % self.K != 0:
            raise ValueError(
                f"N = {self.N} query heads is not divisible by K = {self.K} KV heads: every KV head "
                f"must serve the same number G = N/K of query heads. Pick K from the divisors of N: "
                f"{[k for k in range(1, self.N + 1) if self.N % k == 0]}."
            )
        if self.H % 2:
            raise ValueError(
                f"H = {self.H} is odd, and rotary position embeddings rotate pairs of dimensions "
                f"(i, i + H/2): the head dim must be even. Use H = {self.H + 1} or {self.H - 1}."
            )

        if self.rope_scaling is not None:
            check_rope_scaling(self.rope_scaling)

    @property
    def G(self) -> int:
        """Query heads per KV head."""
        return self.N // self.K

    def replace(self, **changes) -> "ModelConfig":
        """A copy with some fields changed, e.g. ``cfg.replace(K=1)`` for the MQA variant."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# The RoPE scalings the model implements, and the keys each needs.
ROPE_SCALING_KEYS = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


def check_rope_scaling(scaling: dict) -> None:
    """A rope_scaling dict the model can compute exactly, or a ValueError naming what is wrong."""
    if not isinstance(scaling, dict) or scaling.get("rope_type") not in ROPE_SCALING_KEYS:
        kind = scaling.get("rope_type") if isinstance(scaling, dict) else scaling
        raise ValueError(
            f"RoPE scaling {kind!r} is not implemented by the from-scratch model (it implements plain "
            f"RoPE and {', '.join(map(repr, ROPE_SCALING_KEYS))}); loading it anyway would give wrong logits.")
    missing = [k for k in ROPE_SCALING_KEYS[scaling["rope_type"]] if k not in scaling]
    if missing:
        raise ValueError(f"rope_scaling {scaling} lacks {', '.join(missing)}, which {scaling['rope_type']!r} "
                         "scaling needs.")
    extra = sorted(set(scaling) - {"rope_type", *ROPE_SCALING_KEYS[scaling["rope_type"]]})
    if extra:
        raise ValueError(f"rope_scaling {scaling} has fields {extra} that the from-scratch model does not "
                         "implement; they would change the positions' angles.")


@lru_cache(maxsize=1)
def _presets_json() -> dict:
    with open(data_path("models.json")) as f:
        return json.load(f)


def preset_names() -> list[str]:
    return list(_presets_json()["presets"])


def get_config(name: str, **overrides) -> ModelConfig:
    """A preset from data/models.json (``"llama2-13b"``, ``"tiny"``, ...), optionally changed."""
    presets = _presets_json()["presets"]
    if name not in presets:
        raise KeyError(f"Unknown model preset {name!r}. Known presets: {', '.join(presets)}.")
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        hints = [f"{k!r} (did you mean {k.upper()!r}?)" if k.upper() in fields else repr(k) for k in unknown]
        raise TypeError(f"get_config({name!r}, ...) got unknown fields {', '.join(hints)}. "
                        f"ModelConfig's fields: {', '.join(fields)}.")
    return ModelConfig.from_dict({**presets[name], "name": name, **overrides})


def mla_config(name: str) -> dict:
    """MLA (DeepSeek-V2/V3) fields for KV-cache arithmetic; not a decoder the library runs."""
    mla = _presets_json()["mla"]
    if name not in mla:
        raise KeyError(f"Unknown MLA config {name!r}. Known: {', '.join(mla)}.")
    return dict(mla[name], name=name)
