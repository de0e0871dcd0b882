# %% [markdown]
# # 09 · Continuous batching and PagedAttention: a small serving engine
#
# *Follows CS336 Lecture 10, "Handling dynamic workloads": continuous batching (Orca) and
# PagedAttention (vLLM).*
#
# Notebooks 03–07 batched B sequences that start together and stop together. Real traffic does
# not: requests arrive at different times, with prompts and answers of different lengths, often
# sharing a system prompt. Two ideas make a server efficient anyway:
#
# - **Iteration-level scheduling** (Orca): decide who is in the batch at *every step*, so a
#   finished sequence's slot is refilled at once instead of idling until the whole batch ends;
#   run the matrix products on all the step's tokens together (prefill chunks and decodes mixed)
#   and only attention per sequence (*selective batching*).
# - **PagedAttention** (vLLM): store the KV cache in fixed-size blocks reached through a block
#   table per sequence, like virtual memory pages. No sequence reserves memory it may never use,
#   and blocks can be shared: a common prefix, or n samples of one prompt (copy-on-write).
#
# Everything here runs on `lecture_lib.serving`: a block manager, a scheduler, a model runner and
# a simulator, a few hundred lines, tested token for token against plain decoding.
#
# In this notebook you will
# 1. watch static and continuous batching schedule the same requests,
# 2. look inside one step of selective batching,
# 3. measure how much reserved KV memory holds tokens, contiguous vs paged,
# 4. draw the block tables of a live batch, and share blocks between requests,
# 5. see preemption happen, and that it changes nothing in the output,
# 6. measure throughput against the number of concurrent requests on this device,
# 7. move the scheduler's knobs in the simulator.

# %%
# NBVAL_IGNORE_OUTPUT
import random
import time

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import torch

from lecture_lib import corpus, get_config, widgets
from lecture_lib.checkpoints import load_checkpoint
from lecture_lib.decode import generate_cached
from lecture_lib.hardware import get_spec, load_specs
from lecture_lib.measure import ceilings
from lecture_lib.measure.bench import build_model
from lecture_lib.notebook import setup
from lecture_lib.plotting import COLORS
from lecture_lib.serving import LLM, Engine, SamplingParams, SimulatedEngine, StepCost, summarize

env = setup(seed=0)

# %% [markdown]
# The model for the scheduling experiments is the series' small trained checkpoint (a byte-level
# model of Python documentation, notebook 04), in float32: the point here is *which* tokens are
# computed *when*, and float32 keeps batched and solo decoding equal token for token, so that
# every comparison below can be checked exactly. The prompts are slices of held-out text.

# %%
model = load_checkpoint("target").to(env.device)
text = corpus.heldout_text()
rng = random.Random(0)


def text_prompts(n, lo, hi):
    """n prompts of lo..hi bytes of held-out text, from random places."""
    starts = [rng.randrange(len(text) - hi) for _ in range(n)]
    return [corpus.encode(text[s:s + rng.randrange(lo, hi)]).tolist() for s in starts]


def solo(prompt, n):
    """The reference: plain KV-cached greedy decoding of one request alone (notebook 04)."""
    return generate_cached(model, torch.tensor([prompt], device=env.device), n).tokens[0].tolist()


print(f"model: {model.num_params() / 1e6:.2f}M parameters, L={model.cfg.L} D={model.cfg.D}, "
      f"{next(model.parameters()).dtype}, on {env.device}")

# %% [markdown]
# ## 1. Static vs continuous batching
#
# Twelve requests, all waiting at time 0, with different prompt and answer lengths; at most four
# sequences in a batch. **Static** batching (`policy="static"`) forms a batch of four and admits
# nobody else until all four are done. **Continuous** batching refills a slot the step after it
# frees. Same engine, same model; the engine logs every step (`engine.log`: which requests, how
# many tokens each), which is what the picture draws: one row per request, one column per step.

# %%
prompts = text_prompts(12, 8, 40)
limits = [rng.randrange(4, 60) for _ in prompts]


def run(policy):
    engine = Engine(model, num_blocks=128, block_size=16, max_num_seqs=4, policy=policy)
    start = time.perf_counter()
    reqs = [engine.add_request(p, m) for p, m in zip(prompts, limits)]
    while engine.has_work:
        engine.step()
    return engine, reqs, time.perf_counter() - start


