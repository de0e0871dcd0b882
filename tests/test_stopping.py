"""Generation stops a sequence at its EOS token or at its own token limit, on every path, and
what it produced before stopping is exactly what an unstopped run produces."""
import copy

import pytest
import torch

from lecture_lib import ModelConfig, Transformer
from lecture_lib.decode import FastGenerator, generate_cached, generate_naive

CFG = ModelConfig(L=2, D=32, N=4, K=2, H=8, F=64, V=13, S_max=64)  # a small vocabulary: EOS comes soon


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(3)
    model = Transformer(CFG).eval()
    prompt = torch.randint(0, CFG.V, (4, 5))
    free = generate_cached(model, prompt, 30).tokens  # no stopping: the reference
    # an EOS that some sequences produce early and (if possible) one never produces
    firsts = {int(t): [i for i, x in enumerate(row) if x == t][0] for row in free for t in row.unique()}
    eos = min(firsts, key=lambda t: sum(t in row for row in free.tolist()) * 100 - firsts[t])
    return model, prompt, free, eos


def expected(free, eos, limits, pad=0):
    rows, lengths, reasons = [], [], []
    for row, limit in zip(free.tolist(), limits):
        row = row[:limit]
        n = row.index(eos) + 1 if eos in row else len(row)
        lengths.append(n)
        reasons.append("stop" if eos in row else "length")
        rows.append(row[:n])
    return rows, lengths, reasons


PATHS = {
    "naive": lambda m, p, n, **kw: generate_naive(m, p, n, **kw),
    "cached": lambda m, p, n, **kw: generate_cached(m, p, n, **kw),
    "fast": lambda m, p, n, **kw: FastGenerator(copy.deepcopy(m), B=p.shape[0], S_max=40).generate(
        p, n, check_every=4, **kw),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_eos_and_per_sequence_limits(setup, path):
    model, prompt, free, eos = setup
    limits = [30, 12, 7, 30]
    out = PATHS[path](model, prompt, limits, eos_id=eos, pad_id=1)
    rows, lengths, reasons = expected(free, eos, limits)
    assert any(r == "stop" for r in reasons) and any(r == "length" for r in reasons)  # the test bites
    assert out.sequences() == rows
    assert out.lengths == lengths and out.finish_reasons == reasons
    assert out.tokens.shape[1] == max(lengths) or path == "fast"  # plain paths end with the last sequence
    for row, n in zip(out.tokens.tolist(), lengths):
        assert all(t == 1 for t in row[n:])  # padded after the end


@pytest.mark.parametrize("path", list(PATHS))
def test_without_stopping_every_sequence_runs_to_its_limit(setup, path):
    model, prompt, free, _ = setup
    out = PATHS[path](model, prompt, 20)
    assert torch.equal(out.tokens, free[:, :20])
    assert out.finish_reasons == ["length"] * 4 and out.lengths == [20] * 4


def test_the_loop_ends_when_every_sequence_has_stopped(setup):
    model, prompt, free, eos = setup
    rows, lengths, _ = expected(free, eos, [30] * 4)
    out = generate_cached(model, prompt, 30, eos_id=eos)
    assert len(out.token_times) == max(lengths) < 30 or max(lengths) == 30
    fast = FastGenerator(copy.deepcopy(model), B=4, S_max=40).generate(prompt, 30, eos_id=eos, check_every=1)
    assert fast.tokens.shape[1] == max(lengths)  # checked every step: stops right after the last EOS


def test_finished_sequences_cost_no_sampling(setup, monkeypatch):
    """The plain path samples only the sequences still running."""
    import lecture_lib.decode.plain as g

    model, prompt, _, _ = setup
    sizes = []
    real = g.sample
    monkeypatch.setattr(g, "sample", lambda logits, *a, **k: sizes.append(logits.shape[0]) or real(logits, *a, **k))
    g.generate_cached(model, prompt, [3, 1, 2, 3])
    assert sizes == [4, 3, 2]
