"""Tests of lecture_lib.economics: the sourced facts load, the lecture's numbers come out, and the
cost model is the lecture's memory-bound model with a price (checked by hand-expanded formulas)."""
import pytest

from lecture_lib import analysis, get_config
from lecture_lib import economics as E
from lecture_lib.hardware import get_spec, load_specs

LLAMA2_13B = get_config("llama2-13b")
LLAMA3_8B = get_config("llama3-8b")


def test_every_fact_has_a_source_and_date():
    facts = E.load_facts()
    for key in ["openai_tokens_per_day", "deepseek_v4_training_tokens", "openai_words_per_day_2024",
                "cursor_lines_per_day", "reading_words_per_minute", "words_per_token"]:
        assert key in facts
    for f in facts.values():
        assert f.value > 0 and f.unit and f.claim and f.source and f.date, f.key
        assert f.url.startswith("https://"), f.key
    assert E.get_fact("openai_tokens_per_day").value == 8.6e12
    assert E.get_fact("deepseek_v4_training_tokens").value == 32e12
    assert E.get_fact("openai_words_per_day_2024").date == "2024-02-09"
    assert E.get_fact("cursor_lines_per_day").date == "2025-04-28"
    with pytest.raises(KeyError, match="Known"):
        E.get_fact("nope")


def test_prices_cover_every_gpu_and_only_the_sourced_one_is_not_an_example():
    prices = E.gpu_prices()
    assert set(prices) == set(load_specs())
    h100 = E.gpu_price("h100 sxm")
    assert h100.dollars_per_hour == 10.8 and not h100.example and h100.date == "2025-02"
    for p in prices.values():
        assert p.dollars_per_hour > 0
        assert p.example or (p.source and p.date and p.url)
        if p.example:
            assert "example" in p.source and "example" in p.describe()
    assert E.gpu_price(get_spec("T4")).gpu == "T4"
    with pytest.raises(KeyError, match="dollars_per_hour"):
        E.gpu_price("V100")


def test_under_four_days_and_three_times_as_many_in_flops():
    days = E.days_to_match(32e12, 8.6e12)
    assert days == pytest.approx(3.7209, abs=1e-4) and days < 4
    flops_days = E.days_to_match_flops(32e12, 8.6e12)
    assert flops_days == pytest.approx(3 * days) == pytest.approx(11.163, abs=1e-3)
    # A served model half the size does half the FLOPs a token: twice the days.
    assert E.days_to_match_flops(32e12, 8.6e12, n_train=2, n_serve=1) == pytest.approx(6 * days)
    with pytest.raises(ValueError):
        E.days_to_match(1, 0)
    with pytest.raises(ValueError):
        E.days_to_match_flops(1, 1, n_serve=0)


def test_reading_speed():
    assert E.reading_tokens_per_second() == pytest.approx(238 / 60 / 0.75)
    assert E.reading_tokens_per_second(300, 1.0) == pytest.approx(5.0)


def test_agent_tokens():
    assert E.agent_tokens_processed(10, 100, prefix_caching=True) == 1000
    assert E.agent_tokens_processed(10, 100, prefix_caching=False) == 100 * (1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9 + 10)
    with pytest.raises(ValueError):
        E.agent_tokens_processed(-1, 100)


def test_cost_per_million_tokens():
    assert E.cost_per_million_tokens(10.8, 1000) == pytest.approx(3.0)
    assert E.cost_per_million_tokens(3.6, 1) == pytest.approx(1e6 / 1000)
    with pytest.raises(ValueError):
        E.cost_per_million_tokens(1, 0)


@pytest.mark.parametrize("B", [1, 64, 256])
def test_serving_estimate_is_the_lecture_model_with_a_price(B):
    e = E.serving_estimate(LLAMA2_13B, "H100 SXM", B=B, S=1024)
    s = analysis.compute_transformer_stats(LLAMA2_13B, B, 1024)
    assert (e.latency, e.throughput, e.memory) == (s.latency, s.throughput, s.memory)
    # by hand: 13.0e9 params, 2 bytes each; 1024 tokens x 819,200 B of KV per sequence
    params = 2 * 32000 * 5120 + 3 * 5120 * 13824 * 40 + (2 * 5120 * 40 * 128 * 2) * 40
    memory = 2 * params + B * 1024 * 819_200
    assert e.memory == pytest.approx(memory)
    assert e.latency == pytest.approx(memory / 3.35e12)
    assert e.cost_per_million == pytest.approx(10.8 / 3600 / (B * 3.35e12 / memory) * 1e6)
    assert e.fits == (B != 256)  # the lecture's 2026 assert: B = 256 does not fit in 80 GB
    assert e.mfu == pytest.approx(2 * params * e.throughput / 989e12)
    assert "per million tokens" in e.describe()


def test_cost_falls_with_batch_until_kv_dominates():
    for cfg in (LLAMA2_13B, LLAMA3_8B):
        b_star = E.kv_equals_weights_batch(cfg, 1024)
        costs = [E.serving_estimate(cfg, B=B).cost_per_million for B in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)]
        assert all(a > b for a, b in zip(costs, costs[1:]))
        floor = E.cost_floor_per_million(cfg)
        assert all(c > floor for c in costs)
        assert E.serving_estimate(cfg, B=round(b_star)).cost_per_million == pytest.approx(2 * floor, rel=0.02)
        assert E.serving_estimate(cfg, B=round(b_star)).kv_fraction == pytest.approx(0.5, abs=0.01)
    assert E.kv_equals_weights_batch(LLAMA2_13B, 1024) == pytest.approx(31.03, abs=0.01)
    assert E.kv_equals_weights_batch(LLAMA3_8B, 1024) == pytest.approx(119.66, abs=0.01)


def test_several_gpus_and_explicit_price():
    one = E.serving_estimate(get_config("llama2-70b"), "H100 SXM", B=8, S=4096)
    two = E.serving_estimate(get_config("llama2-70b"), "H100 SXM", B=8, S=4096, n_gpus=2)
    assert not one.fits and two.fits
    assert two.latency == pytest.approx(one.latency / 2)
    assert two.dollars_per_hour == 2 * 10.8
    assert two.cost_per_million == pytest.approx(one.cost_per_million)  # ideal sharding: same $/token
    cheap = E.serving_estimate(LLAMA2_13B, "H100 SXM", B=1, dollars_per_hour=2.0)
    assert cheap.cost_per_million == pytest.approx(E.serving_estimate(LLAMA2_13B, B=1).cost_per_million * 2 / 10.8)
    t4 = E.serving_estimate(LLAMA3_8B, "T4", B=1)  # no bf16 on T4: peak from fp16
    assert t4.peak_flops == 65e12
    with pytest.raises(ValueError):
        E.serving_estimate(LLAMA3_8B, B=0)
