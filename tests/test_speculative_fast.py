"""The fast speculative path (static caches, the round as one function, a CUDA graph on a GPU)
computes what the readable one does: the target's own greedy tokens, the target's distribution
when sampled (and a wrong residual is caught), alpha = 1 - TV; bad input is refused clearly."""
import math

import pytest
import torch

from lecture_lib.checkpoints import load_checkpoint
from lecture_lib.config import get_config
from lecture_lib.decode import generate_cached
from lecture_lib.decode.speculative import NGramDraft, expected_tokens_per_call, layer_skip_draft
from lecture_lib.measure.bench import build_model
from lecture_lib.decode.speculative_fast import FastSpeculativeGenerator

PROMPT = b"def __init__(self, name):\n    self."


@pytest.fixture(scope="module")
def trained():
    return load_checkpoint("target"), load_checkpoint("draft")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_greedy_equals_the_targets_own_greedy_tokens(trained, dtype):
    target, draft = (m.to(dtype) for m in trained)
    prompt = torch.tensor([list(PROMPT)])
    reference = generate_cached(target, prompt, 40).tokens
    for name, make in {"small model": lambda: draft, "layer skip": lambda: layer_skip_draft(target, 1)}.items():
        for k in range(1, 9):
            out = FastSpeculativeGenerator(target, make(), k=k, S_max=128).generate(prompt, 40)
            assert torch.equal(out.tokens, reference), f"{name}, k={k}, {dtype}"
            assert 1 + sum(a + 1 for a in out.accepted) >= 40  # the prefill gives the first token
            assert out.target_calls == len(out.accepted)
    for m in trained:
        m.float()


def test_compiled_forwards_trace_whole_and_give_the_same_tokens(trained):
    """compile: both models' forwards through torch.compile (fullgraph, so a graph break fails
    here); aot_eager checks the tracing without Inductor's code generation, which the GPU test
    below covers. set_k keeps the compiled forwards (the target's token count is dynamic)."""
    import copy
    target, draft = (copy.deepcopy(m) for m in trained)  # compile fuses their projections
    prompt = torch.tensor([list(PROMPT)])
    reference = generate_cached(trained[0], prompt, 24).tokens
    spec = FastSpeculativeGenerator(target, draft, k=2, S_max=128, compile="aot_eager")
    for k in (2, 5):
        spec.set_k(k)
        assert torch.equal(spec.generate(prompt, 24).tokens, reference), f"k={k}"
    with pytest.raises(ValueError, match="positive integer"):
        spec.set_k(0)


def test_a_generator_is_reusable_and_rounds_never_overshoot(trained):
    target, draft = trained
    spec = FastSpeculativeGenerator(target, draft, k=4, S_max=128)
    prompt = torch.tensor([list(PROMPT)])
    first, second = spec.generate(prompt, 30), spec.generate(prompt, 17)
    assert torch.equal(second.tokens, first.tokens[:, :17])
    made = 1 + sum(a + 1 for a in second.accepted)  # the prefill's token, then each round's
    assert made >= 17 and made - (second.accepted[-1] + 1) < 17  # the last round was needed


def _marginal(target, prompt):
    with torch.no_grad():
        q1 = torch.softmax(target(torch.tensor([prompt]))[0, -1].double(), -1)
        q2 = torch.softmax(target(torch.tensor([prompt + [x] for x in range(256)]))[:, -1].double(), -1)
    return (q1[:, None] * q2).sum(0)  # P(x_2) = sum_x1 q(x1) q(x2 | x1)


def test_sampled_first_speculative_token_matches_the_target(trained, monkeypatch):
    """As for the readable path: the second token (the first a round produces) drawn 1,500 times,
    seeded, against the target's exact marginal by a chi-square test over the 12 likeliest tokens
    plus the rest (12 degrees of freedom: 26.2 is the 99th percentile). With the classic bug
    (residual = q) the same test fails."""
    target, _ = trained
    prompt = list(b"The cache stores the")
    marginal = _marginal(target, prompt)
    top = marginal.argsort(descending=True)[:12]
    spec = FastSpeculativeGenerator(target, layer_skip_draft(target, 1), k=3, S_max=64, temperature=1.0)

    def chi_square(n=1500):
        torch.manual_seed(0)
        counts = torch.zeros(256)
        for _ in range(n):
            counts[spec.generate(torch.tensor([prompt]), 2).tokens[0, 1]] += 1
        observed = torch.cat([counts[top], (n - counts[top].sum())[None]])
        expected = torch.cat([marginal[top], (1 - marginal[top].sum())[None]]) * n
        return float(((observed - expected) ** 2 / expected).sum())

    assert chi_square() < 26.2
    monkeypatch.setattr(FastSpeculativeGenerator, "_residual", staticmethod(lambda p, q: q))
    assert chi_square() > 26.2


def test_acceptance_rate_is_one_minus_the_total_variation(trained):
    target, draft = trained
    torch.manual_seed(0)
    out = FastSpeculativeGenerator(target, draft, k=4, S_max=512, temperature=1.0).generate(
        torch.tensor([list(PROMPT)]), 400)
    n = len(out.accept_flags)
    alpha, predicted = out.acceptance_rate, sum(out.accept_probs) / n
    assert n > 150 and 0.05 < alpha < 0.95
    assert abs(alpha - predicted) < 3 * math.sqrt(predicted * (1 - predicted) / n)


