"""A load generator for any OpenAI-compatible server, with vLLM's ``bench serve`` metrics.

    python -m lecture_lib.loadgen --url http://127.0.0.1:8000 --rate 4 --num-prompts 64
    python -m lecture_lib.loadgen --url ... --sweep 1,2,4,8 --dataset prefix --json out.json

Requests are sent at gamma-distributed gaps (shape = ``burstiness``; 1 is a Poisson process),
the cumulative send times rescaled so that the last one goes out at exactly N / rate (rate
``inf``: all at once), and streamed. Per request, from the server-sent events:

- TTFT: the first chunk carrying text, minus the send time;
- ITL: the gaps between successive chunks carrying text (pooled over all requests);
- E2EL: the end of the stream minus the send time;
- output tokens: ``usage.completion_tokens`` of the final chunk (``stream_options.include_usage``),
  else the number of text chunks;
- TPOT = (E2EL − TTFT) / (output tokens − 1).

Aggregates: mean, median, std and p50/p90/p99 of each; request and output-token throughput over
the benchmark's duration (first send to last response); goodput, the requests per second that
met every SLO given (``--goodput ttft:500 tpot:50 e2el:5000``, in ms).

Datasets: ``random`` (random token ids as the prompt, which the OpenAI completions API accepts;
lengths uniform in [input_len·(1 − range_ratio), input_len·(1 + range_ratio)]); ``prefix``
(``num_prefixes`` shared prefixes of ``prefix_len`` tokens, each request one of them plus its
own ``suffix_len`` random tokens: what prefix caching is for); ``chat`` (chat completions whose
user turns are sentences of held-out text).
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field

import httpx
from tqdm.auto import tqdm


@dataclass
class Result:
    """One request as the client saw it (times in seconds, from its send time)."""
    ok: bool
    prompt_tokens: int
    output_tokens: int = 0
    ttft: float | None = None
    e2el: float | None = None
    itl: list[float] = field(default_factory=list)
    error: str | None = None
    status: int | None = None

    @property
    def tpot(self) -> float | None:
        if not self.ok or self.output_tokens < 2:
            return None
        return (self.e2el - self.ttft) / (self.output_tokens - 1)


def request_metrics(send: float, text_chunk_times: list[float], end: float, output_tokens: int | None,
                    prompt_tokens: int) -> Result:
    """The per-request metrics from raw timestamps (a pure function, so that it can be checked
    exactly): ``text_chunk_times`` are the arrival times of the chunks that carried text."""
    if not text_chunk_times:
        return Result(False, prompt_tokens, error="the stream carried no text")
    n = output_tokens if output_tokens is not None else len(text_chunk_times)
    gaps = [b - a for a, b in zip(text_chunk_times, text_chunk_times[1:])]
    return Result(True, prompt_tokens, n, text_chunk_times[0] - send, end - send, gaps)


def _summary(xs: list[float]) -> dict:
    if not xs:
        return {}
    s = sorted(xs)

    def pct(p):  # numpy's default (linear interpolation), as vLLM uses
        k = (len(s) - 1) * p / 100
        lo, hi = math.floor(k), math.ceil(k)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)
    return {"mean": statistics.fmean(s), "median": statistics.median(s), "std": statistics.pstdev(s),
            "p50": pct(50), "p90": pct(90), "p99": pct(99)}


def aggregate(results: list[Result], duration: float, slos_ms: dict | None = None) -> dict:
    """vLLM's aggregates; times in milliseconds, throughputs per second."""
    ok = [r for r in results if r.ok]
    out = {"completed": len(ok), "failed": len(results) - len(ok), "duration_s": duration,
           "total_input_tokens": sum(r.prompt_tokens for r in ok),
           "total_output_tokens": sum(r.output_tokens for r in ok),
           "request_throughput": len(ok) / duration if duration > 0 else 0.0,
           "output_throughput": sum(r.output_tokens for r in ok) / duration if duration > 0 else 0.0}
    for name, xs in (("ttft", [r.ttft for r in ok]), ("tpot", [r.tpot for r in ok if r.tpot is not None]),
                     ("itl", [g for r in ok for g in r.itl]), ("e2el", [r.e2el for r in ok])):
        out |= {f"{k}_{name}_ms": v * 1e3 for k, v in _summary(xs).items()}
    if slos_ms:
        def good(r):
            return all(getattr(r, k) is not None and getattr(r, k) * 1e3 <= v for k, v in slos_ms.items()) \
                if r.ok else False
        out["goodput"] = sum(good(r) for r in results) / duration if duration > 0 else 0.0
        out["slos_ms"] = dict(slos_ms)
    errors = {}
    for r in results:
        if not r.ok:
            errors[r.error] = errors.get(r.error, 0) + 1
    if errors:
        out["errors"] = errors
    return out