run("continuous")  # warm-up: the first run pays for kernel compilation and allocations
runs = {policy: run(policy) for policy in ("static", "continuous")}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for ax, (policy, (engine, reqs, seconds)) in zip(axes, runs.items()):
    grid = np.zeros((len(reqs), len(engine.log)))  # 0 waiting, 1 prefill, 2 decode, 0.5 done
    for step, rec in enumerate(engine.log):
        for rid, n in rec.batch:
            grid[rid, step] = 1 if n > 1 else 2
    for r in reqs:
        done_at = next(i for i, rec in enumerate(engine.log) if rec.end >= r.finish_time)
        grid[r.request_id, done_at + 1:] = -1
    ax.imshow(grid, aspect="auto", cmap=plt.matplotlib.colors.ListedColormap(
        ["white", "#eeeeee", "#ff7f0e", COLORS["cached"]]), vmin=-1.5, vmax=2.5, interpolation="nearest")
    tokens = sum(len(r.output) for r in reqs)
    busy = sum(len(rec.batch) for rec in engine.log) / (engine.max_num_seqs * len(engine.log))
    ax.set(title=f"{policy}: {len(engine.log)} steps, slots in use {busy:.0%}", xlabel="step",
           ylabel="request" if policy == "static" else None)
    print(f"{policy:>10}: {len(engine.log):3d} steps for {tokens} tokens, {busy:.0%} of the 4 slots in use, "
          f"{seconds * 1e3:.0f} ms on {env.device}")
fig.suptitle("orange: prefill, blue: a decoded token, grey: waiting in the queue, white: finished")
plt.show()

# %%
static, continuous = runs["static"], runs["continuous"]
same = all(a.output == b.output == solo(p, m)
           for a, b, p, m in zip(static[1], continuous[1], prompts, limits))
print(f"continuous batching: {len(static[0].log) / len(continuous[0].log):.2f}x fewer steps; "
      f"outputs identical to solo decoding in both: {same}")
assert same, "scheduling changes when a token is computed, never which token"
assert len(continuous[0].log) < len(static[0].log)

# %% [markdown]
# In the static picture, a row that finishes early leaves its slot empty (the white gaps inside
# a batch) until the batch's longest member is done, and the queue waits. Continuous batching
# closes the gaps: the next request's prefill (orange) lands in the step after a slot frees, in
# the same forward pass as the others' decodes. Fewer steps for the same tokens, and every
# request's answer is identical to decoding it alone. (The wall times printed need not follow
# the steps for a model this small: a step that carries a prompt chunk costs more than a decode
# step, and continuous batching has more such steps. In the run stored here such steps still
# ran eagerly on the GPU, outside the CUDA graphs that replayed the decode steps; the engine now
# replays a graph for them too (`serving.runner`), which narrows the gap. Throughput is
# measured properly in section 6.)
#
# ## 2. Inside one step: selective batching
#
# How can one forward pass hold a 30-token prompt chunk and three single-token decodes? The
# fast path (`packed=True`, the default on a GPU) puts all the step's tokens in **one row**:
# the linear layers (QKV, output, MLP: most of the FLOPs and all the weight bytes) see a
# [1, T_step, D] matrix whatever mix of requests it is; only attention is per sequence: each
# token carries its position and its sequence's block table, and PagedAttention reads that
# sequence's keys (`serving.paged_attention`: a Triton kernel on a GPU, plain PyTorch here).
# There is no padding: a step costs its tokens, not B × the longest chunk. The step's token
# budget (`max_tokens_per_step`) bounds T_step, and a prompt longer than what is left of it is
# split over steps (**chunked prefill**), so a long prompt never stalls the others' decodes.

# %%
engine = Engine(model, num_blocks=128, block_size=16, max_num_seqs=4, max_tokens_per_step=24, packed=True)
for p, m in zip(prompts[:6], limits[:6]):
    engine.add_request(p, m)
for step in range(6):
    engine.step()
    rec = engine.log[-1]
    parts = ", ".join(f"r{rid}: {'prefill ' + str(n) if n > 1 else 'decode'}" for rid, n in rec.batch)
    print(f"step {step}: {sum(n for _, n in rec.batch):2d} tokens in one row [1 T D] -> {parts}")
