# %% [markdown]
# # 11 · When one GPU is not enough: tensor-parallel decode
#
# *Follows CS336 Lecture 10, "Throughput and latency": "easy parallelism" (replicas) and "harder
# parallelism" (shard the model and the KV cache), with kipply's "Transformer Inference
# Arithmetic" and the scaling book's Parts 7 and 8.*
#
# Two reasons to spread one model over several GPUs: its weights and KV cache do not fit one
# device, or one device reads them too slowly. Replicas (M copies) multiply throughput but never
# shorten a step; only **sharding** the model does. Tensor parallelism (Megatron-LM) splits every
# layer: each of W chips keeps N/W query heads and K/W KV heads (so 1/W of the KV cache too)
# and F/W of the MLP's hidden units, reads 1/W of the weights per step, and pays with **two
# all-reduces per layer** to sum the partial outputs of the attention's and the MLP's last
# projections.
#
# In this notebook you will
# 1. count the bytes per chip, and see a Llama-3-70B with a long-context batch outgrow one GPU,
# 2. do the communication arithmetic: all-reduce bytes and time per layer, the lecture's numbers,
# 3. predict the decode step and the speed-up against W, and where more chips stop paying,
# 4. run the sharded model: CPU processes here (a functional demo), GPUs where there are several,
# 5. compare with measured multi-GPU runs where they are stored.

# %%
# NBVAL_IGNORE_OUTPUT
import json
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import torch

from lecture_lib import analysis, get_config, hardware
from lecture_lib.checkpoints import load_checkpoint
from lecture_lib.decode import generate_cached
from lecture_lib.notebook import setup
from lecture_lib.parallel import cost
from lecture_lib.parallel.run import decode_on_ranks, spawn
from lecture_lib.paths import data_path
from lecture_lib.plotting import COLORS

env = setup(seed=0)

# %% [markdown]
# ## 1. Bytes per chip: when one GPU is not enough
#
# Each chip holds its slice of the layers (1/W), the parts every chip keeps whole (embedding,
# LM head, norms) and its K/W heads of the KV cache (`parallel.cost.bytes_per_chip`). Llama-3-70B
# in bf16 with a batch of 8 sequences at 32k context, against the memory of an H100 and an H200:

# %%
big = get_config("llama3-70b")
B, S = 8, 32_768
kv_token = analysis.kv_bytes_per_token(big)
gpus = {name: hardware.get_spec(name).memory_bytes for name in ("H100 SXM", "H200")}
print(f"Llama-3-70B: {analysis.num_params_exact(big) / 1e9:.1f}B parameters = {analysis.num_params_exact(big) * 2 / 1e9:.0f} GB "
      f"in bf16; KV {kv_token:,.0f} B per token, {B * S * kv_token / 1e9:.0f} GB for {B} x {S:,} tokens")
fits = {}
for W in (1, 2, 4, 8):
    held = cost.bytes_per_chip(big, W, B, S)
    fits[W] = {name: held <= mem for name, mem in gpus.items()}
    print(f"W = {W}: {held / 1e9:6.1f} GB per chip; fits "
          + ", ".join(f"{name} ({mem / 1e9:.0f} GB): {'yes' if fits[W][name] else 'no'}" for name, mem in gpus.items()))
assert not fits[1]["H200"] and fits[2]["H200"], "the 70B batch needs more than one H200, and two suffice"

# %% [markdown]
# One H200 cannot hold it; two can, because both the weights and the KV heads split. (The
# scaling book's Part 8 makes the same count for TPU v5e chips of 16 GB: at 8k context, 16
# chips in bf16, 8 in int8, 4 in int4.) The replicated embedding and LM head
# (2 × V × D values) are what does not shrink with W.
#
# ## 2. What the chips exchange
#
# After each row-parallel projection every chip has a partial sum of the [B D] output, and an
# all-reduce adds them. A ring all-reduce is a reduce-scatter and then an all-gather: each chip
# sends (W − 1)/W of the buffer in each, so 2·(W − 1)/W · B·D·2 bytes per all-reduce in bf16, two
# all-reduces per layer. kipply counts 4·(W − 1)·D/W bytes per layer and token: one phase of each
# ring. At decode sizes the bytes hardly matter; a fixed latency per all-reduce does.

# %%
small = get_config("llama3-8b")
link = cost.LINKS["NVLink 4 (H100/H200 SXM)"]["bandwidth"]
for W in (2, 4, 8):
    ring, kip = cost.ring_bytes_per_layer(small, W), cost.kipply_bytes_per_layer(small, W)
    print(f"Llama-3-8B, W = {W}, batch 1: ring {ring / 1e3:5.1f} kB per layer per chip (kipply's count {kip / 1e3:4.1f} kB), "
          f"{ring / link * 1e9:5.1f} ns over NVLink at {link / 1e9:.0f} GB/s each way")

