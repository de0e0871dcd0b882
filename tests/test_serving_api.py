"""Static batching, abort, timestamps, the offline LLM API and the simulator (the engine's own
scheduler on a virtual clock)."""
import math
import random

import pytest
import torch

from lecture_lib import analysis
from lecture_lib.checkpoints import load_checkpoint
from lecture_lib.config import get_config
from lecture_lib.decode import generate_cached
from lecture_lib.serving import LLM, Engine, SamplingParams, SimulatedEngine, StepCost, summarize
from lecture_lib.serving.simulator import nanovllm_workload


@pytest.fixture(scope="module")
def model():
    return load_checkpoint("target").double()


def solo(model, prompt, n):
    return generate_cached(model, torch.tensor([prompt]), n).tokens[0].tolist()


def prompts_and_limits(n=5, seed=1):
    rng = random.Random(seed)
    return ([[rng.randrange(256) for _ in range(rng.randrange(3, 20))] for _ in range(n)],
            [rng.randrange(2, 25) for _ in range(n)])


def test_static_batching_admits_nobody_until_the_batch_is_done(model):
    prompts, limits = prompts_and_limits()
    engine = Engine(model, num_blocks=64, block_size=4, max_num_seqs=2, policy="static")
    reqs = [engine.add_request(p, m) for p, m in zip(prompts, limits)]
    while engine.has_work:
        engine.step()
    for r, p, m in zip(reqs, prompts, limits):
        assert r.output == solo(model, p, m)
    for first, second in [(0, 2), (2, 4)]:  # batches {0, 1}, {2, 3}, {4}
        batch_end = max(reqs[first].finish_time, reqs[first + 1].finish_time)
        assert reqs[second].token_times[0] > batch_end
    steps_with = [{rid for rid, _ in rec.batch} for rec in engine.log]
    assert all(ids <= {0, 1} or ids <= {2, 3} or ids <= {4} for ids in steps_with)
    with pytest.raises(ValueError, match="policy"):
        Engine(model, policy="fifo")


def test_continuous_batching_refills_a_slot_the_next_step(model):
    prompts, limits = prompts_and_limits()
    engine = Engine(model, num_blocks=64, block_size=4, max_num_seqs=2)
    reqs = [engine.add_request(p, m) for p, m in zip(prompts, limits)]
    while engine.has_work:
        engine.step()
    first_done = min(reqs[:2], key=lambda r: r.finish_time)
    step_done = next(i for i, rec in enumerate(engine.log) if rec.end >= first_done.finish_time)
    assert 2 in {rid for rid, _ in engine.log[step_done + 1].batch}  # request 2 took the freed slot at once


def test_timestamps_are_consistent(model):
    prompts, limits = prompts_and_limits()
    engine = Engine(model, num_blocks=64, block_size=4, max_num_seqs=3)
    reqs = [engine.add_request(p, m) for p, m in zip(prompts, limits)]
    while engine.has_work:
        engine.step()
    for r in reqs:
        assert len(r.token_times) == len(r.output) and r.token_times == sorted(r.token_times)
        assert r.arrival_time <= r.token_times[0] <= r.finish_time and r.ttft > 0
    # each step's record spans the step: starts no earlier than the previous one ended, and
    # every token sampled in it lies within it (a step's time is what notebook 10 reports)
    for before, rec in zip(engine.log, engine.log[1:]):
        assert before.end <= rec.start <= rec.end
    for r in reqs:
        for t in r.token_times:
            assert any(rec.start <= t <= rec.end for rec in engine.log)
    summary = engine.step_summary()
    prefill = [rec for rec in engine.log if any(n > 1 for _, n in rec.batch)]
    assert summary["prefill"]["steps"] == len(prefill) > 0
    assert summary["decode"]["steps"] == len(engine.log) - len(prefill) > 0
    assert summary["prefill"]["mean_tokens"] == sum(n for rec in prefill for _, n in rec.batch) / len(prefill)
    durations = [(rec.end - rec.start) * 1e3 for rec in prefill]
    assert min(durations) <= summary["prefill"]["median_ms"] <= max(durations)