while engine.has_work:
    engine.step()
assert all(sum(n for _, n in rec.batch) <= 24 for rec in engine.log), "the token budget bounds every step"
assert [r.output for r in sorted(engine.finished, key=lambda r: r.request_id)] == \
    [solo(p, m) for p, m in zip(prompts[:6], limits[:6])]
print("every step within the 24-token budget; outputs equal solo decoding")

# %% [markdown]
# The front door is vLLM's offline API: `LLM(model).generate(prompts, SamplingParams(...))`,
# every request queued at once, a progress bar of finished requests, and per request its tokens,
# finish reason and time to first token. (For a model with a tokenizer, such as
# `LLM("smollm2-135m-instruct")`, prompts can be strings and the text comes back decoded; this
# byte-level model's tokens are bytes, so `corpus.decode` reads them.)

# %%
# NBVAL_IGNORE_OUTPUT
llm = LLM(model, num_blocks=128, block_size=16, max_num_seqs=8)
starts = ["def __init__(self", "Return the number of ", "The following example shows"]
outs = llm.generate([corpus.encode(s).tolist() for s in starts],
                    [SamplingParams(max_tokens=40), SamplingParams(max_tokens=40, temperature=0.8, top_k=20),
                     SamplingParams(max_tokens=30, n=2, temperature=1.0)])
for s, out in zip(starts, outs):
    for o in out if isinstance(out, list) else [out]:
        print(f"{s!r} -> {corpus.decode(o.token_ids)!r} ({o.finish_reason}, TTFT {o.ttft * 1e3:.1f} ms)")

# %% [markdown]
# ## 3. Fragmentation: how much of the reserved KV memory holds tokens?
#
# A server that stores each sequence's cache contiguously must reserve its region up front: for
# the longest the sequence may become, since it cannot know when the answer ends. vLLM measured
# that earlier systems kept only **20.4–38.2%** of reserved KV memory for actual tokens; with
# paging the waste is only each sequence's last, partly filled block (**under 4%**). Here we
# measure it on a live run: 48 requests, at most 16 at a time, and at every step we compare the
# tokens stored with what each scheme would hold:
#
# - contiguous, reserve the model's maximum length (S_max) per sequence,
# - contiguous, reserve prompt + max_tokens (the request's own limit),
# - paged: the blocks actually allocated × block size.

# %%
frag_prompts = text_prompts(48, 64, 512)
frag_limits = [rng.randrange(16, 512) for _ in frag_prompts]
S_max = model.cfg.S_max


def fragmentation(block_size):
    engine = Engine(model, num_blocks=2048 // block_size * 16, block_size=block_size, max_num_seqs=16,
                    max_tokens_per_step=16384,  # whole prompts at admission: every allocated slot is filled
                    enable_prefix_caching=False)
    for p, m in zip(frag_prompts, frag_limits):
        engine.add_request(p, m)
    stored = reserve_max = reserve_limit = paged = seqs = 0
    while engine.has_work:
        engine.step()
        stored += sum(r.num_computed for r in engine.running)
        reserve_max += S_max * len(engine.running)
        reserve_limit += sum(len(r.prompt) + r.max_tokens for r in engine.running)
        paged += (len(engine.blocks.blocks) - engine.blocks.num_free_blocks) * block_size
        seqs += len(engine.running)
    return {"reserve S_max": stored / reserve_max, "reserve prompt + max_tokens": stored / reserve_limit,
            "paged": stored / paged, "mean length": stored / seqs}


frag = {bs: fragmentation(bs) for bs in (1, 16, 64)}
for bs, f in frag.items():
    print(f"block size {bs:2d}: tokens / reserved = {f['reserve S_max']:5.1%} (reserve S_max = {S_max}), "
          f"{f['reserve prompt + max_tokens']:5.1%} (reserve prompt + max_tokens), {f['paged']:6.1%} (paged)")
f = frag[16]
predicted = 7.5 / f["mean length"]  # (block size - 1) / 2 empty slots per sequence, on average
print(f"paged waste at block size 16: {1 - f['paged']:.1%}; predicted (16 - 1)/2 slots over the mean stored "
      f"length {f['mean length']:.0f}: {predicted:.1%}")