def test_simulated_acceptance_follows_the_given_alpha(trained):
    """The benchmark's instrument: with simulate_alpha the measured acceptance is that alpha
    (within 3 standard errors), whatever the models say."""
    target, draft = trained
    torch.manual_seed(0)
    out = FastSpeculativeGenerator(target, draft, k=4, S_max=512, simulate_alpha=0.8).generate(
        torch.tensor([list(PROMPT)]), 400)
    n = len(out.accept_flags)
    assert abs(out.acceptance_rate - 0.8) < 3 * math.sqrt(0.8 * 0.2 / n)


def test_bad_input_is_refused_clearly(trained):
    target, draft = trained
    with pytest.raises(ValueError, match="positive integer"):
        FastSpeculativeGenerator(target, draft, k=0)
    with pytest.raises(TypeError, match="NGramDraft"):
        FastSpeculativeGenerator(target, NGramDraft(256), k=2)
    from lecture_lib.config import get_config
    from lecture_lib.model import Transformer
    other = Transformer(get_config("tiny").replace(V=300))
    with pytest.raises(ValueError, match="vocabulary"):
        FastSpeculativeGenerator(target, other, k=2)
    with pytest.raises(ValueError, match="dtype"):
        FastSpeculativeGenerator(target, load_checkpoint("draft").double(), k=2)
    with pytest.raises(ValueError, match="S_max"):
        FastSpeculativeGenerator(target, draft, k=4, S_max=40).generate(torch.tensor([list(PROMPT)]), 10)
    with pytest.raises(ValueError, match=r"\[1 T\]"):
        FastSpeculativeGenerator(target, draft, k=2, S_max=64).generate(torch.zeros(2, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="simulate_alpha"):
        FastSpeculativeGenerator(target, draft, k=2, simulate_alpha=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CUDA-graph path)")
def test_graph_replay_equals_the_eager_round_on_a_gpu(trained):
    """The captured graph computes exactly what the eager round does (same kernels, fp32)."""
    target, draft = (m.cuda() for m in trained)
    prompt = torch.tensor([list(PROMPT)])
    eager = FastSpeculativeGenerator(target, draft, k=4, S_max=128, graphs=False).generate(prompt, 40)
    graph = FastSpeculativeGenerator(target, draft, k=4, S_max=128, graphs=True).generate(prompt, 40)
    assert torch.equal(eager.tokens, graph.tokens) and eager.accepted == graph.accepted
    assert torch.equal(graph.tokens, generate_cached(target, prompt.cuda(), 40).tokens.cpu())
    for m in trained:
        m.cpu()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (Inductor's kernels in the round's graph)")
def test_compiled_round_on_a_gpu_gives_the_targets_greedy_tokens(trained):
    """compile=True: Inductor-compiled forwards captured in the round's CUDA graph, fp32, k changed
    with set_k (the target compiled once, with a dynamic token count)."""
    import copy
    target, draft = (copy.deepcopy(m).cuda() for m in trained)
    prompt = torch.tensor([list(PROMPT)])
    reference = generate_cached(trained[0].cuda(), prompt.cuda(), 40).tokens.cpu()
    spec = FastSpeculativeGenerator(target, draft, k=2, S_max=128, compile=True)
    for k in (2, 4):
        spec.set_k(k)
        assert torch.equal(spec.generate(prompt, 40).tokens, reference), f"k={k}"
    for m in trained:
        m.cpu()


def test_simulated_acceptance_is_drawn_at_alpha_and_fixed_by_the_seed(trained):
    """simulate_alpha (benchmarks): the flags come from the seed, so a repeat is the same run, and
    their rate is alpha within sampling error (900 tokens at k = 1: about 530 checks, sd 0.02;
    the bound is 4 sd)."""
    target, draft = trained
    spec = FastSpeculativeGenerator(target, draft, k=1, S_max=1000, simulate_alpha=0.7)
    prompt = torch.tensor([list(PROMPT)])
    a, b = (spec.generate(prompt, 900, seed=3) for _ in range(2))
    assert a.accepted == b.accepted
    assert abs(a.acceptance_rate - 0.7) < 0.08, a.acceptance_rate
    spec.set_k(4)
    c = spec.generate(prompt, 900, seed=3)
    assert abs(c.acceptance_rate - 0.7) < 0.08, c.acceptance_rate
    assert abs(c.tokens_per_call - expected_tokens_per_call(0.7, 4)) < 0.35, c.tokens_per_call


def test_set_draft_keeps_the_target_and_gives_the_new_drafts_run(trained):
    """set_draft: the same greedy tokens (the target's) and the acceptances of a generator built
    with that draft from the start."""
    target, draft = trained
    prompt = torch.tensor([list(PROMPT)])
    skip = layer_skip_draft(target, 1)
    spec = FastSpeculativeGenerator(target, draft, k=3, S_max=128)
    spec.set_draft(skip)
    got = spec.generate(prompt, 40)
    fresh = FastSpeculativeGenerator(target, skip, k=3, S_max=128).generate(prompt, 40)
    assert torch.equal(got.tokens, fresh.tokens) and got.accepted == fresh.accepted
    with pytest.raises(ValueError, match="vocabulary"):
        spec.set_draft(build_model(get_config("tiny", V=300), "cpu", torch.float32))