def test_abort_frees_blocks_and_the_others_finish(model):
    prompts, limits = prompts_and_limits()
    engine = Engine(model, num_blocks=64, block_size=4, max_num_seqs=4)
    reqs = [engine.add_request(p, 20) for p in prompts[:3]]
    for _ in range(3):
        engine.step()
    before = engine.blocks.num_free_blocks
    engine.abort(reqs[1])
    assert reqs[1].finish_reason == "abort" and engine.blocks.num_free_blocks > before
    while engine.has_work:
        engine.step()
    assert reqs[0].output == solo(model, prompts[0], 20) and reqs[2].output == solo(model, prompts[2], 20)
    assert engine.blocks.num_free_blocks == 64
    engine.abort(reqs[0])  # finished already: nothing happens
    assert reqs[0].finish_reason == "length"


def test_llm_api(model):
    prompts, limits = prompts_and_limits(3)
    llm = LLM(model, num_blocks=64, block_size=4)
    outs = llm.generate(prompts, [SamplingParams(max_tokens=m) for m in limits], progress=False)
    assert [o.token_ids for o in outs] == [solo(model, p, m) for p, m in zip(prompts, limits)]
    assert all(o.finish_reason == "length" and o.text is None and o.ttft > 0 for o in outs)
    two = llm.generate(prompts[:1], SamplingParams(max_tokens=5, temperature=1.0, n=2), progress=False)[0]
    assert len(two) == 2 and all(len(c.token_ids) == 5 for c in two)
    with pytest.raises(TypeError, match="tokenizer"):
        llm.generate(["some text"], progress=False)
    with pytest.raises(ValueError, match="SamplingParams"):
        llm.generate(prompts, [SamplingParams()], progress=False)


def test_simulated_step_times_are_the_roofline():
    cfg = get_config("llama3.2-1b-like")
    cost = StepCost(cfg, memory_bandwidth=4.8e12, flops_per_second=math.inf)
    kv = analysis.kv_bytes_per_token(cfg)
    weights = (analysis.linear_params(cfg) + analysis.norm_params(cfg)) * 2
    B, S = 64, 1000  # decodes at position S - 1: each reads S keys and writes one
    assert cost.seconds([(S - 1, 1)] * B) == pytest.approx((weights + B * S * kv + B * kv) / 4.8e12)
    compute = StepCost(cfg, memory_bandwidth=math.inf, flops_per_second=1e15)  # a 512-token prefill
    flops = 2 * analysis.linear_params(cfg) * 512 + 4 * cfg.L * cfg.N * cfg.H * (512 * 513 // 2)
    assert compute.seconds([(0, 512)]) == pytest.approx(flops / 1e15)


def test_simulator_clock_with_a_known_step_time():
    cfg = get_config("tiny")
    fixed = StepCost(cfg, memory_bandwidth=math.inf, flops_per_second=math.inf, overhead=0.01)
    sim = SimulatedEngine(cfg, fixed, num_blocks=16, block_size=4, max_tokens_per_step=4)
    (r,) = sim.run([(0.5, list(range(10)), 5)])  # arrives at 0.5; prefill 4 + 4 + 2, sample at step 3
    assert r.ttft == pytest.approx(0.03) and r.finish_time == pytest.approx(0.5 + 0.07)
    assert summarize([r])["tpot_mean_s"] == pytest.approx(0.01)


def test_simulator_runs_the_engines_own_schedule(model):
    """Same workload, same settings: the simulator's steps hold exactly the real engine's batches."""
    prompts, limits = prompts_and_limits(6, seed=3)
    kw = dict(num_blocks=10, block_size=4, max_num_seqs=3, max_tokens_per_step=8, enable_prefix_caching=False)
    real = Engine(model, **kw)
    for p, m in zip(prompts, limits):
        real.add_request(p, m, ignore_eos=True)
    while real.has_work:
        real.step()
    sim = SimulatedEngine(model.cfg, StepCost.for_gpu(model.cfg, "H200"), **kw)
    sim.run([(0.0, p, m) for p, m in zip(prompts, limits)])
    assert [rec.batch for rec in sim.log] == [rec.batch for rec in real.log]
    assert sim.preemptions == real.preemptions > 0


def test_nanovllm_workload_is_theirs():
    w = nanovllm_workload()
    assert len(w) == 256 and sum(m for _, m in w) == 133_966
    assert all(100 <= len(p) <= 1024 and 100 <= m <= 1024 for p, m in w)