assert frag[1]["paged"] == 1.0, "block size 1 wastes nothing"
assert 1 - f["paged"] < 0.04 and abs((1 - f["paged"]) - predicted) < 0.5 * predicted
assert f["reserve S_max"] < 0.5 and f["reserve prompt + max_tokens"] < 0.9

# %% [markdown]
# Paging wastes only the unfilled tail of each sequence's last block, about (block size − 1)/2
# slots per sequence on average, a few percent at block size 16, none at block size 1. The
# contiguous schemes hold tokens in only part of what they reserve, and reserving the maximum
# length is the worst, which is what limits earlier servers' batch sizes. Why not block size 1?
# Bigger blocks mean fewer table entries and longer contiguous reads for the kernel (vLLM's
# default is 16); the waste grows only linearly with the block size.
#
# ## 4. Block tables, and sharing blocks
#
# Eight requests share a 64-byte system prompt (four full blocks of 16) and differ after it. With
# **prefix caching** a full block is identified by a hash of its tokens *and everything before
# them*, so a later request whose prompt starts the same way finds the blocks already computed
# and skips their prefill. (A block's hash is published once its keys are computed, so the first
# request goes one step ahead.) Below, the pool of a live batch: one cell per block, coloured by
# the request that owns it; blocks with several owners are marked.

# %%
system = corpus.encode(text[1000:1064]).tolist()
users = text_prompts(8, 10, 40)
shared_prompts = [system + u for u in users]


def serve_shared(prefix_caching, steps=None):
    engine = Engine(model, num_blocks=64, block_size=16, max_num_seqs=8, enable_prefix_caching=prefix_caching)
    engine.add_request(shared_prompts[0], 24)
    engine.step()
    reqs = [engine.add_request(p, 24) for p in shared_prompts[1:]]
    for _ in range(steps or 10_000):
        if not engine.has_work:
            break
        engine.step()
    return engine, reqs


engine, _ = serve_shared(True, steps=3)
owners = {}
for r in engine.running:
    for b in r.seq.block_table:
        owners.setdefault(b, []).append(r.request_id)
cells = np.full(64, np.nan)
for b, rs in owners.items():
    cells[b] = rs[0] if len(rs) == 1 else -1
