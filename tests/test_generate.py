import pytest
import torch

from lecture_lib import ModelConfig, Transformer
from lecture_lib.cache import KVCache
from lecture_lib.decode.plain import generate, generate_cached, generate_naive
from lecture_lib.decode.sampling import sample


def model_with(K, **kw):
    cfg = ModelConfig(**{"L": 2, "D": 64, "N": 8, "K": K, "H": 8, "F": 96, "V": 97, "S_max": 80, **kw})
    return Transformer(cfg).eval()


@pytest.mark.parametrize("K", [8, 2, 1])  # MHA, GQA, MQA
def test_naive_and_cached_greedy_tokens_are_identical(K):
    model = model_with(K)
    prompt = torch.randint(0, 97, (3, 11))
    naive = generate_naive(model, prompt, 40)
    cached = generate_cached(model, prompt, 40)
    assert naive.tokens.shape == (3, 40)
    assert torch.equal(naive.tokens, cached.tokens)


def test_sampling_is_reproducible_and_same_for_both_paths():
    model = model_with(2)
    prompt = torch.randint(0, 97, (2, 5))
    runs = [fn(model, prompt, 20, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(1))
            for fn in (generate_naive, generate_cached)]
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    greedy = generate(model, prompt, 20)
    assert not torch.equal(runs[0].tokens, greedy.tokens)  # temperature actually samples


def test_top_k_only_picks_among_the_k_best():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]]).repeat(500, 1)
    drawn = sample(logits, temperature=10.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1, 2}
    assert sample(logits, temperature=0).tolist() == [1] * 500


def test_timestamps_measure_ttft_and_latency():
    model = model_with(2)
    gen = generate_cached(model, torch.randint(0, 97, (1, 30)), 10)
    assert len(gen.token_times) == 10 and gen.ttft > 0
    assert all(b > a for a, b in zip(gen.token_times, gen.token_times[1:]))
    assert len(gen.inter_token_latencies) == 9
    assert gen.end_to_end == gen.token_times[-1] and gen.throughput > 0 and gen.decode_tokens_per_s > 0


def test_streaming_callback_sees_every_token_in_order():
    model = model_with(2)
    seen = []
    gen = generate_cached(model, torch.randint(0, 97, (2, 4)), 6, on_token=lambda i, ids, t: seen.append((i, ids)))
    assert [i for i, _ in seen] == list(range(6))
    assert [ids for _, ids in seen] == gen.tokens.T.tolist()


def test_clear_errors_for_bad_requests():
    model = model_with(2, S_max=32)
    with pytest.raises(ValueError, match=r"prompt \(30 tokens\) plus max_new_tokens \(5\) need 35 positions"):
        generate_cached(model, torch.zeros(1, 30, dtype=torch.long), 5)
    with pytest.raises(ValueError, match=r"prompt\[None\]"):
        generate_naive(model, torch.zeros(30, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="KV cache holds S_max = 16"):
        generate_cached(model, torch.zeros(1, 10, dtype=torch.long), 10, cache=KVCache.for_model(model, 1, 16))
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate(model, torch.zeros(1, 3, dtype=torch.long), 2, temperature=-1)
