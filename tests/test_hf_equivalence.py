"""The from-scratch decoder computes the same function as Hugging Face's LlamaForCausalLM, for
every RoPE spelling and scaling the loader accepts, and refuses what it does not implement."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lecture_lib.config import ModelConfig  # noqa: E402
from lecture_lib.decode.plain import generate_cached  # noqa: E402
from lecture_lib.hf import config_from_hf, from_pretrained  # noqa: E402
from lecture_lib.model import rope_inv_freq  # noqa: E402

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}  # a short original context, so all three bands exist at H = 16


def hf_model(K=8, tie=False, head_dim=None, rope=None, dtype=torch.float32, attn="eager"):
    cfg = transformers.LlamaConfig(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=K, max_position_embeddings=64, head_dim=head_dim,
        rope_parameters=rope or {"rope_type": "default", "rope_theta": 10000.0},
        rms_norm_eps=1e-5, tie_word_embeddings=tie, attn_implementation=attn,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(dtype).eval()
    with torch.no_grad():  # HF initialises norms to exactly 1; randomise them so they are tested too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def rewrite_config(folder, change):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("K,tie", [(8, False), (2, False), (1, True)])
def test_same_logits_and_tokens_as_transformers(tmp_path, K, tie):
    hf = hf_model(K, tie)
    hf.save_pretrained(tmp_path)  # a checkpoint the test makes itself: config.json + safetensors
    ours = from_pretrained(str(tmp_path))
    assert ours.cfg.K == K and ours.cfg.tie_embeddings == tie
    x = torch.randint(0, 101, (2, 24))
    with torch.no_grad():
        ref = hf(x).logits
        got = ours(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    hf_tokens = hf.generate(x, max_new_tokens=12, do_sample=False, min_new_tokens=12)[:, 24:]
    assert torch.equal(generate_cached(ours, x, 12).tokens, hf_tokens)


def _legacy(rope):  # the pre-transformers-5 spelling of the same settings
    def change(config):
        params = dict(config.pop("rope_parameters"))
        config["rope_theta"] = params.pop("rope_theta")
        kind = params.pop("rope_type")
        if kind != "default":
            config["rope_scaling"] = {"type": kind, **params} if kind == "linear" else {"rope_type": kind, **params}
    return change


# (RoPE settings, how config.json spells them, tied head, head_dim): every spelling and scaling,
# tied and untied, and a head dim that is not D/N.
MATRIX = [
    ({"rope_type": "default", "rope_theta": 500000.0}, "rope_parameters", False, None),
    ({"rope_type": "default", "rope_theta": 500000.0}, "legacy", True, None),
    ({"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}, "rope_parameters", True, None),
    ({"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}, "legacy", False, 16),
    ({**LLAMA3, "rope_theta": 500000.0}, "rope_parameters", False, 16),
    ({**LLAMA3, "rope_theta": 500000.0}, "legacy", True, None),
    ({"rope_type": "default", "rope_theta": 100000.0}, "rope_parameters", True, 12),
]


@pytest.mark.parametrize("rope,spelling,tie,head_dim", MATRIX)
def test_float64_equivalence_matrix(tmp_path, rope, spelling, tie, head_dim):
    # HF's "eager" attention takes its softmax in float32 even for a float64 model (5e-8 apart from
    # ours); its SDPA path computes in the model's dtype, like ours.
    hf = hf_model(K=2, tie=tie, head_dim=head_dim, rope=rope, dtype=torch.float64, attn="sdpa")
    hf.save_pretrained(tmp_path)
    if spelling == "legacy":
        rewrite_config(tmp_path, _legacy(rope))
    ours = from_pretrained(str(tmp_path), dtype=torch.float64)
    assert ours.cfg.rope_theta == rope["rope_theta"]
    assert ours.cfg.H == (head_dim or 8) and ours.cfg.tie_embeddings == tie
    assert (ours.cfg.rope_scaling or {}).get("rope_type", "default") == rope["rope_type"]
    x = torch.randint(0, 101, (2, 60))
    with torch.no_grad():
        diff = (ours(x) - hf(x).logits).abs().max().item()
    assert diff < 1e-9, f"max logit difference {diff:.3g}"


def test_scaled_frequencies_match_transformers():
    """The three bands of llama3 scaling, and linear scaling, frequency by frequency."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    for rope in ({**LLAMA3, "rope_theta": 500000.0}, {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e4}):
        cfg = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, rope_parameters=rope)
        ref, scale = ROPE_INIT_FUNCTIONS[rope["rope_type"]](cfg, "cpu")
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        got = rope_inv_freq(16, rope["rope_theta"], scaling)
        assert torch.equal(got, ref) and scale == 1.0
    plain = rope_inv_freq(16, 500000.0)
    scaled = rope_inv_freq(16, 500000.0, LLAMA3)
    ratio = plain / scaled
    assert ratio[0] == 1 and ratio[-1] == 8  # fast frequencies kept, slow ones divided by the factor
    assert ((ratio > 1) & (ratio < 8)).any()  # and a blended band in between


def test_silent_theta_bug_is_gone():
    """transformers 5 writes theta only inside rope_parameters: it must not load as 10000."""
    hf = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1, "intermediate_size": 96,
          "vocab_size": 10, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}
    assert config_from_hf(hf).rope_theta == 500000.0


BASE = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1, "intermediate_size": 96,
        "vocab_size": 10, "max_position_embeddings": 64}


@pytest.mark.parametrize("change,named", [
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "yarn"),
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "dynamic"),
    ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4}}, "factor"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}}, "partial_rotary_factor"),
    ({"attention_bias": True}, "attention_bias"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"model_type": "qwen3"}, "qwen3"),
    ({"model_type": "mistral", "sliding_window": 32}, "sliding_window"),
])
def test_refuses_what_it_does_not_implement(change, named):
    with pytest.raises(ValueError, match=named):
        config_from_hf({**BASE, **change})


def test_mistral_without_window_and_llama3_default_context_load():
    assert config_from_hf({**BASE, "model_type": "mistral", "sliding_window": None}).rope_scaling is None
    scaling = {k: v for k, v in LLAMA3.items() if k != "original_max_position_embeddings"}
    cfg = config_from_hf({**BASE, "rope_scaling": scaling})  # HF falls back to max_position_embeddings
    assert cfg.rope_scaling["original_max_position_embeddings"] == 64


def test_config_rejects_unknown_scaling_directly():
    with pytest.raises(ValueError, match="not implemented"):
        ModelConfig(rope_scaling={"rope_type": "longrope", "factor": 2.0})
    with pytest.raises(ValueError, match="lacks"):
        ModelConfig(rope_scaling={"rope_type": "llama3", "factor": 2.0})
