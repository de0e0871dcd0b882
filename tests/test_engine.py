"""The engine's greedy tokens equal solo decoding of each request, whatever the batching,
block size, prefix caching or preemption; and nothing leaks."""
import random

import pytest
import torch

from lecture_lib.checkpoints import load_checkpoint
from lecture_lib.decode import generate_cached
from lecture_lib.serving import Engine


@pytest.fixture(scope="module")
def model():
    return load_checkpoint("target").double()  # float64: batched and solo numerics cannot flip a tie


def workload(n=6, seed=0):
    rng = random.Random(seed)
    shared = [rng.randrange(256) for _ in range(20)]  # a shared prefix, so prefix caching gets hits
    prompts = [shared[:rng.randrange(1, 20)] + [rng.randrange(256) for _ in range(rng.randrange(1, 30))]
               for _ in range(n)]
    return prompts, [rng.randrange(1, 40) for _ in range(n)]


def solo(model, prompt, n):
    return generate_cached(model, torch.tensor([prompt]), n).tokens[0].tolist()


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("block_size,num_blocks,prefix,budget", [
    (16, 64, True, 256), (1, 600, True, 256), (7, 64, False, 256), (4, 24, True, 256),
    (16, 64, True, 2), (7, 64, True, 3), (4, 24, False, 3)])
def test_equal_to_solo_decoding(model, block_size, num_blocks, prefix, budget, packed):
    """Block sizes 1, 7 (dividing no prompt length) and 16; prefix caching on and off; a pool that
    forces preemption (24 blocks of 4); token budgets of 2 and 3 that force chunked prefill; the
    padded reference path and the packed one (PagedAttention per token, in PyTorch on the CPU)."""
    prompts, limits = workload()
    engine = Engine(model, num_blocks=num_blocks, block_size=block_size, max_num_seqs=4,
                    max_tokens_per_step=budget, enable_prefix_caching=prefix, packed=packed)
    engine.blocks.debug = True
    outputs = engine.generate(prompts, limits)
    for prompt, n, out in zip(prompts, limits, outputs):
        assert out == solo(model, prompt, n)
    assert not engine.has_work and engine.blocks.num_free_blocks == num_blocks
    assert all(b.ref_count == 0 for b in engine.blocks.blocks)
    if num_blocks == 24:  # 24 blocks of 4 tokens: one request fits, four at once do not: preemption
        assert engine.preemptions > 0


def test_bad_requests_are_refused_and_the_rest_still_served(model):
    engine = Engine(model, num_blocks=8, block_size=4)
    with pytest.raises(ValueError, match="max_tokens"):
        engine.add_request([1, 2], 0)
    with pytest.raises(ValueError, match="could never finish"):
        engine.add_request([1] * 30, 10)
    with pytest.raises(ValueError, match="S_max"):
        engine.add_request([1] * 1020, 10)
    with pytest.raises(ValueError, match="max_tokens_per_step"):
        Engine(model, num_blocks=8, block_size=4, max_tokens_per_step=0).add_request([1, 2, 3], 5)
    assert engine.generate([[5, 6, 7]], 5) == [solo(model, [5, 6, 7], 5)]


def test_n_samples_share_the_prompt_and_copy_on_write(model):
    """n = 3 greedy samples of each prompt: all equal solo decoding, which also proves the
    copy-on-write copies (the samples share the prompt's last, partial block); at temperature 1
    (seeded) the samples differ. Block size 7 so that every prompt ends inside a shared block."""
    prompts, limits = workload(n=3, seed=1)
    engine = Engine(model, num_blocks=64, block_size=7, max_num_seqs=8)
    engine.blocks.debug = True
    outs = engine.generate(prompts, limits, n=3)
    for prompt, n_new, samples in zip(prompts, limits, outs):
        assert len(samples) == 3 and all(s == solo(model, prompt, n_new) for s in samples)
    assert engine.blocks.num_free_blocks == 64 and engine.copies > 0
    torch.manual_seed(0)
    sampled = Engine(model, num_blocks=64, block_size=7).generate([prompts[0]], 30, temperature=1.0, n=3)[0]
    assert len({tuple(s) for s in sampled}) > 1


def test_stop_tokens_and_ignore_eos(model):
    prompt = [5, 6, 7]
    ref = solo(model, prompt, 20)
    stop = ref[4]
    engine = Engine(model, num_blocks=32, block_size=4)
    req = engine.add_request(prompt, 20, stop=[stop])
    ignoring = engine.add_request(prompt, 20, eos_id=stop, ignore_eos=True)
    while engine.has_work:
        engine.step()
    assert req.output == ref[:ref.index(stop) + 1] and req.finish_reason == "stop"
    assert ignoring.output == ref and ignoring.finish_reason == "length"
    with pytest.raises(ValueError, match="n \\(samples"):
        engine.add_request(prompt, 5, n=0)
    with pytest.raises(ValueError, match="Stop/EOS"):
        engine.add_request(prompt, 5, stop=[10**6])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the fast path: Triton kernel, CUDA graphs)")
@pytest.mark.parametrize("budget", [256, 3])
def test_fast_path_on_gpu_equals_solo_decoding(budget):
    """The packed path with the Triton kernel, every step replayed from a CUDA graph (decode
    buckets 1, 2, 4, 8; mixed-step token buckets up to the budget; padded with the null block),
    float32: the same tokens as solo decoding on the GPU, also under preemption and chunked
    prefill."""
    model = load_checkpoint("target").cuda()
    prompts, limits = workload(n=8)
    engine = Engine(model, num_blocks=24, block_size=4, max_num_seqs=8, max_tokens_per_step=budget)
    assert engine.runner.graphs and engine.runner.packed
    engine.blocks.debug = True
    outputs = engine.generate(prompts, limits)
    for prompt, n, out in zip(prompts, limits, outputs):
        assert out == generate_cached(model, torch.tensor([prompt], device="cuda"), n).tokens[0].tolist()
    assert engine.preemptions > 0 and engine.blocks.num_free_blocks == 24
    counts = engine.runner.counts
    assert counts["decode graph"] > 0 and counts["mixed graph"] > 0 and counts["eager"] == 0, counts


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the compiled decode step)")
def test_compiled_fast_path_on_gpu_equals_solo_decoding():
    """The decode step through torch.compile (projections fused), graphs per bucket: same tokens."""
    model = load_checkpoint("target").cuda()
    prompts, limits = workload(n=8)
    expected = [generate_cached(model, torch.tensor([p], device="cuda"), n).tokens[0].tolist()
                for p, n in zip(prompts, limits)]
    engine = Engine(model, num_blocks=64, block_size=16, max_num_seqs=8, compile=True)
    assert engine.generate(prompts, limits) == expected
