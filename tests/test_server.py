"""The OpenAI-compatible server on loopback: the official client works, greedy output equals the
engine's offline output, and faults (disconnects, bad input, overload, timeouts, shutdown) leave
it serving with nothing leaked. Bounded: small models, at most 100 requests per test."""
import asyncio
import gc
import json
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")

from lecture_lib.serving import Engine  # noqa: E402
from lecture_lib.serving.server import ServerThread, build_server, load_model  # noqa: E402


@pytest.fixture(scope="module")
def target():
    return load_model("target", "cpu")


@pytest.fixture(scope="module")
def server(target):
    model, tok, name = target
    app = build_server(model, tok, name, max_num_seqs=16, max_waiting=200, kv_cache_gb=0.05)
    with ServerThread(app) as url:
        yield url, app


def offline(model, ids, n):
    return Engine(model, num_blocks=64, block_size=16).generate([ids], n)[0]


def stats(url):
    return httpx.get(url + "/stats").json()


def wait_idle(url, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = stats(url)
        if s["in_flight"] == 0 and s["running"] == 0 and s["waiting"] == 0:
            return s
        time.sleep(0.05)
    return stats(url)


def test_openai_client_and_offline_equality(server, target):
    url, _ = server
    model, tok, _ = target
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    assert [m.id for m in client.models.list()] == ["target"]
    prompt = "Return the number of "
    expected = tok.decode(offline(model, tok.encode(prompt), 24))
    out = client.completions.create(model="target", prompt=prompt, max_tokens=24, temperature=0)
    assert out.choices[0].text == expected and out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 24 and out.usage.prompt_tokens == len(tok.encode(prompt))
    chunks = list(client.completions.create(model="target", prompt=prompt, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    assert chunks[-1].usage.completion_tokens == 24 and not chunks[-1].choices
    ids = tok.encode("def f(x):")  # token ids as the prompt (the API allows it)
    out = client.completions.create(model="target", prompt=ids, max_tokens=8, temperature=0)
    assert out.choices[0].text == tok.decode(offline(model, ids, 8))
    two = client.completions.create(model="target", prompt=prompt, max_tokens=8, temperature=1.0, n=2)
    assert len(two.choices) == 2 and two.usage.completion_tokens == 16
    stopped = client.completions.create(model="target", prompt=prompt, max_tokens=24, temperature=0,
                                        stop=[expected[5:8]])
    assert stopped.choices[0].text == expected[:5] and stopped.choices[0].finish_reason == "stop"


def test_chat_with_the_real_model():
    model, tok, name = load_model("smollm2-135m-instruct", "cpu")
    app = build_server(model, tok, name, max_num_seqs=4, kv_cache_gb=0.2)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    expected = tok.decode(Engine(model, num_blocks=64, block_size=16).generate(
        [tok.encode_chat(messages)], 16, eos_id=tok.eos_ids[0])[0], skip_special_tokens=True)
    with ServerThread(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none")
        out = client.chat.completions.create(model=name, messages=messages, max_tokens=16, temperature=0)
        assert out.choices[0].message.content == expected and "Paris" in expected
        stream = client.chat.completions.create(model=name, messages=messages, max_tokens=16, temperature=0,
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected


def test_bad_requests_get_400_and_the_server_keeps_serving(server):
    url, _ = server
    cases = {
        "{not json": "not valid JSON",
        '["a list"]': "JSON object",
        '{"prompt": "x", "max_tokens": 0}': "max_tokens",
        '{"prompt": "x", "max_tokens": "5"}': "max_tokens",
        '{"prompt": "x", "bogus": 1}': "bogus",
        '{"prompt": "x", "temperature": "hot"}': "temperature",
        '{"prompt": "x", "top_p": 0.9}': "top_p",
        '{"prompt": "x", "model": "gpt-4"}': "Unknown model",
        '{"prompt": [1, 999999]}': "Token ids",
        '{"prompt": ""}': "empty",
        json.dumps({"prompt": "x" * 1100, "max_tokens": 4}): "context",
        '{"max_tokens": 4}': "prompt",
    }
    for body, needle in cases.items():
        r = httpx.post(url + "/v1/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, body
        err = r.json()["error"]
        assert needle in err["message"] and err["type"] == "invalid_request_error", (body, err)
    r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "chat template" in r.json()["error"]["message"]
    assert httpx.post(url + "/v1/completions", json={"prompt": "ok", "max_tokens": 3}).status_code == 200
    assert wait_idle(url)["in_flight"] == 0


def test_a_hundred_clients_a_third_disconnecting(server):
    """100 concurrent streams; every third client hangs up after two chunks. The server stays up,
    the others get every token, and afterwards every block is back and nothing is tracked."""
    url, app = server

    async def client(i, http):
        body = {"prompt": f"def function_{i}(", "max_tokens": 24, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        texts, usage = 0, None
        async with http.stream("POST", url + "/v1/completions", json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line.endswith("[DONE]"):
                    continue
                event = json.loads(line[6:])
                texts += bool(event["choices"])
                usage = event.get("usage") or usage
                if i % 3 == 0 and texts == 2:
                    return "left"  # closing the stream mid-way
        return usage["completion_tokens"]

    async def main():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=None)) as http:
            return await asyncio.gather(*(client(i, http) for i in range(100)))

    results = asyncio.run(main())
    assert results.count("left") == 34 and all(r == 24 for r in results if r != "left")
    s = wait_idle(url)
    assert s["in_flight"] == 0 and s["free_blocks"] == s["num_blocks"] and s["errors"] == 0
    steps = s["step_summary"]  # the engine's own step times, as /stats reports them
    assert steps["prefill"]["steps"] > 0 and steps["decode"]["steps"] > 0 and steps["decode"]["median_ms"] > 0
    assert httpx.get(url + "/health").json()["status"] == "ok"
    # memory back to its baseline: nothing is kept per request once it is done
    async_engine = app.state.async_engine
    assert not async_engine.handles and async_engine.commands.empty() and not async_engine.engine.finished
    gc.collect()
    from lecture_lib.serving.server import Handle
    assert not [o for o in gc.get_objects() if type(o) is Handle], "a finished request's handle is still alive"


def test_queue_overflow_gets_503_and_accepted_requests_finish(target):
    model, tok, name = target
    app = build_server(model, tok, name, max_num_seqs=2, max_waiting=2, kv_cache_gb=0.02)
    with ServerThread(app) as url:
        async def one(http, i):
            r = await http.post(url + "/v1/completions", json={"prompt": f"x{i}", "max_tokens": 40, "temperature": 0})
            return r.status_code, r.headers.get("retry-after"), r.json()

        async def main():
            async with httpx.AsyncClient(timeout=120) as http:
                return await asyncio.gather(*(one(http, i) for i in range(12)))
        results = asyncio.run(main())
        codes = [c for c, _, _ in results]
        assert codes.count(503) >= 1 and codes.count(200) >= 4
        assert all(ra == "1" and "capacity" in body["error"]["message"] for c, ra, body in results if c == 503)
        assert all(body["usage"]["completion_tokens"] == 40 for c, _, body in results if c == 200)
        assert wait_idle(url)["free_blocks"] == stats(url)["num_blocks"]


def test_timeout_and_graceful_shutdown(target):
    model, tok, name = target
    app = build_server(model, tok, name, max_num_seqs=4, request_timeout=0.3, kv_cache_gb=0.02)
    server = ServerThread(app)
    url = server.__enter__()
    try:
        r = httpx.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 1000, "temperature": 0,
                                                      "ignore_eos": True}, timeout=60)
        assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
        assert wait_idle(url)["in_flight"] == 0
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("r", httpx.post(
            url + "/v1/completions", json={"prompt": "b", "max_tokens": 20, "temperature": 0}, timeout=60)))
        t.start()
        time.sleep(0.05)
    finally:
        server.__exit__(None, None, None)  # uvicorn lets the in-flight request finish first
    t.join(timeout=30)
    assert box["r"].status_code == 200 and box["r"].json()["usage"]["completion_tokens"] == 20
    assert not server.thread.is_alive()
