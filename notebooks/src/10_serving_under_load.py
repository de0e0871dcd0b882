# %% [markdown]
# # 10 · Serving under load: latency, throughput and the knee
#
# *Follows CS336 Lecture 10, "Throughput and latency" and "Handling dynamic workloads": the
# metrics (TTFT, latency, throughput) and the trade-off "small batches for latency, large
# batches for throughput" when requests arrive over time.*
#
# Notebook 09 built an engine and ran it offline. Here it serves HTTP: `python -m
# lecture_lib.serve` is an OpenAI-compatible server (FastAPI + uvicorn, streaming with
# server-sent events) on the engine, and `python -m lecture_lib.loadgen` is a load generator that
# measures what vLLM's `bench serve` measures, with the same definitions:
#
# - **TTFT**, time to first token: the first streamed chunk that carries text, minus the send time;
# - **TPOT**, time per output token after the first: (E2EL − TTFT) / (output tokens − 1);
# - **ITL**, inter-token latency: the gaps between successive text chunks;
# - **E2EL**: the whole request; **throughput**: output tokens per second; **goodput**: requests per
#   second that meet every latency target (SLO).
#
# Requests arrive as a Poisson process at a rate R. In this notebook you will
# 1. start a server and talk to it with the official `openai` client,
# 2. sweep the request rate and find the knee where queueing explodes, next to the simulator's
#    prediction of the same run,
# 3. compare static and continuous batching under the same latency targets (goodput),
# 4. see chunked prefill protect the decodes of other requests from a long prompt,
# 5. measure prefix caching on a shared-prefix workload,
# 6. measure that TTFT is a function of the prefill.

# %%
# NBVAL_IGNORE_OUTPUT
import time

import httpx
import matplotlib.pyplot as plt
import numpy as np
import openai
import torch

from lecture_lib import analysis, get_config
from lecture_lib.measure import ceilings
from lecture_lib.notebook import setup
from lecture_lib.plotting import COLORS
from lecture_lib.serving import SimulatedEngine, StepCost, loadgen, summarize
from lecture_lib.serving.server import ServerProcess

env = setup(seed=0)

# %% [markdown]
# ## 1. A server, and any OpenAI client
#
# On a CPU the server runs the real chat model SmolLM2-135M-Instruct; on a GPU a
# Llama-3.2-1B-shaped model with random bf16 weights (it has no vocabulary, so prompts are token
# ids and replies are placeholders, which is all a load test needs). The engine takes at most
# `MAX_SEQS` sequences at a time, so that the knee comes at a rate this notebook can reach
# quickly. The server runs as a child process, like a real deployment; the notebook stops it
# at the end.

# %%
# NBVAL_IGNORE_OUTPUT
MODEL = "random:llama3.2-1b-like" if env.on_gpu else "smollm2-135m-instruct"
MAX_SEQS = env.size(cpu=4, gpu=16)
engine_args = ["--model", MODEL, "--max-num-seqs", str(MAX_SEQS), "--max-waiting", "1000"]  # queue, never refuse
server = ServerProcess(*engine_args)
print(f"server at {server.url}: {httpx.get(server.url + '/v1/models').json()['data'][0]}")
client = openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed")
if env.on_gpu:
    reply = client.completions.create(model=MODEL, prompt=list(range(1, 9)), max_tokens=8, temperature=0)
    print(f"completion of 8 token ids: {reply.choices[0].text!r}")
else:
    start = time.perf_counter()
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        max_tokens=24, temperature=0, stream=True)
    parts = [(time.perf_counter() - start, c.choices[0].delta.content) for c in stream if c.choices and c.choices[0].delta.content]
    print(f"streamed reply: {''.join(p for _, p in parts)!r}")
    print(f"first chunk after {parts[0][0] * 1e3:.0f} ms, {len(parts)} chunks, last after {parts[-1][0] * 1e3:.0f} ms")

# %% [markdown]
# ## 2. Latency against the request rate
#
# The workload: `N` requests of `IN` random prompt tokens and `OUT` output tokens, sent at rate R
# (Poisson arrivals, rescaled so the last is sent at N / R; `loadgen.send_times`). First one
# request at a time, to learn the unloaded TPOT and TTFT; the SLOs below are set from them
# (TPOT at most three times the unloaded one, which a full batch stays within; TTFT at most 2 s
# on a CPU, 0.5 s on a GPU).