fig, ax = plt.subplots(figsize=(9, 2.2))
ax.imshow(cells.reshape(4, 16), cmap="tab10", vmin=-1, vmax=8, aspect="auto")
for b, rs in owners.items():
    ax.text(b % 16, b // 16, "all" if len(rs) > 1 else f"r{rs[0]}", ha="center", va="center", fontsize=7)
ax.set(title="the KV pool, 64 blocks of 16 slots ('all': shared by every request; blank: free)",
       xticks=[], yticks=[])
plt.show()
for r in engine.running[:3]:
    print(f"request {r.request_id}: block table {r.seq.block_table}")

# %%
rows = {}
for caching in (True, False):
    engine, reqs = serve_shared(caching)
    fed = sum(n for rec in engine.log for _, n in rec.batch)  # every token that went through the model
    prefill = fed - sum(len(r.output) - 1 for r in engine.finished)  # minus decodes (the last token is never fed)
    peak = len(engine.blocks.blocks) - min(rec.free_blocks for rec in engine.log)
    rows[caching] = prefill, peak, np.mean([r.ttft for r in reqs])
    print(f"prefix caching {'on ' if caching else 'off'}: prompt tokens computed {prefill:4d}, "
          f"peak blocks in use {peak:2d}, mean TTFT of requests 2-8 {rows[caching][2] * 1e3:.1f} ms")
    assert all(r.output == solo(p, 24) for r, p in zip(reqs, shared_prompts[1:]))
saved = (len(shared_prompts) - 1) * (len(system) // 16) * 16
print(f"tokens not recomputed: {rows[False][0] - rows[True][0]} = 7 requests x {len(system) // 16} shared "
      f"blocks x 16 = {saved}")
assert rows[False][0] - rows[True][0] == saved

# %% [markdown]
# Exactly the shared blocks' tokens are not recomputed, and fewer blocks are held at once; the
# outputs are unchanged. On this tiny model a prefill of a few hundred tokens costs about as
# much as a decode step, so the TTFT hardly moves either way (compare the two lines above); on
# a real model a long system prompt's prefill is most of the TTFT (notebook 10).
#
# The same mechanism serves **n samples of one prompt** (`n=4`): the prompt is prefilled once,
# the samples share its blocks and only diverge after it. The first write into a shared, partly
# filled block copies it first (**copy-on-write**), so a sample never overwrites its siblings'
# keys. We count the blocks against four independent requests.

# %%
prompt = corpus.encode(text[5000:5100]).tolist()  # 100 bytes: 6 full blocks + a partial one
peaks = {}
for label, n_each, copies in (("n=4 from one prompt", 4, 1), ("4 separate requests", 1, 4)):
    engine = Engine(model, num_blocks=128, block_size=16, max_num_seqs=8, enable_prefix_caching=False)
    for _ in range(copies):
        engine.add_request(prompt, 40, temperature=1.0, n=n_each)
    while engine.has_work:
        engine.step()
    peaks[label] = len(engine.blocks.blocks) - min(rec.free_blocks for rec in engine.log)
    print(f"{label}: peak blocks {peaks[label]}, copy-on-write copies {engine.copies}")
shared_blocks = len(prompt) // 16  # the full prompt blocks, shared by all four samples
print(f"saved {peaks['4 separate requests'] - peaks['n=4 from one prompt']} blocks = 3 samples x "
      f"{shared_blocks} full prompt blocks")
assert peaks["4 separate requests"] - peaks["n=4 from one prompt"] == 3 * shared_blocks

# %% [markdown]
# ## 5. Preemption: out of blocks, recompute later
#
# What if sequences grow until the pool is full? The engine **preempts** the most recently
# admitted sequence: frees its blocks and puts it back at the front of the queue; when it is
# readmitted, its prompt *and the tokens it had generated* are prefilled again (recompute), and
# it continues. Here the pool (24 blocks of 8 slots) is far too small for the twelve requests of
# section 1 at once.

# %%
engine = Engine(model, num_blocks=24, block_size=8, max_num_seqs=8)
reqs = [engine.add_request(p, m) for p, m in zip(prompts, limits)]
while engine.has_work:
    engine.step()
fig, ax = plt.subplots(figsize=(9, 3))
steps = np.arange(len(engine.log))
ax.plot(steps, [len(rec.batch) for rec in engine.log], color=COLORS["cached"], label="sequences in the step")
ax.plot(steps, [rec.free_blocks for rec in engine.log], color=COLORS["theory"], label="free blocks")
for i, rec in enumerate(engine.log):
    for rid in rec.preempted:
        ax.axvline(i, color=COLORS["measured"], alpha=0.5)
        ax.annotate(f"r{rid}", (i, 22), color=COLORS["measured"], fontsize=7)
ax.set(xlabel="step", title=f"{engine.preemptions} preemptions (red lines) in a pool of 24 blocks")
ax.legend(fontsize=8)
plt.show()
same = all(r.output == solo(p, m) for r, p, m in zip(reqs, prompts, limits))
print(f"{engine.preemptions} preemptions; outputs equal solo decoding: {same}; "
      f"blocks free at the end: {engine.blocks.num_free_blocks}/24")
assert engine.preemptions > 0 and same and engine.blocks.num_free_blocks == 24

# %% [markdown]
# Recompute costs prefill work again, but with a KV cache the result is the same function of the
# same tokens, so the answer is unchanged. (vLLM can also swap the blocks to CPU memory instead.)
#
# ## 6. Throughput against concurrency, on this device
#
# The lecture's thesis once more: a decode step reads all the weights whatever the batch, so
# serving B requests at once costs little more per step than one. B requests arrive together,
# each generating 48 tokens; output tokens per second of the whole run. On a GPU the model is a
# Llama-3.2-1B-shaped one with random bf16 weights (2.5 GB of weights, where the memory wall is
# real), and the decode steps replay CUDA graphs; on a CPU it is the small checkpoint.
#
# The model line is the simulator (section 7) with this device's **measured** copy bandwidth
# and matmul rate, plus one constant per-step overhead (on a GPU mostly the many small
# kernels of an uncompiled step, each taking microseconds even inside a CUDA graph; then Python
# and sampling), the only fitted number, taken from the B = 1 run.

# %%
# NBVAL_IGNORE_OUTPUT
if env.on_gpu:
    big = build_model(get_config("llama3.2-1b-like"), env.device, env.dtype)
    Bs = [1, 4, 16, 64, 256]
else:
    big = model
    Bs = [1, 2, 4, 8, 16]
new_tokens, prompt_len = 48, 64
bandwidth = ceilings.measure_copy_bandwidth(env.device)
peak = ceilings.measure_matmul_flops(env.device, next(big.parameters()).dtype, seconds=0.3)
measured, seconds_of, steps_of = [], [], []
for B in Bs:
    engine = Engine(big, num_blocks=B * 8 + 8, block_size=16, max_num_seqs=B)
    batch_prompts = [[rng.randrange(big.cfg.V) for _ in range(prompt_len)] for _ in range(B)]
    engine.generate(batch_prompts[:1], 4, ignore_eos=True)  # warm-up
    warm_steps = len(engine.log)
    if env.on_gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    engine.generate(batch_prompts, new_tokens, ignore_eos=True)
    if env.on_gpu:
        torch.cuda.synchronize()
    seconds_of.append(time.perf_counter() - start)
    steps_of.append(len(engine.log) - warm_steps)
    measured.append(B * new_tokens / seconds_of[-1])
elt = next(big.parameters()).element_size()


def simulated(B, overhead):
    cost = StepCost(big.cfg, bandwidth, peak, bytes_per_value=elt, overhead=overhead)
    sim = SimulatedEngine(big.cfg, cost, num_blocks=B * 8 + 8, block_size=16, max_num_seqs=B)
    return sim.run([(0.0, [0] * prompt_len, new_tokens)] * B) and sim.now


roofline_seconds = [simulated(B, 0.0) for B in Bs]
overhead = max(0.0, (seconds_of[0] - roofline_seconds[0]) / steps_of[0])  # the one fitted number
roofline_only = [B * new_tokens / s for B, s in zip(Bs, roofline_seconds)]
model_line = [B * new_tokens / simulated(B, overhead) for B in Bs]
print(f"{big.num_params() / 1e6:,.0f}M parameters, {elt} bytes each; measured bandwidth {bandwidth / 1e9:,.0f} GB/s, "
      f"matmul {peak / 1e12:,.1f} TFLOP/s; fitted overhead {overhead * 1e3:.2f} ms/step")
for B, m, s, r in zip(Bs, measured, model_line, roofline_only):
    print(f"B={B:>3}: measured {m:>9,.0f} tok/s ({m / measured[0]:5.1f}x B=1)   model {s:>9,.0f}   "
          f"roofline alone {r:>9,.0f}")
fig, ax = plt.subplots()
ax.plot(Bs, measured, "o-", color=COLORS["measured"], label="measured (engine)")
ax.plot(Bs, model_line, "--", color=COLORS["theory"], label="simulator: roofline + fitted step overhead")
ax.plot(Bs, roofline_only, ":", color=COLORS["roofline"], label="roofline alone (no overhead)")
ax.set(xscale="log", yscale="log", xlabel="concurrent requests B", ylabel="output tokens / s",
       title=f"Throughput vs concurrency ({env.info.type})")
ax.set_xticks(Bs, [str(B) for B in Bs])
ax.legend(fontsize=8)
plt.show()

# %%
gain = measured[-1] / measured[0]
print(f"{Bs[-1]} concurrent requests: {gain:.1f}x the throughput of one at a time; measured / model: "
      + ", ".join(f"B={B} {m / s:.2f}" for B, m, s in zip(Bs, measured, model_line)))
assert gain > 3, "batching decode steps must raise throughput well above one request at a time"

# %% [markdown]
# Throughput rises with B because a step's cost, the weights read and the fixed per-step
# overhead, is shared by more tokens; it bends where the KV reads and the arithmetic start to
# grow with B. The model line assumes the overhead stays constant per step. Where the measured
# points fall under it, the overhead itself grows with the batch: the Python work per request
# (scheduling, block tables, sampling) and, on a CPU, the padded path's gathered copy of every
# sequence's blocks. The ratio measured / model is printed above.
#
# **Measured on an H200** (`python -m lecture_lib.serving.bench --offline`, nano-vllm's offline
# benchmark: 256 requests of 100–1024 random prompt tokens and 100–1024 output tokens, 133,966
# output tokens, Llama-3.2-1B shape, bf16): stored in `data/reference/h200/`, printed here.

# %%
import json

from lecture_lib.paths import data_path

bench = json.loads(data_path("reference/h200/serving_offline_h200.json").read_text())
print(f"{bench['device']}, torch {bench['torch']}, {bench['requests']} requests, {bench['output_tokens']:,} output tokens")
for label, r in bench.items():
    if isinstance(r, dict) and "tok_per_s" in r:
        extra = f", {r['fraction_of_bound']:.0%} of the simulated bound" if "fraction_of_bound" in r else ""
        if "new_tokens_each" in r:
            extra = f", {r['new_tokens_each']} new tokens per request (it takes one length), transformers {r['transformers']}"
        runs_ = ", ".join(f"{x:,.0f}" for x in r.get("all_tok_per_s", [r["tok_per_s"]]))
        print(f"  {label:>28}: {r['tok_per_s']:>8,.0f} output tok/s (runs: {runs_}){extra}")

# %% [markdown]
# ## 7. The simulator: the same scheduler on a virtual clock
#
# `SimulatedEngine` *is* the engine (same admission, chunked prefill, blocks, prefix caching,
# preemption); only the forward pass is replaced by the roofline cost of the step on a chosen GPU
# (`StepCost`: max(bytes / bandwidth, FLOPs / peak) + overhead). A test checks that it schedules
# exactly the batches the real engine does. So a workload of hundreds of requests replays in
# about a second, and the knobs can move. Below, 150 requests with Poisson arrivals on a
# Llama-3.2-1B shape: prompts of 100–1024 tokens, answers of 32–256.

# %%
cfg_1b = get_config("llama3.2-1b-like")


def workload(rate, n=150, seed=0):
    r = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += r.expovariate(rate)
        out.append((t, [r.randrange(cfg_1b.V) for _ in range(r.randrange(100, 1024))], r.randrange(32, 256)))
    return out


def simulate(rate, policy, max_num_seqs=64, block_size=16, budget=2048, gpu="H200", overhead_ms=0.0):
    cost = StepCost.for_gpu(cfg_1b, gpu, overhead=overhead_ms / 1e3)
    sim = SimulatedEngine(cfg_1b, cost, num_blocks=60_000 // block_size, block_size=block_size,
                          max_num_seqs=max_num_seqs, max_tokens_per_step=budget, policy=policy)
    return sim, summarize(sim.run(workload(rate)))


rates = [20, 100, 300, 600, 1000, 3000]
curves = {p: [simulate(rate, p)[1] for rate in rates] for p in ("static", "continuous")}
fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
for p, color in (("static", COLORS["naive"]), ("continuous", COLORS["cached"])):
    a1.plot(rates, [c["output_tok_per_s"] for c in curves[p]], "o-", color=color, label=p)
    a2.plot(rates, [c["ttft_p99_s"] * 1e3 for c in curves[p]], "o-", color=color, label=p)
a1.set(xscale="log", xlabel="request rate (req/s)", ylabel="output tok/s", title="throughput (simulated H200)")
a2.set(xscale="log", yscale="log", xlabel="request rate (req/s)", ylabel="p99 TTFT (ms)", title="time to first token")
a1.legend(fontsize=8)
plt.show()
for rate, s, c in zip(rates, curves["static"], curves["continuous"]):
    print(f"{rate:>4} req/s: static {s['output_tok_per_s']:>7,.0f} tok/s, p99 TTFT {s['ttft_p99_s'] * 1e3:>7,.0f} ms | "
          f"continuous {c['output_tok_per_s']:>7,.0f} tok/s, p99 TTFT {c['ttft_p99_s'] * 1e3:>6,.0f} ms")
assert all(c["ttft_p99_s"] < s["ttft_p99_s"] for s, c in zip(curves["static"], curves["continuous"]))
assert curves["continuous"][-1]["output_tok_per_s"] > 1.2 * curves["static"][-1]["output_tok_per_s"]
print(f"saturated: continuous {curves['continuous'][-1]['output_tok_per_s'] / curves['static'][-1]['output_tok_per_s']:.2f}x "
      "the throughput of static batching")

# %% [markdown]
# At low rates both keep up: throughput is what arrives. Even then static batching's TTFT is
# the length of a whole batch, because a newcomer waits for the current batch's longest answer,
# while continuous batching admits it at the next step (its TTFT is one prefill). At high rates
# both saturate, and continuous batching saturates higher: a static batch drains as its members
# finish, so its late steps carry few sequences. Past saturation TTFT is queueing: with this
# finite burst of 150 requests it grows with the rate until they all arrive at once. (Notebook 10
# does this with a real server, a load generator and latency percentiles.) Try the knobs: the
# batch limit, the block size, the token budget (a small budget chunks long prompts: smoother
# decodes, later first tokens), another GPU, a per-step overhead.

# %%
def explore(rate=50, policy="continuous", max_num_seqs=64, block_size=16, budget=2048, gpu="H200", overhead_ms=0.0):
    sim, s = simulate(rate, policy, max_num_seqs, block_size, budget, gpu, overhead_ms)
    fig, ax = plt.subplots(figsize=(9, 3))
    ax.plot([rec.end for rec in sim.log], [len(rec.batch) for rec in sim.log], color=COLORS["cached"], lw=0.8)
    ax.set(xlabel="simulated time (s)", ylabel="sequences in the step",
           title=f"{policy}, {rate} req/s on {gpu}: {s['output_tok_per_s']:,.0f} tok/s, "
                 f"TTFT p50 {s['ttft_p50_s'] * 1e3:,.0f} / p99 {s['ttft_p99_s'] * 1e3:,.0f} ms, "
                 f"TPOT p50 {s['tpot_p50_s'] * 1e3:.1f} ms, {sim.preemptions} preemptions")
    plt.show()


explore()  # the static figure (what a reader without a widget frontend sees)

# %%
# NBVAL_IGNORE_OUTPUT
widgets.interact(
    explore,
    rate=w.SelectionSlider(options=[2, 5, 10, 20, 50, 100, 200, 500], value=50, description="req/s"),
    policy=w.ToggleButtons(options=["continuous", "static"], description="policy"),
    max_num_seqs=w.SelectionSlider(options=[4, 8, 16, 32, 64, 128, 256], value=64, description="max seqs"),
    block_size=w.SelectionSlider(options=[1, 4, 16, 64, 256], value=16, description="block size"),
    budget=w.SelectionSlider(options=[256, 512, 1024, 2048, 4096, 8192], value=2048, description="token budget"),
    gpu=w.Dropdown(options=[k for k, s in load_specs().items() if s.flops.get("bf16")], value="H200",
                   description="GPU"),
    overhead_ms=w.FloatSlider(min=0.0, max=5.0, step=0.5, value=0.0, description="overhead ms"),
)

# %% [markdown]
# ## Summary
# - Iteration-level scheduling refills a slot the step after it frees; static batching idles it
#   until the whole batch ends. Same tokens, fewer steps (section 1, checked token for token).
# - Selective batching: one row of all the step's tokens through the linear layers, attention
#   per sequence through its block table; chunked prefill keeps every step under a token budget.
# - Paging wastes only each sequence's last partial block (measured above, against about
#   (block size − 1)/2 slots per sequence); contiguous reservation holds tokens in only part
#   of what it reserves.
# - Blocks can be shared: a common prefix is computed once (exactly the shared blocks' tokens
#   are skipped), n samples share their prompt, copy-on-write protects a shared partial block.
# - Preemption by recompute frees memory when the pool runs out, and changes no output.
# - Throughput grows with concurrency because a decode step's cost is mostly shared; the
#   simulator, with measured ceilings and one fitted overhead, tracks the engine.
#
# ## Exercises
# 1. In section 3, what block size makes the paged waste equal to the "reserve prompt +
#    max_tokens" scheme's? Predict it from (block size − 1)/2 first.
# 2. Turn prefix caching off in section 4's first figure: how many blocks does the pool hold?
# 3. In the simulator, find the request rate where static batching's p99 TTFT passes one second,
#    and the one for continuous batching. How does `max_num_seqs` move them?
# 4. With a token budget of 256, what happens to TTFT at 50 req/s, and why? (Chunked prefill.)
