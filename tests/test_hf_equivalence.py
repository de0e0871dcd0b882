"""The from-scratch decoder computes the same function as Hugging Face's LlamaForCausalLM."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from lecture_lib.decode.plain import generate_cached  # noqa: E402
from lecture_lib.hf import from_pretrained  # noqa: E402


def hf_model(K, tie=False):
    cfg = transformers.LlamaConfig(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=K, max_position_embeddings=64,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=tie, attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF initialises norms to exactly 1; randomise them so they are tested too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


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