def send_times(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """When each request is sent (seconds from the start): gamma gaps, rescaled so that the last
    send is at n / rate."""
    if burstiness <= 0:
        raise ValueError(f"burstiness must be positive, got {burstiness}.")
    if math.isinf(rate):
        return [0.0] * n
    if rate <= 0:
        raise ValueError(f"rate must be positive (or inf), got {rate}.")
    rng = random.Random(seed)
    t, times = 0.0, []
    for _ in range(n):
        t += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
        times.append(t)
    return [x * (n / rate) / times[-1] for x in times]


# ---- datasets: (request body without model/stream fields, prompt tokens) ------------------------

def random_dataset(n: int, input_len: int = 256, output_len: int = 64, range_ratio: float = 0.0,
                   vocab: int = 10_000, seed: int = 0) -> list[tuple[dict, int]]:
    rng = random.Random(seed)

    def length(x):
        return max(1, rng.randint(int(x * (1 - range_ratio)), int(x * (1 + range_ratio))))
    out = []
    for _ in range(n):
        prompt = [rng.randrange(vocab) for _ in range(length(input_len))]
        out.append(({"prompt": prompt, "max_tokens": length(output_len)}, len(prompt)))
    return out


def prefix_dataset(n: int, num_prefixes: int = 10, prefix_len: int = 256, suffix_len: int = 256,
                   output_len: int = 64, vocab: int = 10_000, seed: int = 0) -> list[tuple[dict, int]]:
    rng = random.Random(seed)
    prefixes = [[rng.randrange(vocab) for _ in range(prefix_len)] for _ in range(num_prefixes)]
    out = []
    for i in range(n):
        prompt = prefixes[i % num_prefixes] + [rng.randrange(vocab) for _ in range(suffix_len)]
        out.append(({"prompt": prompt, "max_tokens": output_len}, len(prompt)))
    rng.shuffle(out)
    return out


def chat_dataset(n: int, output_len: int = 64, seed: int = 0) -> list[tuple[dict, int]]:
    from ..corpus import heldout_text
    rng = random.Random(seed)
    sentences = [s.strip() for s in heldout_text().split(". ") if 20 < len(s.strip()) < 300]
    out = []
    for _ in range(n):
        question = f"Explain this in one short paragraph: {rng.choice(sentences)}."
        out.append(({"messages": [{"role": "user", "content": question}], "max_tokens": output_len}, 0))
    return out


DATASETS = {"random": random_dataset, "prefix": prefix_dataset, "chat": chat_dataset}


# ---- sending ----------------------------------------------------------------------------------

async def _one(client: httpx.AsyncClient, url: str, body: dict, prompt_tokens: int) -> Result:
    chat = "messages" in body
    endpoint = url.rstrip("/") + ("/v1/chat/completions" if chat else "/v1/completions")
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    send = time.perf_counter()
    chunks, usage, last = [], None, None
    try:
        async with client.stream("POST", endpoint, json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                try:
                    message = json.loads(text)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = text[:200]
                return Result(False, prompt_tokens, error=f"HTTP {response.status_code}: {message}",
                              status=response.status_code)
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: "):]
                now = last = time.perf_counter()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    return Result(False, prompt_tokens, error=f"stream error: {event['error'].get('message')}")
                if event.get("usage"):
                    usage = event["usage"]
                choices = event.get("choices") or []
                if choices:
                    c = choices[0]
                    text = c.get("text") if not chat else (c.get("delta") or {}).get("content")
                    if text:
                        chunks.append(now)
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        return Result(False, prompt_tokens, error=f"{type(e).__name__}: {e}")
    end = last if chunks else time.perf_counter()  # the stream's last event
    prompt_tokens = usage.get("prompt_tokens", prompt_tokens) if usage else prompt_tokens
    return request_metrics(send, chunks, end, usage.get("completion_tokens") if usage else None, prompt_tokens)


async def run_async(url: str, requests: list[tuple[dict, int]], rate: float = math.inf, burstiness: float = 1.0,
                    model: str | None = None, max_concurrency: int | None = None, slos_ms: dict | None = None,
                    timeout: float = 600.0, seed: int = 0, progress: bool = True) -> dict:
    times = send_times(len(requests), rate, burstiness, seed)
    limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    bar = tqdm(total=len(requests), desc=f"rate {rate:g}", unit="req", disable=not progress)
    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=None,
                                                                      max_keepalive_connections=None)) as client:
        start = time.perf_counter()

        async def fire(at, body, n):
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            body = {**body, **({"model": model} if model else {})}
            if limit is None:
                r = await _one(client, url, body, n)
            else:
                async with limit:
                    r = await _one(client, url, body, n)
            bar.update(1)
            return r
        results = await asyncio.gather(*(fire(t, b, n) for t, (b, n) in zip(times, requests)))
        duration = time.perf_counter() - start
    bar.close()
    out = aggregate(list(results), duration, slos_ms)
    out |= {"rate": rate, "burstiness": burstiness, "num_prompts": len(requests)}
    out["results"] = [asdict(r) | {"tpot": r.tpot} for r in results]
    return out