# the lecture's (kipply's) worked numbers, from the same formulas
bw, flops, nvlink_a100 = 1.5e12, 312e12, 300e9  # kipply's A100: bytes/s, FLOP/s, NVLink per direction
print(f"kipply, 52B (d = 8192, L = 64): 24·L·d² / 1.5e12 = {24 * 64 * 8192 ** 2 / bw * 1e3:.0f} ms per step on one A100, "
      f"{24 * 64 * 8192 ** 2 / (4 * bw) * 1e3:.0f} ms on 4")
print(f"kipply, 260B on 16 A100s, small batch: 2·P / (N·A_bm) = {2 * 260e9 / (16 * bw) * 1e3:.1f} ms, "
      f"comms 4·L·8 µs = {cost.kipply_latency(get_config('llama3-70b')) * 1e3:.2f} ms (L = 80)")
print(f"kipply, 260B on 16 A100s, batch 512: compute {512 * 2 * 260e9 / (16 * flops) * 1e3:.1f} ms, "
      f"comms B·2·L·4·d / A_c = {512 * 2 * 80 * 4 * 16384 / nvlink_a100 * 1e3:.1f} ms")
ici = cost.LINKS["TPU v5e ICI (one link)"]["bandwidth"]
print(f"scaling book: an 8-way ICI collective is latency-bound under {8 * ici * 1e-6 / 1e3:.0f} kB "
      f"(bytes / 8 / 4.5e10 < 1 µs); batch 16 x D 8192 in int8 is {16 * 8192 / 1e3:.0f} kB")
print(f"scaling book: memory-bound decode can shard up to F / (B·β) = 16384 / (32 · 8) = {16384 // (32 * 8)}-way")

# %% [markdown]
# The lecture's numbers come out: 69 ms on one A100 and 17 ms on four for kipply's 52B model;
# 22 ms per token and about 3 ms of messages for a 260B model on 16 GPUs at small batch, 53 ms
# of compute and 18 ms of communication at batch 512; the scaling book's 360 kB and 131 kB, and
# its 64-way. At batch 1 a Llama-3-8B layer sends 16 to 29 kB per chip (W = 2 to 8), which
# NVLink moves in tens of nanoseconds: the real cost is the latency of each all-reduce, several microseconds
# (kipply charges 8 µs a message), paid 2·L times a step.
#
# ## 3. The step, and where more chips stop paying
#
# The decode step on W chips: read this chip's bytes at its HBM bandwidth, then 2·L all-reduces
# (`parallel.cost.tp_step`). The memory part shrinks like 1/W; the latency part does not, so the
# speed-up flattens at (one chip's step) / (what never shrinks). Llama-3-8B at batch 1 on H200s
# (4.8 TB/s, NVLink 450 GB/s each way), for three per-all-reduce latencies:

# %%
h200 = hardware.get_spec("H200").memory_bandwidth
Ws = [1, 2, 4, 8, 16]
latencies = [2e-6, 5e-6, 8e-6]
fig, ax = plt.subplots()
ax.plot(Ws, Ws, ":", color=COLORS["roofline"], label="ideal (speed-up = W)")
crossing = {}
for lat, color in zip(latencies, (COLORS["cached"], COLORS["theory"], COLORS["naive"])):
    kw = dict(hbm_bandwidth=h200, link_bandwidth=link, allreduce_latency=lat)
    s = cost.speedups(small, Ws, **kw)
    ax.plot(Ws, s, "o-", color=color, label=f"model, {lat * 1e6:.0f} µs per all-reduce")
    steps = [cost.tp_step(small, W, **kw) for W in Ws]
    crossing[lat] = next((W for W, st in zip(Ws, steps) if st.comm_s >= st.memory_s), None)
    where = f"from W = {crossing[lat]}" if crossing[lat] else f"at no W up to {Ws[-1]}"
    print(f"{lat * 1e6:.0f} µs: speed-up " + ", ".join(f"W={W} {x:.2f}x" for W, x in zip(Ws, s))
          + f"; ceiling {cost.limit_speedup(small, **kw):.2f}x; the all-reduces outweigh the memory time {where}")
ax.set(xscale="log", yscale="log", xlabel="GPUs (W)", ylabel="decode speed-up over one GPU",
       title="Llama-3-8B, batch 1, bf16, H200 + NVLink (model)")
ax.set_xticks(Ws, [str(W) for W in Ws])
ax.set_yticks([1, 2, 4, 8, 16], ["1", "2", "4", "8", "16"])
ax.legend(fontsize=8)
plt.show()
one = cost.tp_step(small, 1, hbm_bandwidth=h200, link_bandwidth=link, allreduce_latency=5e-6)
print(f"one H200: {one.read_bytes / 1e9:.1f} GB read per step, {one.seconds * 1e3:.2f} ms at the roofline")