# %%
N, IN, OUT = env.size(cpu=12, gpu=96), env.size(cpu=64, gpu=256), env.size(cpu=32, gpu=64)
dataset = loadgen.random_dataset(N, input_len=IN, output_len=OUT, vocab=10_000, seed=0)
alone = loadgen.run(server.url, dataset[:4], max_concurrency=1, progress=False)
slos = {"ttft": env.size(cpu=2000, gpu=500), "tpot": 3 * alone["median_tpot_ms"]}
print(f"one request at a time: TTFT {alone['median_ttft_ms']:.0f} ms, TPOT {alone['median_tpot_ms']:.1f} ms; "
      f"SLOs: TTFT <= {slos['ttft']:.0f} ms, TPOT <= {slos['tpot']:.1f} ms")
rates = env.size(cpu=[0.5, 1, 2, 4], gpu=[4, 16, 64, 256, 1024])

# %%
# NBVAL_IGNORE_OUTPUT
runs = {"continuous": [loadgen.run(server.url, dataset, rate=r, slos_ms=slos, progress=False) for r in rates]}
for r in runs["continuous"]:
    loadgen.print_result(r)

# %% [markdown]
# **The model of it.** The simulator (notebook 09) replays the same requests at the same send
# times through the same scheduler, each step's time from the roofline with this device's
# measured bandwidth and matmul rate, plus one constant per-step overhead fitted so that the
# unloaded TPOT matches (the only fitted number).

# %%
cfg = get_config("llama3.2-1b-like") if env.on_gpu else None
stats = server.stats()
if cfg is None:  # SmolLM2-135M's shape, from the loaded model's own config
    from lecture_lib import pretrained
    cfg = pretrained.load(MODEL).model.cfg
