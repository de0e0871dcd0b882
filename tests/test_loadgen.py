"""The load generator: vLLM's metric definitions, exactly on given timestamps and within timer
noise against a synthetic server whose delays are known; arrivals rescaled to end at N / rate."""
import asyncio
import math

import pytest

pytest.importorskip("fastapi")

from fastapi import FastAPI  # noqa: E402
from fastapi.responses import StreamingResponse  # noqa: E402

from lecture_lib.serving import loadgen  # noqa: E402
from lecture_lib.serving.server import ServerThread  # noqa: E402


def test_request_metrics_exactly():
    r = loadgen.request_metrics(send=10.0, text_chunk_times=[10.25, 10.30, 10.40, 10.45], end=10.5,
                                output_tokens=5, prompt_tokens=7)
    assert r.ttft == pytest.approx(0.25) and r.e2el == pytest.approx(0.5)
    assert r.tpot == pytest.approx((0.5 - 0.25) / 4)
    assert r.itl == pytest.approx([0.05, 0.10, 0.05])
    one = loadgen.request_metrics(0.0, [1.0], 1.0, 1, 3)
    assert one.tpot is None and one.itl == []
    assert not loadgen.request_metrics(0.0, [], 1.0, None, 3).ok


def test_aggregates_and_goodput_exactly():
    rs = [loadgen.request_metrics(0.0, [0.1, 0.2], 0.2, 2, 10), loadgen.request_metrics(0.0, [0.3, 0.5], 0.5, 2, 10),
          loadgen.Result(False, 10, error="HTTP 503: full")]
    a = loadgen.aggregate(rs, duration=2.0, slos_ms={"ttft": 200})
    assert a["completed"] == 2 and a["failed"] == 1 and a["errors"] == {"HTTP 503: full": 1}
    assert a["mean_ttft_ms"] == pytest.approx(200) and a["median_tpot_ms"] == pytest.approx(150)
    assert a["p99_ttft_ms"] == pytest.approx(100 + 200 * 0.99)  # linear interpolation, as numpy
    assert a["output_throughput"] == pytest.approx(2.0) and a["request_throughput"] == pytest.approx(1.0)
    assert a["goodput"] == pytest.approx(0.5)  # one of the two met TTFT <= 200 ms


def test_send_times():
    t = loadgen.send_times(50, rate=10.0, burstiness=1.0, seed=1)
    assert t == sorted(t) and t[-1] == pytest.approx(5.0)
    assert loadgen.send_times(5, math.inf) == [0.0] * 5
    bursty = loadgen.send_times(2000, rate=10.0, burstiness=0.2, seed=0)
    gaps = [b - a for a, b in zip([0.0] + bursty, bursty)]
    mean = sum(gaps) / len(gaps)
    cv = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean
    assert cv == pytest.approx(1 / 0.2 ** 0.5, rel=0.15)  # gamma(k): coefficient of variation 1/sqrt(k)
    with pytest.raises(ValueError, match="rate"):
        loadgen.send_times(3, 0.0)


def test_datasets():
    p = loadgen.prefix_dataset(20, num_prefixes=10, prefix_len=32, suffix_len=8)
    assert len({tuple(b["prompt"][:32]) for b, _ in p}) == 10 and all(n == 40 for _, n in p)
    r = loadgen.random_dataset(30, input_len=100, output_len=10, range_ratio=0.5)
    assert all(50 <= n <= 150 and 5 <= b["max_tokens"] <= 15 for b, n in r)
    assert "messages" in loadgen.chat_dataset(2)[0][0]


def synthetic_app(ttft=0.4, gap=0.1, chunks=5):
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions():
        async def sse():
            await asyncio.sleep(ttft)
            for i in range(chunks):
                if i:
                    await asyncio.sleep(gap)
                yield 'data: {"choices": [{"index": 0, "text": "x", "finish_reason": null}]}\n\n'
            yield f'data: {{"choices": [], "usage": {{"prompt_tokens": 3, "completion_tokens": {chunks}}}}}\n\n'
            yield "data: [DONE]\n\n"
        return StreamingResponse(sse(), media_type="text/event-stream")
    return app


def test_metrics_against_a_server_with_known_delays():
    with ServerThread(synthetic_app()) as url:
        out = loadgen.run(url, loadgen.random_dataset(8, input_len=3, output_len=5), rate=math.inf, progress=False)
    assert out["completed"] == 8 and out["total_output_tokens"] == 40
    # The server sleeps 400 ms, then 100 ms between chunks. The client, the event loop and the
    # threads can only add time (tens of ms on a loaded 2-core machine), never remove it; a wrong
    # definition would be off by at least one gap (100 ms).
    assert 395 <= out["median_ttft_ms"] <= 460, out["median_ttft_ms"]
    assert out["median_tpot_ms"] == pytest.approx(100, abs=15) and out["median_itl_ms"] == pytest.approx(100, abs=15)
    assert 795 <= out["median_e2el_ms"] <= 870, out["median_e2el_ms"]