# %%
s_lo = cost.speedups(small, [2], hbm_bandwidth=h200, link_bandwidth=link, allreduce_latency=latencies[0])[0]
s_hi = cost.speedups(small, [2], hbm_bandwidth=h200, link_bandwidth=link, allreduce_latency=latencies[-1])[0]
assert 1 < s_hi < s_lo < 2, "two chips help, never by more than 2x, and less the slower each all-reduce"

# %% [markdown]
# At batch 1 the step is short (the whole 8B model is read in a few milliseconds), so the
# 2 × 32 all-reduce latencies are a visible share already at W = 2 (no latency gives 2×), and
# their share grows with W while the memory part shrinks: each further chip buys less than the
# last, and the speed-up can never pass the ceiling. TP stops paying where the all-reduces
# outweigh the reading they save (the W printed for each latency). A larger batch or a longer
# context makes the step's memory part longer, so TP pays further. The published reference:
# gpt-fast decodes Llama-2-7B at 104.9 tok/s on one A100 and 168.8 on two, **1.61×** (its
# README). Against the model, and what the measurement implies:

# %%
a100 = hardware.get_spec("A100 SXM 80GB").memory_bandwidth
l2 = get_config("llama2-7b")
for lat in latencies:
    s2 = cost.speedups(l2, [2], hbm_bandwidth=a100, link_bandwidth=cost.LINKS["NVLink 3 (A100 SXM)"]["bandwidth"],
                       allreduce_latency=lat)[0]
    print(f"Llama-2-7B on 2 A100s, {lat * 1e6:.0f} µs per all-reduce: model {s2:.2f}x (gpt-fast measured {168.8 / 104.9:.2f}x)")
# Solve for the all-reduce time that the measurement implies: one GPU's measured step, its
# memory part on two GPUs scaled by the same efficiency (measured / roofline), the rest is comms.
measured_1 = 1 / 104.9
kw2 = dict(hbm_bandwidth=a100, link_bandwidth=cost.LINKS["NVLink 3 (A100 SXM)"]["bandwidth"], allreduce_latency=0.0)
efficiency = cost.tp_step(l2, 1, **kw2).seconds / measured_1
comm_2 = 1 / 168.8 - cost.tp_step(l2, 2, **kw2).memory_s / efficiency
print(f"gpt-fast's one-A100 step: {measured_1 * 1e3:.2f} ms, {efficiency:.0%} of the roofline's; at the same efficiency, "
      f"its two-GPU step leaves {comm_2 * 1e3:.2f} ms for communication, {comm_2 / (2 * l2.L) * 1e6:.0f} µs per all-reduce")

# %% [markdown]
# The model overestimates gpt-fast's speed-up at every latency shown: read with the measured
# efficiency, the two-GPU step leaves the time printed above to each all-reduce, more than
# kipply's 8 µs. A small all-reduce also synchronises the two GPUs, so it waits for the slower
# one's kernels, and half-size matrices may read at a lower efficiency than whole ones; the
# model charges neither. This is the number a multi-GPU run of this library's benchmark
# would measure directly (`allreduce_ms_per_step`, below).
#
# ## 4. Running it
#
# `parallel.shard_(model)` slices a model in place: the Q, K, V and gate/up projections keep the
# output rows of this rank's heads and units (column-parallel), the output and down projections
# keep the matching input columns (row-parallel) and get an all-reduce hook (`torch.distributed`'s
# functional all-reduce, which `torch.compile` traces and a CUDA graph captures). One process per
# device, launched by `torchrun`; here `parallel.run.spawn` starts W CPU processes joined by a
# gloo group on 127.0.0.1.
#
# **This is a functional demo, not a speed measurement**: the processes share this machine's
# CPU cores, and they talk through the loopback network. What it shows is that the sharded model
# computes the same thing: each rank's logits and greedy tokens against one process's.

# %%
# NBVAL_IGNORE_OUTPUT
prompt = [5, 17, 99, 3, 42, 8, 120, 64]
name = "gqa-k8"  # a trained checkpoint with K = 8 KV heads: divisible by 2 and 4
whole = load_checkpoint(name).float()
ref_logits = whole(torch.tensor([prompt]))[0]
ref_tokens = generate_cached(whole, torch.tensor([prompt]), 16).tokens[0].tolist()
demo = {}
for W in (2, 4):
    demo[W] = spawn(decode_on_ranks, W, name, prompt, 16)
    r = demo[W][0]
    print(f"W = {W}: each rank holds N = {r['N_local']} query heads, K = {r['K_local']} KV heads, F = {r['F_local']} MLP units, "
          f"{r['params']:,} of {whole.num_params():,} parameters; {r['allreduces_per_step']} all-reduces per decode step "
          f"(L = {r['L']})")
    for r in demo[W]:
        print(f"   rank {r['rank']}: max |logit - one process| = {(r['logits'] - ref_logits).abs().max():.1e}, "
              f"greedy tokens equal: {r['tokens'] == ref_tokens}, FastGenerator tokens equal: {r['fast_tokens'] == ref_tokens}")

