"""Speculative sampling is exact: by enumeration of every random branch (tiny models, float64),
statistically at temperature 1 on the trained checkpoints, and token for token when greedy. A
wrong residual must be caught by the same checks."""
import math

import pytest
import torch

from lecture_lib.checkpoints import load_checkpoint
from lecture_lib.config import ModelConfig
from lecture_lib.decode import generate_cached
from lecture_lib.decode import speculative as spec
from lecture_lib.decode.speculative import (ModelDraft, NGramDraft, enumerate_outcomes, expected_speedup,
                                            expected_tokens_per_call, layer_skip_draft, speculative_generate)
from lecture_lib.model import Transformer


def tiny(V=3, L=2, seed=0, dtype=torch.float64, S_max=32):
    torch.manual_seed(seed)
    m = Transformer(ModelConfig(L=L, D=16, N=2, K=1, H=8, F=24, V=V, S_max=S_max)).to(dtype).eval()
    with torch.no_grad():  # 3x larger weights: distributions far from uniform (and from each other)
        for p in m.parameters():
            p.mul_(3)
    return m


def target_sequence_probs(target, prompt, n, temperature):
    """P(x_1 .. x_n) under the target alone, for every sequence of n tokens."""
    V = target.cfg.V
    probs = {(): 1.0}
    for _ in range(n):
        nxt = {}
        for seq, p in probs.items():
            with torch.no_grad():
                logits = target(torch.tensor([prompt + list(seq)]))[0, -1]
            q = spec.distribution(logits, temperature)
            for x in range(V):
                if q[x] > 0:
                    nxt[seq + (x,)] = p * float(q[x])
        probs = nxt
    return probs


def max_error(leaves, exact):
    return max(abs(leaves.get(s, 0.0) - exact.get(s, 0.0)) for s in set(leaves) | set(exact))


@pytest.mark.parametrize("k,n", [(1, 3), (2, 3), (3, 2)])
def test_every_output_sequence_has_the_targets_probability(k, n):
    target, draft, prompt = tiny(seed=0), tiny(seed=1, L=1), [0, 2, 1]
    run = lambda choose: tuple(speculative_generate(  # noqa: E731
        target, draft, torch.tensor([prompt]), n, k=k, temperature=1.0, choose=choose).tokens[0].tolist())
    leaves = enumerate_outcomes(run)
    exact = target_sequence_probs(target, prompt, n, 1.0)
    assert abs(sum(leaves.values()) - 1) < 1e-12
    assert max_error(leaves, exact) < 1e-12


def test_enumeration_catches_the_classic_residual_bug(monkeypatch):
    """Sampling the replacement from q instead of normalize(max(q - p, 0)) over-weights the tokens
    the draft already proposed: the enumeration must see it."""
    target, draft, prompt = tiny(seed=0), tiny(seed=1, L=1), [0, 2, 1]
    monkeypatch.setattr(spec, "residual", lambda p, q: q)
    run = lambda choose: tuple(speculative_generate(  # noqa: E731
        target, draft, torch.tensor([prompt]), 2, k=2, temperature=1.0, choose=choose).tokens[0].tolist())
    assert max_error(enumerate_outcomes(run), target_sequence_probs(target, prompt, 2, 1.0)) > 1e-3


def test_ngram_draft_is_exact_too():
    target, prompt = tiny(seed=0), [0, 1, 0, 1, 2]
    run = lambda choose: tuple(speculative_generate(  # noqa: E731
        target, NGramDraft(3), torch.tensor([prompt]), 3, k=2, temperature=1.0, choose=choose).tokens[0].tolist())
    assert max_error(enumerate_outcomes(run), target_sequence_probs(target, prompt, 3, 1.0)) < 1e-12


def test_the_lectures_two_token_example():
    """Vocab {A, B}: q = (0.8, 0.2), p = (0.4, 0.6). A drafted A is always kept (q/p = 2 > 1); a
    drafted B is kept with probability 0.2/0.6, else replaced by the residual, which is all A.
    P(A) = 0.4 + 0.6 * (1 - 1/3) = 0.8 = q(A)."""
    q = torch.tensor([[0.8, 0.2], [0.5, 0.5]], dtype=torch.float64)
    p = torch.tensor([[0.4, 0.6]], dtype=torch.float64)
    first = {}
    for d in (0, 1):
        leaves = enumerate_outcomes(lambda choose: (lambda a, nxt, _: (d,) if a else (nxt,))(*spec.verify([d], p, q, choose)))
        for token, prob in leaves.items():
            first[token] = first.get(token, 0.0) + float(p[0, d]) * prob
    assert first[(0,)] == pytest.approx(0.8, abs=1e-15) and first[(1,)] == pytest.approx(0.2, abs=1e-15)
    assert spec.residual(p[0], q[0]).tolist() == [1.0, 0.0]


@pytest.fixture(scope="module")
def trained():
    return load_checkpoint("target"), load_checkpoint("draft")