elt = 2 if env.on_gpu else 4
bandwidth = ceilings.measure_copy_bandwidth(env.device)
peak = ceilings.measure_matmul_flops(env.device, env.dtype, seconds=0.3)
roofline_step = StepCost(cfg, bandwidth, peak, bytes_per_value=elt).seconds([(IN + OUT // 2, 1)])
overhead = max(0.0, alone["median_tpot_ms"] / 1e3 - roofline_step)


def simulate(rate, policy="continuous", budget=2048, prefix=True, requests=dataset):
    cost = StepCost(cfg, bandwidth, peak, bytes_per_value=elt, overhead=overhead)
    sim = SimulatedEngine(cfg, cost, num_blocks=stats["num_blocks"], block_size=stats["block_size"],
                          max_num_seqs=MAX_SEQS, max_tokens_per_step=budget, enable_prefix_caching=prefix, policy=policy)
    times = loadgen.send_times(len(requests), rate, seed=0)
    reqs = sim.run([(t, body["prompt"], body["max_tokens"]) for t, (body, _) in zip(times, requests)])
    return summarize(reqs)


sims = {"continuous": [simulate(r) for r in rates]}
print(f"measured {bandwidth / 1e9:,.0f} GB/s, {peak / 1e12:.2f} TFLOP/s; roofline decode step {roofline_step * 1e3:.2f} ms, "
      f"fitted overhead {overhead * 1e3:.1f} ms/step")


def latency_figure(policies):
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for policy, color in zip(policies, (COLORS["cached"], COLORS["naive"])):
        m, s = runs[policy], sims[policy]
        for ax, key, scale in ((axes[0], "ttft", 1), (axes[1], "tpot", 1)):
            ax.plot(rates, [r[f"p99_{key}_ms"] for r in m], "o-", color=color, label=f"{policy} p99")
            ax.plot(rates, [r[f"p50_{key}_ms"] for r in m], "s:", color=color, label=f"{policy} p50")
            ax.plot(rates, [x[f"{key}_p99_s"] * 1e3 for x in s], "--", color=color, alpha=0.6, label=f"{policy} p99, simulator")
        axes[2].plot(rates, [r["output_throughput"] for r in m], "o-", color=color, label=f"{policy}")
        axes[2].plot(rates, [x["output_tok_per_s"] for x in s], "--", color=color, alpha=0.6, label=f"{policy}, simulator")
    axes[0].axhline(slos["ttft"], color=COLORS["theory"], lw=0.8)
    axes[1].axhline(slos["tpot"], color=COLORS["theory"], lw=0.8)
    axes[0].set(xscale="log", yscale="log", xlabel="request rate (req/s)", ylabel="ms", title="TTFT (line: SLO)")
    axes[1].set(xscale="log", xlabel="request rate (req/s)", ylabel="ms", title="TPOT (line: SLO)")
    axes[2].set(xscale="log", xlabel="request rate (req/s)", ylabel="output tok/s", title="throughput")
    for ax in axes:
        ax.set_xticks(rates, [f"{r:g}" for r in rates])
        ax.xaxis.set_minor_locator(plt.NullLocator())
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    plt.show()


latency_figure(["continuous"])
for rate, m, s in zip(rates, runs["continuous"], sims["continuous"]):
    print(f"{rate:>6g} req/s: p99 TTFT {m['p99_ttft_ms']:8.0f} ms (simulator {s['ttft_p99_s'] * 1e3:8.0f}), "
          f"p99 TPOT {m['p99_tpot_ms']:6.1f} ms (simulator {s['tpot_p99_s'] * 1e3:6.1f}), "
          f"{m['output_throughput']:7.0f} tok/s (simulator {s['output_tok_per_s']:7.0f})")

# %%
ttft_p99 = [r["p99_ttft_ms"] for r in runs["continuous"]]
print(f"p99 TTFT grows {ttft_p99[-1] / ttft_p99[0]:.0f}x from {rates[0]:g} to {rates[-1]:g} req/s")
top, top_sim = runs["continuous"][-1]["output_throughput"], sims["continuous"][-1]["output_tok_per_s"]
print(f"capacity (throughput at {rates[-1]:g} req/s): measured {top:,.0f} tok/s, simulator {top_sim:,.0f} tok/s "
      f"(measured / simulator = {top / top_sim:.2f})")
assert ttft_p99[-1] > 3 * ttft_p99[0], "past capacity, requests queue: p99 TTFT must grow by several times"
assert all(r["failed"] == 0 for r in runs["continuous"])

# %% [markdown]
# At low rates a request finds the engine idle: TTFT is one prefill, TPOT one small-batch
# decode step. As R grows the batch fills up to `MAX_SEQS`: TPOT rises (a bigger batch reads
# more KV per step, and on a CPU also computes noticeably more) and throughput rises with R. Past the engine's capacity the batch is
# full, throughput stops growing, and newcomers wait in the queue for a free sequence slot: TTFT
# (and so E2EL) explodes, the knee. The simulator's lines show the same shape from the cost
# model alone. Where they part from the measurement (the capacity line above compares them),
# the first suspect is its cost model: one constant overhead per step, fitted to an unloaded
# decode, on top of the roofline. Steps that prefill cost more than that on a GPU (section 6
# measures by how much and why), so there the simulator overestimates the capacity and
# underestimates the queue (compare notebook 09, section 6).
#
# ## 3. Static vs continuous batching, under the same SLOs
#
# The same sweep against the same engine with `--policy static`: a batch is formed from whoever
# is waiting and runs until its longest member ends. **Goodput** counts only the requests that
# met both SLOs.

# %%
# NBVAL_IGNORE_OUTPUT
server.stop()
server = ServerProcess(*engine_args, "--policy", "static")
runs["static"] = [loadgen.run(server.url, dataset, rate=r, slos_ms=slos, progress=False) for r in rates]
sims["static"] = [simulate(r, "static") for r in rates]
latency_figure(["continuous", "static"])

# %%
for rate, c, s in zip(rates, runs["continuous"], runs["static"]):
    print(f"{rate:>6g} req/s: goodput continuous {c['goodput']:5.2f} req/s, static {s['goodput']:5.2f} req/s  |  "
          f"p99 TTFT {c['p99_ttft_ms']:7.0f} vs {s['p99_ttft_ms']:7.0f} ms")
best = {p: max([r for r, x in zip(rates, runs[p]) if x["goodput"] >= 0.9 * x["request_throughput"] and x["completed"]],
               default=0) for p in runs}
print(f"highest rate with 90% of requests within the SLOs: continuous {best['continuous']:g} req/s, "
      f"static {best['static']:g} req/s")
low = [i for i, r in enumerate(rates) if r <= rates[1]]  # the two lowest rates: below capacity
for stat in ("p50", "p99"):
    print(f"{stat} TTFT below capacity: " + ", ".join(
        f"{rates[i]:g} req/s continuous {runs['continuous'][i][f'{stat}_ttft_ms']:.0f} ms vs static "
        f"{runs['static'][i][f'{stat}_ttft_ms']:.0f} ms" for i in low))
# Below capacity only the requests that arrive while a static batch runs wait for its end; at a low
# rate that can be under half of them (so the median may not show it), but among a dozen requests
# some do, and they set the p99: compare the slowest first tokens.
assert all(runs["continuous"][i]["p99_ttft_ms"] < 0.5 * runs["static"][i]["p99_ttft_ms"] for i in low), \
    "below capacity continuous batching admits a newcomer at the next step, static at the end of a batch"

# %% [markdown]
# Static batching makes a request that arrives while a batch runs wait for the whole batch to
# end: below capacity its TTFT is about a whole request's duration, against one prefill for
# continuous batching (the check above, on the slowest first tokens, p99: at a low rate only the
# requests that arrive during a batch wait, which can be fewer than half, so the median may not
# show it). When answers differ in length, a static batch also
# drains as its short members finish and runs below `MAX_SEQS` for part of every batch, which
# costs throughput (here every answer has the same length; notebook 09's simulator shows the
# draining). Batches that form from whoever happens to wait, or that drain, carry fewer
# sequences per step, so static batching's TPOT can come out *lower* near capacity: which policy has the higher goodput depends on which SLO
# binds, and the table above shows it rate by rate. Goodput, the rate of requests that meet
# the SLOs, is the number a service is judged by.
#
# **At full size.** With `MAX_SEQS` sequences and a hundred requests, this section is a small
# sketch. The benchmark `python -m lecture_lib.serving.slo` runs the comparison at scale on a
# GPU: 256 sequences, rates up to hundreds of requests a second, 256-token prompts and 128-token
# answers, against this server in both policies and against `transformers serve` (its own
# continuous batching, with and without CUDA graphs) on the same random-weight model. Its stored
# H200 run:

# %%
import json

from lecture_lib.paths import data_path

with open(data_path("reference/h200/serving_slo_h200.json")) as f:
    slo_ref = json.load(f)
print(f"{slo_ref['gpu']}, {slo_ref['model']}")
print(f"highest rate (req/s) within p99 TPOT <= {slo_ref['slo_ms']['tpot']:g} ms | and p99 TTFT <= "
      f"{slo_ref['slo_ms']['ttft']:g} ms   (+: still met at the highest rate tried)")
def shown(b):
    return "none" if b["rate"] is None else f"{b['rate']:g}" + ("+" if b["open_ended"] else "")
for system, best_of in slo_ref["summary"].items():
    print(f"  {system:20s} {shown(best_of['max_rate_tpot']):>6s} | {shown(best_of['max_rate_tpot_ttft']):>6s}")
limit = {system: b["max_rate_tpot_ttft"]["rate"] for system, b in slo_ref["summary"].items()}
print(f"with the queue in the SLO, continuous batching sustains {limit['continuous'] / limit['static']:.0f}x "
      f"static batching's rate and {limit['continuous'] / limit['transformers-graphs']:.0f}x that of "
      f"transformers serve with CUDA graphs")
static_run = slo_ref["runs"][slo_ref["summary"]["static"]["run"]]
at_limit = next(r for r in static_run["systems"]["static"]["runs"] if r["rate"] == limit["static"])
out_len = static_run["settings"]["output_len"]
print(f"a static batch of {out_len}-token answers lasts about {out_len * at_limit['p50_tpot_ms']:.0f} ms "
      f"({out_len} x the median TPOT of {at_limit['p50_tpot_ms']:.1f} ms at {limit['static']:g} req/s)")

# %% [markdown]
# TPOT alone does not separate the policies: a static batch never slows a request that has
# started, and the overload waits in the queue, which only TTFT sees. With TTFT in the SLO,
# static batching fails early: a request may wait for a whole batch, which lasts about as long
# as the TTFT SLO (the last line above). `transformers serve` misses the TPOT SLO at every rate
# without CUDA graphs, and with them it holds both SLOs up to the rate shown.
#
# ## 4. Chunked prefill: a long prompt must not freeze the others
#
# A mix: short chat-like requests streaming their answers, and every few requests a long
# prompt. Without chunking (a token budget large enough for a whole prompt), the step that
# prefills a long prompt takes as long as the prompt's whole forward pass, and every streaming
# request waits for it: a spike in inter-token latency. With a small budget the long prompt is
# split over several steps, each also decoding the others.

# %%
# NBVAL_IGNORE_OUTPUT
LONG = env.size(cpu=1024, gpu=1536)
short = loadgen.random_dataset(env.size(cpu=12, gpu=48), input_len=32, output_len=env.size(cpu=48, gpu=128), seed=1)
long = loadgen.random_dataset(env.size(cpu=3, gpu=12), input_len=LONG, output_len=4, seed=2)
mixed = [x for i, s in enumerate(short) for x in ([s, long[i // 4]] if i % 4 == 1 else [s])]
chunking = {}
for budget in (LONG + 512, 128):
    server.stop()
    server = ServerProcess(*engine_args, "--max-tokens-per-step", str(budget))
    chunking[budget] = r = loadgen.run(server.url, mixed, rate=env.size(cpu=1, gpu=16), progress=False)
    r["steps"] = server.stats()["step_summary"]["prefill"]  # the engine's own steps that carried prompt tokens
    ttft_of = {kind: np.median([x["ttft"] for x in r["results"] if x["ok"] and (x["prompt_tokens"] >= LONG) == is_long])
               for kind, is_long in (("short", False), ("long", True))}
    r["ttft_long_ms"], r["ttft_short_ms"] = ttft_of["long"] * 1e3, ttft_of["short"] * 1e3
    print(f"token budget {budget:>5}: ITL p50 {r['p50_itl_ms']:6.1f} ms, p99 {r['p99_itl_ms']:7.1f} ms; "
          f"median TTFT {r['ttft_short_ms']:6.0f} ms (short prompts), {r['ttft_long_ms']:6.0f} ms (long prompts); "
          f"{r['steps']['steps']} steps with prompt tokens, median {r['steps']['median_ms']:.1f} ms, "
          f"{r['steps']['mean_tokens']:.0f} tokens on average")

# %%
whole, chunked = chunking[LONG + 512], chunking[128]
print(f"p99 inter-token latency: {whole['p99_itl_ms']:.0f} ms with whole prompts in a step, "
      f"{chunked['p99_itl_ms']:.0f} ms with 128-token chunks ({whole['p99_itl_ms'] / chunked['p99_itl_ms']:.1f}x)")
# a whole long prompt's prefill takes at most its TTFT there (which also holds its queueing)
if whole["ttft_long_ms"] > chunked["p99_itl_ms"]:  # bigger than the worst gap that chunking leaves
    assert chunked["p99_itl_ms"] < whole["p99_itl_ms"], "chunks must shorten the gaps that whole prefills cause"
else:
    print(f"check skipped: a whole {LONG}-token prompt's median TTFT ({whole['ttft_long_ms']:.0f} ms) is under "
          f"the worst gap even with chunking ({chunked['p99_itl_ms']:.0f} ms): the gaps are not prefill here")

# %% [markdown]
# A long prompt's prefill makes its step slow, and every streaming request waits for that step:
# with chunking the worst inter-token gap shrinks (the check above), because a decode never waits
# for more than a 128-token slice of someone else's prompt. The step counts show the mechanism:
# with the small budget more steps carry prompt tokens, with fewer tokens each on average: the
# long prompts are spread out. (On a GPU every step here, with prompt tokens or not, replays
# a CUDA graph: an eager step is bound by its kernel launches whatever its tokens, notebook 07,
# and would hide the effect.) The price falls on the long prompts, whose prefill now spreads
# over several steps, each shared with the decodes: compare their TTFT in the two lines above
# (it also depends on how much they queue). Sarathi-Serve reports 2.6× serving capacity from
# this trade under latency targets.
#
# ## 5. Prefix caching on a shared-prefix workload
#
# A few system prompts (10 of 1,024 tokens on a GPU, 2 of 256 on a CPU), each request one of
# them plus its own short suffix, like many users of a few applications. With prefix caching the server recognises the
# shared full blocks (notebook 09) and prefills only the suffix.

# %%
# NBVAL_IGNORE_OUTPUT
shared = loadgen.prefix_dataset(env.size(cpu=16, gpu=96), num_prefixes=env.size(cpu=2, gpu=10),
                                prefix_len=env.size(cpu=256, gpu=1024), suffix_len=env.size(cpu=32, gpu=64),
                                output_len=8, seed=3)
prefix_runs = {}
for caching in (True, False):
    server.stop()
    server = ServerProcess(*engine_args, *([] if caching else ["--no-prefix-caching"]))
    r = loadgen.run(server.url, shared, rate=env.size(cpu=2, gpu=16), progress=False)
    stats = server.stats()
    r["hit_rate"], r["steps"] = stats["prefix_hit_rate"], stats["step_summary"]["prefill"]
    prefix_runs[caching] = r
    print(f"prefix caching {'on ' if caching else 'off'}: hit rate {r['hit_rate']:.0%} of prompt tokens, "
          f"TTFT p50 {r['p50_ttft_ms']:6.0f} ms, p99 {r['p99_ttft_ms']:6.0f} ms; steps with prompt tokens: "
          f"median {r['steps']['median_ms']:.1f} ms, {r['steps']['mean_tokens']:.0f} tokens on average")

# %%
on, off = prefix_runs[True], prefix_runs[False]
print(f"median TTFT {off['p50_ttft_ms'] / on['p50_ttft_ms']:.1f}x lower with prefix caching")
assert on["hit_rate"] > 0.5 and off["hit_rate"] == 0
assert on["steps"]["mean_tokens"] < off["steps"]["mean_tokens"], "cached prefix tokens are not fed again"
saved_ms = off["steps"]["median_ms"] - on["steps"]["median_ms"]  # measured: what a prefill step no longer costs
print(f"a step with prompt tokens takes {saved_ms:.1f} ms less with prefix caching")
if saved_ms > 0.1 * off["p50_ttft_ms"]:  # the skipped prefill is a real part of TTFT here
    assert on["p50_ttft_ms"] < off["p50_ttft_ms"]
else:
    print(f"TTFT check skipped: the steps got {saved_ms:.1f} ms shorter, under a tenth of the median TTFT "
          f"({off['p50_ttft_ms']:.0f} ms), which other time (queueing, request overhead) dominates here")

# %% [markdown]
# Most prompt tokens hit the cache (the first request of each prefix computes it), so a step
# that admits a request feeds only its suffix and gets shorter (measured above), and where
# that step is a real part of TTFT (the check above says whether it is here), TTFT falls with
# the work skipped. This is why vLLM, SGLang and the API
# providers cache prefixes (and charge less for cached input tokens).
#
# ## 6. TTFT is a function of the prefill
#
# The lecture: TTFT is the prefill's time, compute-bound for long prompts. One request at a
# time, prompts of growing length, one output token: the measured TTFT next to the roofline of
# a prefill, max(bytes / bandwidth, FLOPs / FLOP/s), plus the same fitted step overhead.

# %%
# NBVAL_IGNORE_OUTPUT
server.stop()
server = ServerProcess(*engine_args, "--max-tokens-per-step", "8192", "--no-prefix-caching")
lengths = env.size(cpu=[16, 64, 256, 1024], gpu=[64, 256, 1024, 2000])
ttft = []
for n in lengths:
    reqs = loadgen.random_dataset(3, input_len=n, output_len=1, seed=n)
    ttft.append(loadgen.run(server.url, reqs, max_concurrency=1, progress=False)["median_ttft_ms"])
server.stop()
cost = StepCost(cfg, bandwidth, peak, bytes_per_value=elt)
model_ttft = [(cost.seconds([(0, n)]) + overhead) * 1e3 for n in lengths]
fig, ax = plt.subplots()
ax.plot(lengths, ttft, "o-", color=COLORS["measured"], label="measured TTFT (one request at a time)")
ax.plot(lengths, model_ttft, "--", color=COLORS["theory"], label="prefill roofline + step overhead")
ax.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel="ms", title=f"TTFT vs prompt length ({env.info.type})")
ax.legend(fontsize=8)
plt.show()
for n, t, m in zip(lengths, ttft, model_ttft):
    flops = analysis.forward_flops(cfg, n)
    print(f"prompt {n:>5}: TTFT {t:8.1f} ms, model {m:8.1f} ms ({flops / 1e9:,.0f} GFLOP)")

# %%
# Differences, not ratios: the request's own overhead (HTTP, tokenization, scheduling), which the
# model leaves out, is the same for both lengths and cancels.
added, predicted = ttft[-1] - ttft[0], model_ttft[-1] - model_ttft[0]
print(f"{lengths[-1]} prompt tokens instead of {lengths[0]} add {added:.1f} ms to the TTFT "
      f"(the roofline: {predicted:.1f} ms of extra prefill; measured / model = {added / predicted:.2f})")
assert added > 0.5 * predicted, "a longer prompt must take longer: at least half the roofline's extra prefill time"

# %%
# Where a prefill's time goes past the roofline on a GPU: its attention, timed alone. The
# engine's PagedAttention kernel (notebook 09) gives each query token its own program, which
# reads that token's keys from the pool: right for decodes, but a prefill of n tokens then reads
# about n²/2 key and value rows per head, where a FlashAttention-style prefill kernel reads each
# tile of keys once for a whole tile of queries.
if env.on_gpu:
    from lecture_lib.measure.timing import graph_seconds
    from lecture_lib.serving.paged_attention import paged_attention
    n, bs = lengths[-1], 16
    pool = torch.randn(-(-n // bs), cfg.K, bs, cfg.H, device=env.device, dtype=env.dtype)
    q = torch.randn(n, cfg.N, cfg.H, device=env.device, dtype=env.dtype)
    tables = torch.arange(pool.shape[0], dtype=torch.int32, device=env.device)[None].expand(n, -1).contiguous()
    attention_ms = graph_seconds(paged_attention, q, pool, pool, tables,
                                 torch.arange(1, n + 1, device=env.device)) * cfg.L * 1e3
    print(f"the attention of a {n}-token prefill, all {cfg.L} layers: {attention_ms:.1f} ms on this kernel; "
          f"the measured extra TTFT exceeds the roofline's by {added - predicted:.1f} ms")
else:
    print("(on a GPU this cell times the prefill's attention kernel alone)")

# %% [markdown]
# Short prompts cost little more than one step plus the request's own overhead (HTTP,
# tokenization, scheduling); long ones add time with their FLOPs, 2 × parameters × tokens plus
# attention, as the roofline says (the check compares the time a long prompt adds, so
# that the constant overhead cancels). Where the measured points sit above the model line, the
# gap at short prompts is that per-request overhead, a few milliseconds that vary from request
# to request: the shortest prompt is measured first, on a freshly started server, and the median
# of three requests does not always hide that (compare the lowest rate in section 2). Where the added time exceeds the model's,
# the last cell (on a GPU) says how much of the excess is the attention kernel: a
# decode kernel doing a prefill's job (serving engines run prefills through a FlashAttention
# kernel for this reason), and what remains is a sustained matmul rate below the benchmark's.
# That is why long prompts dominate TTFT, why chunking them trades their TTFT for everyone's
# ITL, and why a cached prefix is worth so much.
#
# ## Summary
# - The server is an ordinary OpenAI endpoint: the official client streams from it, and the load
#   generator measures TTFT, TPOT, ITL, E2EL and goodput exactly as vLLM's `bench serve` does.
# - Latency is flat until the engine's capacity, then TTFT explodes with the queue (the knee);
#   throughput stops growing there. The simulator, from the roofline and one fitted overhead,
#   predicts the shape; where steps that prefill cost more than its model, it overestimates
#   the capacity (the printed ratio).
# - Continuous batching admits a newcomer at the next step, static batching at the end of the
#   current batch: below capacity static's TTFT is a whole request's duration. Goodput under
#   the same SLOs is compared rate by rate above.
# - Chunked prefill bounds the inter-token latency that a long prompt inflicts on the others.
# - Prefix caching skips the shared prefill and cuts TTFT on shared-prefix workloads.
# - TTFT is the prefill: for short prompts mostly the request's own overhead, for long ones
#   growing with the FLOPs (and, on a GPU, with this engine's decode-style attention kernel).
#
# ## Exercises
# 1. Run `python -m lecture_lib.serve` in a terminal and `python -m lecture_lib.loadgen --sweep
#    1,2,4,8 --goodput ttft:2000 tpot:100` against it. Where is the knee with `--max-num-seqs 8`?
# 2. Send bursty traffic (`--burstiness 0.3`) at the same mean rate: what happens to p99 TTFT?
# 3. In section 4, what budget gives the best p99 ITL without doubling the long prompts' TTFT?