# %%
for W, ranks in demo.items():
    for r in ranks:
        assert r["tokens"] == ref_tokens == r["fast_tokens"], "a sharded model decodes the same tokens"
        assert (r["logits"] - ref_logits).abs().max() < 1e-4, "float32 sums in another order: rounding only"
        assert r["allreduces_per_step"] == 2 * r["L"], "two all-reduces per layer"

# %% [markdown]
# Every rank ends with the full logits (the all-reduces leave each with the complete sum), so
# every rank samples the same token, and the next step starts from the same input everywhere.
# The logits differ from one process's only in the last bits of float32: the partial sums are
# added in another order.
#
# **On a machine with several GPUs**, the benchmark runs one process per GPU over NCCL, the
# decode step compiled and replayed as a CUDA graph, all-reduces included:
#
#     python -m torch.distributed.run --nproc-per-node 2 -m lecture_lib.parallel.run --config llama3-8b --json tp_2.json
#
# The next cell runs it for a Llama-3.2-1B shape if this machine has two GPUs or more (each run
# compiles first, about a minute), and says so if not.

# %%
# NBVAL_IGNORE_OUTPUT
n_gpus = torch.cuda.device_count()
measured = {}
if n_gpus >= 2:
    for W in [W for W in (1, 2, 4) if W <= n_gpus]:
        out = f"/tmp/tp_{W}.json"
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(W), "-m",
                        "lecture_lib.parallel.run", "--config", "llama3.2-1b-like", "--tokens", "128", "--json", out],
                       check=True, capture_output=True, text=True)
        with open(out) as f:
            measured[W] = json.load(f)
        assert measured[W]["status"] == "ok", measured[W]
        print(f"W = {W}: {measured[W]['tok_per_s']:.0f} tok/s, step {measured[W]['step_ms']:.2f} ms, all-reduces "
              f"{measured[W]['allreduce_ms_per_step']:.2f} ms per step alone, {measured[W]['max_memory_bytes_per_rank'] / 1e9:.1f} GB per GPU")
else:
    print(f"{n_gpus} GPU(s) here: the multi-GPU benchmark needs two or more (see the command above).")

# %% [markdown]
# ## 5. Measured on GPUs
#
# Reference runs of the benchmark on 2 and 4 GPUs are stored in `data/reference/` when they have
# been made (`tp_*.json`), and overlaid on the model here.

# %%
refs = sorted(data_path("reference").glob("*/tp_*.json"))
if refs:
    for path in refs:
        with open(path) as f:
            r = json.load(f)
        what = f"{r['tok_per_s']:.1f} tok/s" if r.get("status", "ok") == "ok" else r["status"]
        print(f"{path.parent.name}/{path.name}: {r['config']} on {r['world']} x {r['device']}, batch {r['batch']}: {what}, "
              f"{r['max_memory_bytes_per_rank'] / 1e9:.1f} GB per GPU")
else:
    print("No multi-GPU reference run is stored yet: the machines this series was measured on had one GPU. "
          "The model above is the prediction such a run would test.")

# %% [markdown]
# ## Summary
# - Tensor parallelism splits every layer's heads and MLP units over W chips: each holds and
#   reads 1/W of the layers and of the KV cache, plus the embedding and LM head whole. That is
#   how a Llama-3-70B with a long-context batch, too big for one H200, fits on two.
# - The price is two all-reduces per layer. At decode sizes they move a few kilobytes, so their
#   fixed latency, not the link's bandwidth, is what costs: 2·L latencies a step.
# - The speed-up grows like W while reading the weights dominates the step, and flattens as the
#   all-reduces, whose latency never shrinks, take a growing share (the model's curves). gpt-fast
#   measured 1.61× on two A100s, less than the model predicts: its all-reduces cost more than
#   the latencies assumed here.
# - The sharded model computes the same function: same logits up to float32 rounding, same
#   tokens, 2 all-reduces per layer (the CPU demo).
#
# ## Exercises
# 1. At which batch size does the bandwidth term of the all-reduces (`ring_bytes_per_layer`)
#    match their latency on NVLink? On PCIe?
# 2. Predict the speed-up of Llama-3-70B at batch 8 and 32k context on 2, 4 and 8 H200s. Why does
#    it stay closer to W than Llama-3-8B at batch 1?
# 3. Replicas or shards: with 4 GPUs and a Llama-3-8B, compare the throughput of 4 replicas at
#    batch 64 each with one 4-way sharded model at batch 256 (use `cost.tp_step` with B and S).