def run(url: str, requests, **kwargs) -> dict:
    """``run_async`` from synchronous code, also inside Jupyter (whose event loop is already
    running: the benchmark then gets its own loop in a thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_async(url, requests, **kwargs))
    box = {}

    def target():
        try:
            box["out"] = asyncio.run(run_async(url, requests, **kwargs))
        except BaseException as e:  # re-raised in the caller's thread
            box["err"] = e
    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["out"]


def sweep(url: str, rates: list[float], dataset: str = "random", num_prompts: int = 64, **kwargs) -> list[dict]:
    """One run per rate, each with the same requests (``dataset`` with ``kwargs`` it accepts)."""
    data_args = {k: kwargs.pop(k) for k in list(kwargs) if k in DATASETS[dataset].__code__.co_varnames}
    requests = DATASETS[dataset](num_prompts, **data_args)
    return [run(url, requests, rate=rate, **kwargs) for rate in rates]


def print_result(r: dict) -> None:
    print(f"rate {r['rate']:g} req/s: {r['completed']} ok, {r['failed']} failed in {r['duration_s']:.1f} s; "
          f"{r['request_throughput']:.2f} req/s, {r['output_throughput']:,.0f} output tok/s"
          + (f", goodput {r['goodput']:.2f} req/s" if "goodput" in r else ""))
    if r["completed"]:
        print("    TTFT ms  mean {mean_ttft_ms:8.1f}  p50 {p50_ttft_ms:8.1f}  p99 {p99_ttft_ms:8.1f}".format(**r))
        if "mean_tpot_ms" in r:
            print("    TPOT ms  mean {mean_tpot_ms:8.1f}  p50 {p50_tpot_ms:8.1f}  p99 {p99_tpot_ms:8.1f}".format(**r))
        if "mean_itl_ms" in r:
            print("    ITL ms   mean {mean_itl_ms:8.1f}  p50 {p50_itl_ms:8.1f}  p99 {p99_itl_ms:8.1f}".format(**r))
        print("    E2EL ms  mean {mean_e2el_ms:8.1f}  p50 {p50_e2el_ms:8.1f}  p99 {p99_e2el_ms:8.1f}".format(**r))
    for error, count in r.get("errors", {}).items():
        print(f"    {count} x {error}")


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m lecture_lib.loadgen", description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default=None)
    ap.add_argument("--rate", type=float, default=math.inf, help="requests per second (inf: all at once)")
    ap.add_argument("--sweep", default=None, help="comma-separated rates, one run each")
    ap.add_argument("--burstiness", type=float, default=1.0)
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--dataset", choices=list(DATASETS), default="random")
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--range-ratio", type=float, default=0.0)
    ap.add_argument("--num-prefixes", type=int, default=10)
    ap.add_argument("--prefix-len", type=int, default=256)
    ap.add_argument("--suffix-len", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=10_000, help="random token ids are drawn below this")
    ap.add_argument("--max-concurrency", type=int, default=None)
    ap.add_argument("--goodput", nargs="*", default=None, help="SLOs as name:ms, e.g. ttft:500 tpot:50")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    slos = None
    if a.goodput:
        slos = {}
        for item in a.goodput:
            name, _, ms = item.partition(":")
            if name not in ("ttft", "tpot", "e2el") or not ms:
                raise SystemExit(f"--goodput takes ttft:MS, tpot:MS or e2el:MS, got {item!r}.")
            slos[name] = float(ms)
    if a.dataset == "random":
        requests = random_dataset(a.num_prompts, a.input_len, a.output_len, a.range_ratio, a.vocab, a.seed)
    elif a.dataset == "prefix":
        requests = prefix_dataset(a.num_prompts, a.num_prefixes, a.prefix_len, a.suffix_len, a.output_len,
                                  a.vocab, a.seed)
    else:
        requests = chat_dataset(a.num_prompts, a.output_len, a.seed)
    rates = [float(x) for x in a.sweep.split(",")] if a.sweep else [a.rate]
    out = []
    for rate in rates:
        r = run(a.url, requests, rate=rate, burstiness=a.burstiness, model=a.model,
                max_concurrency=a.max_concurrency, slos_ms=slos, timeout=a.timeout, seed=a.seed)
        print_result(r)
        out.append(r)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out if a.sweep else out[0], f, indent=1)
    return out


if __name__ == "__main__":
    main()