PROMPT = b"def __init__(self, name):\n    self."


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_greedy_equals_the_targets_own_greedy_tokens(trained, dtype):
    target, draft = (m.to(dtype) for m in trained)
    prompt = torch.tensor([list(PROMPT)])
    reference = generate_cached(target, prompt, 40).tokens
    drafts = {"small model": lambda: ModelDraft(draft), "layer skip": lambda: layer_skip_draft(target, 1),
              "n-gram": lambda: NGramDraft(256)}
    for name, make in drafts.items():
        for k in range(1, 9):
            got = speculative_generate(target, make(), prompt, 40, k=k)
            assert torch.equal(got.tokens, reference), f"{name}, k={k}, {dtype}"
    for m in trained:
        m.float()


def test_sampled_first_speculative_token_matches_the_target(trained, monkeypatch):
    """Temperature 1: the second token (the first one a round produces) is drawn 1,500 times
    (seeded) and its distribution compared with the target's exact marginal by a chi-square test
    over the 12 likeliest tokens plus the rest. The correct algorithm passes at p > 0.01; with the
    classic bug (residual = q) the same test fails, so the test can catch it. The draft is the
    target's first layer alone (layer skip): it is rejected often, so the residual matters."""
    target, _ = trained
    draft = layer_skip_draft(target, 1)
    prompt = list(b"The cache stores the")
    with torch.no_grad():
        q1 = torch.softmax(target(torch.tensor([prompt]))[0, -1].double(), -1)
        batch = torch.tensor([prompt + [x] for x in range(256)])
        q2 = torch.softmax(target(batch)[:, -1].double(), -1)
    marginal = (q1[:, None] * q2).sum(0)  # P(x_2) = sum_x1 q(x1) q(x2 | x1)
    top = marginal.argsort(descending=True)[:12]

    def chi_square(n=1500, seed=0):
        g = torch.Generator().manual_seed(seed)
        counts = torch.zeros(256)
        for _ in range(n):
            out = speculative_generate(target, draft, torch.tensor([prompt]), 2, k=3, temperature=1.0, generator=g)
            counts[out.tokens[0, 1]] += 1
        observed = torch.cat([counts[top], (n - counts[top].sum())[None]])
        expected = torch.cat([marginal[top], (1 - marginal[top].sum())[None]]) * n
        return float(((observed - expected) ** 2 / expected).sum())

    # chi-square with 12 degrees of freedom: 26.2 is its 99th percentile
    assert chi_square() < 26.2
    monkeypatch.setattr(spec, "residual", lambda p, q: q)
    assert chi_square() > 26.2


def test_acceptance_rate_is_one_minus_the_total_variation(trained):
    """alpha = E[1 - TV(p, q)] along the path: the measured acceptance rate must agree with the mean
    of 1 - TV over the checked positions within 3 standard errors."""
    target, draft = trained
    out = speculative_generate(target, draft, torch.tensor([list(PROMPT)]), 400, k=4, temperature=1.0,
                               generator=torch.Generator().manual_seed(0))
    n = len(out.accept_flags)
    alpha, predicted = out.acceptance_rate, sum(out.accept_probs) / n
    assert n > 150 and 0.05 < alpha < 0.95
    assert abs(alpha - predicted) < 3 * math.sqrt(predicted * (1 - predicted) / n)
    assert out.tokens_per_call == pytest.approx(sum(a + 1 for a in out.accepted) / out.target_calls)


def test_formulas():
    assert expected_tokens_per_call(0.0, 4) == 1 and expected_tokens_per_call(1.0, 4) == 5
    assert expected_tokens_per_call(0.8, 4) == pytest.approx(1 + 0.8 + 0.64 + 0.512 + 0.4096)
    assert expected_speedup(0.8, 4, 0.0) == expected_tokens_per_call(0.8, 4)
    assert expected_speedup(0.8, 4, 0.25) == pytest.approx(expected_tokens_per_call(0.8, 4) / 2)


def test_bad_input_is_refused_clearly(trained):
    target, draft = trained
    prompt = torch.tensor([list(PROMPT)])
    with pytest.raises(ValueError, match="vocabulary"):
        speculative_generate(target, tiny(V=100, dtype=torch.float32), prompt, 4)
    with pytest.raises(ValueError, match="positive integer"):
        speculative_generate(target, draft, prompt, 4, k=0)
    with pytest.raises(ValueError, match="S_max"):
        speculative_generate(target, draft, prompt, 1024 - prompt.shape[1] - 2, k=4)
    with pytest.raises(ValueError, match="dtype"):
        speculative_generate(target, load_checkpoint("draft").double(), prompt, 4)
    with pytest.raises(ValueError, match=r"\[1 T\]"):
        speculative_generate(target, draft, prompt.repeat(2, 1), 4)
    with pytest.raises(ValueError, match="n_layers"):
        layer_skip_draft(target, target.cfg.L)


def test_eos_stops_and_is_kept(trained):
    target, draft = trained
    prompt = torch.tensor([list(PROMPT)])
    ref = generate_cached(target, prompt, 30).tokens[0].tolist()
    eos = ref[5]
    out = speculative_generate(target, draft, prompt, 30, k=4, eos_id=eos)
    first = ref.index(eos)
    assert out.tokens[0].tolist() == ref[:first + 1] and out.generation.finish_reasons == ["stop"]
