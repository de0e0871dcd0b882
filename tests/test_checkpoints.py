"""The trained checkpoints in data/checkpoints: they load, reproduce their recorded held-out
perplexity, and rank as they should (draft worse than target, everything far below unigram)."""
import math

import pytest
import torch

from lecture_lib import corpus
from lecture_lib.checkpoints import (checkpoint_dir, list_checkpoints, load_checkpoint, load_meta,
                                     perplexity, round_weights_, save_checkpoint,
                                     unigram_perplexity)
from lecture_lib.config import ModelConfig
from lecture_lib.model import Transformer

EXPECTED = {"target", "draft", "gqa-k8", "gqa-k1"}


def test_tokenizer_round_trips():
    text = "The \"assert\" statement -- naïve café, 1 ≤ 2 ✓\n\ttabs"
    tokens = corpus.encode(text)
    assert tokens.dtype == torch.long and tokens.dim() == 1
    assert 0 <= tokens.min() and tokens.max() < corpus.V
    assert len(tokens) == len(text.encode("utf-8"))
    assert corpus.decode(tokens) == text
    assert corpus.decode(tokens.tolist()) == text


def test_corpus_split_is_fixed():
    data = corpus.corpus_bytes()
    train, held = corpus.train_tokens(), corpus.heldout_tokens()
    assert len(train) + len(held) == len(data)
    assert 0.09 < len(held) / len(data) < 0.11
    # The held-out text is blocks 9, 19, 29, ... of 4096 bytes; training text starts at byte 0.
    B = corpus.BLOCK
    assert bytes(held[:B].tolist()) == data[9 * B:10 * B]
    assert bytes(held[B:2 * B].tolist()) == data[19 * B:20 * B]
    assert bytes(train[:9 * B].tolist()) == data[:9 * B]
    # Every checkpoint was trained and evaluated on exactly this text.
    for name in list_checkpoints():
        card = load_meta(name)["corpus"]
        assert card["sha256"] == corpus.corpus_sha256(), name
        assert (card["train_bytes"], card["heldout_bytes"]) == (len(train), len(held))


def test_random_batch_is_shifted_and_seeded():
    tokens = corpus.train_tokens()
    x, y = corpus.random_batch(tokens, 4, 32, torch.Generator().manual_seed(0))
    x2, _ = corpus.random_batch(tokens, 4, 32, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 32)
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x, x2)


def test_unigram_perplexity_of_uniform_bytes_is_V():
    uniform = torch.arange(256).repeat(4)
    assert unigram_perplexity(uniform, uniform) == pytest.approx(256.0)
    skewed = torch.tensor([0] * 99 + [1])
    assert unigram_perplexity(skewed, torch.zeros(10, dtype=torch.long)) < 1.1 * 356 / 100


def test_perplexity_scores_fixed_windows():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(L=1, D=32, N=2, K=1, H=16, F=64, S_max=64)).eval()
    tokens = torch.randint(0, 256, (5 * 16 + 7,))
    with torch.no_grad():  # by hand: 5 windows tokens[i*16 : i*16+17]; 3 spread out: i = 0, 1, 3
        w = torch.stack([tokens[i * 16:i * 16 + 17] for i in (0, 1, 3)])
        nll = torch.nn.functional.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten())
    assert perplexity(model, tokens, T=16, B=2, max_windows=3) == pytest.approx(math.exp(nll.item()), rel=1e-5)
    # batch size only changes fp32 summation order (seen to differ in the 8th digit on another CPU)
    assert perplexity(model, tokens, T=16, B=2, max_windows=None) == pytest.approx(
        perplexity(model, tokens, T=16, B=5, max_windows=99), rel=1e-6)


def test_save_and_load_round_trip_with_tied_embeddings(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(L=1, D=32, N=2, K=1, H=16, F=64, S_max=64, tie_embeddings=True, name="tied")
    model = round_weights_(Transformer(cfg)).eval()  # weights already fp16-exact
    path = save_checkpoint(model, tmp_path / "tied", {"note": "test"})
    loaded = load_checkpoint(path)
    assert loaded.cfg == cfg and load_meta(path)["note"] == "test"
    assert loaded.lm_head.weight is loaded.tok_emb.weight  # still tied after loading
    x = torch.randint(0, 256, (2, 10))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert load_checkpoint(tmp_path / "tied.safetensors", dtype=torch.bfloat16).lm_head.weight.dtype == torch.bfloat16
    assert load_checkpoint(path, S_max=128).cfg.S_max == 128
    with pytest.raises(FileNotFoundError, match="Known checkpoints"):
        load_checkpoint("no-such-model")


def test_expected_checkpoints_exist_and_fit_the_budget():
    names = set(list_checkpoints())
    assert EXPECTED <= names, f"missing {EXPECTED - names}: run python -m lecture_lib.train"
    total = sum(p.stat().st_size for p in checkpoint_dir().glob("*.safetensors"))
    assert total <= 25e6
    assert (checkpoint_dir() / "README.md").is_file()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_checkpoint_reproduces_recorded_perplexity(name):
    card = load_meta(name)
    model = load_checkpoint(name)
    assert model.cfg == ModelConfig.from_dict(card["config"])
    p = card["eval_protocol"]
    ppl = perplexity(model, corpus.heldout_tokens(), T=p["T"], B=p["B"], max_windows=p["max_windows"])
    assert ppl == pytest.approx(card["heldout_ppl"], rel=1e-3)


def test_quality_ordering():
    cards = {n: load_meta(n) for n in EXPECTED}
    target, draft = cards["target"], cards["draft"]
    assert draft["num_params"] * 8 < target["num_params"]  # "much smaller"
    assert draft["heldout_ppl"] > target["heldout_ppl"]
    for name, card in cards.items():
        # Far from the no-context baseline (about 27 bytes of "choice" per byte).
        assert card["heldout_ppl"] < card["unigram_ppl"] / 3, name
        assert card["heldout_ppl_full"] < card["unigram_ppl"] / 3, name


def test_gqa_family_differs_only_in_K():
    family = {8: load_meta("gqa-k8"), 2: load_meta("gqa-k2"), 1: load_meta("gqa-k1")}
    assert load_meta("gqa-k2")["name"] == "target"
    assert load_checkpoint("gqa-k2").cfg.K == 2
    drop = ("K", "name")
    base = {k: v for k, v in family[2]["config"].items() if k not in drop}
    for K, card in family.items():
        cfg = card["config"]
        assert cfg["K"] == K and cfg["N"] == 8 and {8: cfg["N"], 2: cfg["N"] // 4, 1: 1}[K] == K
        assert {k: v for k, v in cfg.items() if k not in drop} == base
        # Equal training budget: same steps, batch, window, rate schedule, seed, hence tokens.
        assert card["training"] == family[2]["training"]
