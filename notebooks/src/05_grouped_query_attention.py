# %% [markdown]
# # 05 · Grouped-query attention: fewer KV heads, smaller cache
#
# *Follows CS336 Lecture 10, "Reducing KV-cache size" (GQA, MLA, cross-layer attention, local
# attention), with the lecture's Llama 2 13B numbers from "Throughput and latency".*
#
# Decode is memory-bound: every step reads all the weights and the whole KV cache (notebooks 03
# and 04). At long contexts and big batches the **KV cache** is most of those bytes, and it is
# also what limits how many sequences fit on the GPU. Grouped-query attention (GQA) keeps N query
# heads but only K key/value heads, each shared by G = N/K query heads: the cache shrinks by N/K.
# K = N is ordinary multi-head attention (MHA), K = 1 is multi-query attention (MQA).
#
# *On a projector:* set `LECTURE_PRESENTATION=1` before starting Jupyter, or call
# `setup(presentation=True)` in the first code cell, for larger fonts in every figure.

# %%
# NBVAL_IGNORE_OUTPUT
import math

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange, repeat
from tqdm.auto import tqdm

from lecture_lib import ModelConfig, Transformer, analysis, devices, get_config, widgets
from lecture_lib.cache import GroupedDecodeKVCache, KVCache
from lecture_lib.checkpoints import load_checkpoint, load_meta, perplexity
from lecture_lib.config import mla_config
from lecture_lib.corpus import heldout_tokens
from lecture_lib.gqa import expand_kv_heads, pool_kv_heads
from lecture_lib.hardware import get_spec, load_specs
from lecture_lib.measure import ceilings
from lecture_lib.measure.gqa_sweep import decode_sweep_graphed, sweep_batch
from lecture_lib.model import apply_rope
from lecture_lib.notebook import setup
from lecture_lib.plotting import COLORS, human_bytes

env = setup(seed=0)

# %% [markdown]
# In this notebook you will
# 1. see MHA, GQA and MQA as **one implementation** (query head n reads KV head n // G), checked
#    against attention written head by head from the textbook definition,
# 2. compute parameters and KV bytes per token for real models,
# 3. reproduce the lecture's **Llama 2 13B** example (K = 40 vs K = 8; B = 1, 64, 256): memory,
#    latency, throughput and what fits in 80 GB, and see how much of the gain is smaller weights,
# 4. **measure** the decode step time and memory against K at a long context on your device,
# 5. measure the **quality** side on trained models: held-out perplexity of K = N, N/4 and 1,
# 6. do the KV arithmetic of MLA (DeepSeek-V2), sliding windows (Mistral) and cross-layer sharing,
# 7. play with a widget: model, K, batch, context → memory and the largest batch that fits.

# %% [markdown]
# ## 1. One implementation: N query heads, K KV heads
#
# The queries have N heads, the keys and values K heads, and K divides N. Query heads are split
# into K groups of G = N/K consecutive heads; group k reads KV head k. So **query head n reads KV
# head n // G**. In einops notation, the keys each query head sees are
# `repeat(k, "B K S H -> B (K G) S H", G=G)`: the head axis (K G) runs over K groups of G heads.
# Label each KV head with its own number and look where the copies land:

# %%
# NBVAL_CHECK_OUTPUT
N = 8
for K in (8, 4, 2, 1):
    G = N // K
    kv_head = torch.arange(K).view(1, K, 1, 1)  # [B K S H]: KV head k holds the number k
    seen_by_query_head = repeat(kv_head, "B K S H -> B (K G) S H", G=G).flatten().tolist()
    assert seen_by_query_head == [n // G for n in range(N)]
    name = "MHA" if K == N else "MQA" if K == 1 else "GQA"
    print(f"{name} K={K} G={G}: query heads 0..{N - 1} read KV heads {seen_by_query_head}")

# %% [markdown]
# The library's attention (`lecture_lib.model.Attention`) has no separate MHA/GQA/MQA code: it
# projects to N query heads and K KV heads and calls `scaled_dot_product_attention(...,
# enable_gqa=True)`, which reads KV head n // G for query head n **without materialising the
# repeated copy** (that copy would cost exactly the memory traffic GQA saves).
#
# To check it, here is causal attention written from the textbook definition, one query head at a
# time: softmax(q·kᵀ/√H)·v with the future masked, heads concatenated, output projection.

# %%
def attention_by_hand(x, attn, cos, sin):
    """Causal attention of x [B T D], one query head at a time, with the weights of ``attn``."""
    cfg = attn.cfg
    T = x.shape[1]
    q = apply_rope(rearrange(x @ attn.wq.weight.T, "B T (N H) -> B N T H", N=cfg.N), cos, sin)
    k = apply_rope(rearrange(x @ attn.wk.weight.T, "B T (K H) -> B K T H", K=cfg.K), cos, sin)
    v = rearrange(x @ attn.wv.weight.T, "B T (K H) -> B K T H", K=cfg.K)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    heads = []
    for n in range(cfg.N):
        kv = n // cfg.G  # the KV head this query head reads (kv = n when K = N: plain MHA)
        scores = q[:, n] @ k[:, kv].transpose(-1, -2) / math.sqrt(cfg.H)  # [B T T]
        heads.append(torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v[:, kv])
    return torch.cat(heads, dim=-1) @ attn.wo.weight.T  # [B T N·H] @ [N·H D]


base = get_config("small")  # N = 8 query heads, H = 32
x = torch.randn(2, 24, base.D)
for K in (8, 4, 2, 1):
    model = Transformer(base.replace(K=K)).eval()
    attn, cos, sin = model.layers[0].attn, model.rope_cos[:24], model.rope_sin[:24]
    with torch.no_grad():
        ours = attn(x, cos, sin, None, None, 0, 0)  # the library's one code path
        ref = attention_by_hand(x, attn, cos, sin)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    print(f"K={K}: library attention equals the head-by-head definition "
          f"(max difference {(ours - ref).abs().max():.1e}); K/V projection {tuple(attn.wk.weight.shape)}")

# %% [markdown]
# With K = N = 8 the loop above *is* plain multi-head attention (every query head has its own
# KV head), so the library's K = N path is MHA. The reverse view is just as useful: a GQA model
# **is** an MHA model whose K/V heads are tied within each group. `gqa.expand_kv_heads` copies each
# KV head's projection to its G query heads and gets an MHA model with identical outputs, and a
# cache G times larger:

# %%
gqa_model = Transformer(base.replace(K=2)).eval()
mha_model = expand_kv_heads(gqa_model)
tokens = torch.randint(0, base.V, (2, 32))
with torch.no_grad():
    torch.testing.assert_close(mha_model(tokens), gqa_model(tokens), atol=1e-5, rtol=1e-4)
small_cache, big_cache = KVCache.for_model(gqa_model, 1, 1024).nbytes, KVCache.for_model(mha_model, 1, 1024).nbytes
assert big_cache == base.N // 2 * small_cache
print(f"GQA (K=2) and its expanded MHA twin (K=8): same logits; KV cache for 1024 tokens "
      f"{human_bytes(small_cache)} vs {human_bytes(big_cache)}")

# %% [markdown]
# **Takeaway:** MHA, GQA and MQA differ only in K. GQA is MHA with K/V heads shared inside groups:
# the same function class minus some freedom, for a KV cache N/K times smaller.

# %% [markdown]
# ## 2. Parameters and KV bytes per token of real models
#
# With the lecture's formulas (`analysis.num_params`, `analysis.kv_bytes_per_token`, bf16):
#
# $$\text{params} = 2VD + 3DFL + (2DNH + 2DKH)L, \qquad \text{KV bytes/token} = 2 \cdot L \cdot K \cdot H \cdot 2.$$

# %%
# NBVAL_CHECK_OUTPUT
real = ["llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "mistral-7b"]
print(f"{'model':>11} {'L':>3} {'N':>3} {'K':>3} {'G':>3} {'params':>8} {'KV B/token':>11} "
      f"{'vs MHA':>7} {'tokens per GB of KV':>20}")
for name in real:
    c = get_config(name)
    per_token = analysis.kv_bytes_per_token(c)
    mha_per_token = analysis.kv_bytes_per_token(c.replace(K=c.N))
    print(f"{name:>11} {c.L:>3} {c.N:>3} {c.K:>3} {c.G:>3} {analysis.num_params(c) / 1e9:>7.2f}B "
          f"{per_token:>11,.0f} {mha_per_token / per_token:>6.0f}x {1e9 / per_token:>20,.0f}")
assert analysis.kv_bytes_per_token(get_config("llama2-13b")) == 819_200  # 800 KiB
assert analysis.kv_bytes_per_token(get_config("llama3-8b")) == 131_072  # 128 KiB
assert analysis.kv_bytes_per_token(get_config("llama3-70b")) == 327_680  # 320 KiB

# %% [markdown]
# Llama 3 70B keeps **less** KV per token (320 KiB) than Llama 2 13B (800 KiB) though it is five
# times bigger: 8 KV heads instead of 40. Every model released after Llama 2 70B in this table
# uses G = 4 or 8.
#
# ## 3. The lecture's worked example: Llama 2 13B with K = 40 and K = 8
#
# The lecture's memory-bound model (`analysis.compute_transformer_stats`): every decode step
# reads all parameters and all KV caches from HBM, at the H100's 3.35 TB/s, nothing else costs
# time:
#
# $$\text{memory} = B \cdot S \cdot 2LKH \cdot 2 + 2 \cdot \text{params}, \qquad
# \text{latency} = \frac{\text{memory}}{\text{bandwidth}}, \qquad
# \text{throughput} = \frac{B}{\text{latency}}.$$
#
# S = 1024 tokens of context, batches of 1, 64 and 256 sequences, and the same model with 8 KV
# heads instead of 40 (G = 5):

# %%
# NBVAL_CHECK_OUTPUT
llama13 = get_config("llama2-13b")
S, bandwidth, hbm = 1024, analysis.H100_MEMORY_BANDWIDTH, analysis.H100_MEMORY_BYTES
print(f"Llama 2 13B, S = {S}, H100: {bandwidth / 1e12} TB/s, {hbm / 1e9:.0f} GB")
stats = {}
for K in (40, 8):
    for B in (1, 64, 256):
        s = stats[K, B] = analysis.compute_transformer_stats(llama13.replace(K=K), B, S)
        print(f"K={K:2d} B={B:3d}: params {s.num_params / 1e9:.2f}e9, KV {s.kv_bytes_per_sequence / 1e9:.3f} GB/seq, "
              f"memory {s.memory / 1e9:6.2f} GB ({'fits' if s.memory <= hbm else 'DOES NOT FIT'}), "
              f"latency {s.latency * 1e3:5.2f} ms/token, throughput {s.throughput:6,.0f} tokens/s")

# %% [markdown]
# What fits in 80 GB next to the weights, `analysis.max_batch_that_fits`:
# floor((80e9 − 2·params) / (S · KV bytes per token)):

# %%
# NBVAL_CHECK_OUTPUT
max_batch = {}
for K in (40, 8):
    c = llama13.replace(K=K)
    max_batch[K] = analysis.max_batch_that_fits(c, S, memory_bytes=hbm)
    best = analysis.compute_transformer_stats(c, max_batch[K], S)
    print(f"K={K:2d}: weights {2 * analysis.num_params(c) / 1e9:.2f} GB, at most B = {max_batch[K]} sequences of "
          f"{S} tokens -> {best.throughput:,.0f} tokens/s at {best.latency * 1e3:.2f} ms/token")

# The lecture's statements, reproduced by the library:
assert stats[40, 256].memory > 80e9  # B = 256 does not fit in an H100 with MHA...
assert stats[8, 256].memory < 80e9  # ...but does with 8 KV heads
assert round(stats[40, 1].num_params / 1e9, 2) == 13.02 and round(stats[8, 1].num_params / 1e9, 2) == 11.34
for K in (40, 8):  # bigger batch: worse latency (more KV to read), better throughput (weights amortised)
    assert stats[K, 1].latency < stats[K, 64].latency < stats[K, 256].latency
    assert stats[K, 1].throughput < stats[K, 64].throughput < stats[K, 256].throughput
assert max_batch[40] == 64 and max_batch[8] > 5 * max_batch[40]

# %% [markdown]
# With K = 40, B = 64 just fits (79.7 GB) and B = 256 needs three H100s' worth of memory. With
# K = 8 the KV cache is 5 times smaller: B = 256 fits in 66 GB, at less than a third of the MHA
# latency and 3.7 times its throughput.
#
# **A caveat** (LECTURE.md §7, caveat 3): the lecture's formula counts the K/V projection weights
# too, so K = 8 also makes the *model* smaller, 13.02e9 → 11.34e9 parameters, and part of the
# speed-up is just fewer weight bytes. (The scaling book keeps the parameters fixed instead.) Split
# the latency gain into its two parts by keeping the weights at 13.02e9 and shrinking only the KV:

# %%
# NBVAL_CHECK_OUTPUT
for B in (1, 64, 256):
    mha, gqa = stats[40, B], stats[8, B]
    kv_only = (mha.parameter_bytes + B * gqa.kv_bytes_per_sequence) / bandwidth  # same weights, GQA cache
    from_weights = (kv_only - gqa.latency) / (mha.latency - gqa.latency)
    print(f"B={B:3d}: {mha.latency * 1e3:5.2f} -> {gqa.latency * 1e3:5.2f} ms ({mha.latency / gqa.latency:.2f}x); "
          f"smaller KV alone: {kv_only * 1e3:5.2f} ms ({mha.latency / kv_only:.2f}x); "
          f"share of the gain from smaller weights: {from_weights:.0%}")
    if B == 1:
        assert from_weights > 0.5  # at B = 1 most of the lecture's GQA gain is the smaller model
    else:
        assert from_weights < 0.2  # at large B the KV cache is the story

# %% [markdown]
# At B = 1 the KV cache of one 1024-token sequence (0.84 GB) is small next to the 26 GB of
# weights, so GQA barely matters and most of the formula's gain is the 1.7e9 parameters it
# removed. At B = 64 and 256 the cache dominates and the gain is almost all GQA.
#
# The latency/throughput trade-off for every batch size, hollow where it does not fit in 80 GB:

# %%
batches = 2 ** np.arange(0, 11)
fig, ax = plt.subplots()
for K, color, offset in [(40, COLORS["naive"], (6, -10)), (8, COLORS["cached"], (-38, 4))]:
    curve = [analysis.compute_transformer_stats(llama13.replace(K=K), int(B), S) for B in batches]
    lat = np.array([s.latency * 1e3 for s in curve])
    thr = np.array([s.throughput for s in curve])
    fits = np.array([s.memory <= hbm for s in curve])
    ax.plot(lat, thr, "-", color=color, alpha=0.5)
    ax.plot(lat[fits], thr[fits], "o", color=color, label=f"K={K}: fits in 80 GB")
    ax.plot(lat[~fits], thr[~fits], "o", mfc="none", color=color, label=f"K={K}: does not fit")
    for B in (1, 64, 256):
        i = int(np.log2(B))
        ax.annotate(f"B={B}", (lat[i], thr[i]), textcoords="offset points", xytext=offset)
ax.set(xscale="log", yscale="log", xlabel="latency (ms per token)", ylabel="throughput (tokens/s)",
       title=f"Llama 2 13B on an H100, S={S}: memory-bound model")
ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# **Takeaway:** at the batch sizes that make serving cheap, the KV cache is most of what a decode
# step reads; K = 8 buys 5x more sequences in the same memory and moves the whole curve up.

# %% [markdown]
# ## 4. Measured: decode step time and memory against K
#
# Now on your device. Same model, N query heads, K ∈ {N, N/2, N/4, 1}; a batch of B sequences
# whose caches hold a long context S, and one decode step in which each new token attends to the
# whole context. The step reads every weight once and the whole KV cache once, so the
# memory-bound prediction is
#
# $$t_\text{step} \approx \frac{\text{weight bytes} + B \cdot S \cdot 2LKH \cdot \text{bytes}}{\text{memory bandwidth}}$$
#
# (`analysis.decode_bytes_per_step`), with the bandwidth measured by a large copy. Weights are
# random: speed does not depend on what they say.

# %% [markdown]
# How it is measured (`measure.gqa_sweep.decode_sweep_graphed`):
# - **On a GPU** the step is replayed as a **CUDA graph**. Eager PyTorch launches a few hundred
#   kernels per step, one at a time, and on a fast GPU that launch floor (several ms) is longer
#   than the bytes take to read; the graph removes it. The eager time of the same step is shown
#   beside it. Model: the `medium` preset (N = 16) in bf16 (fp16 on a T4), S = 4,096, and the
#   largest B (up to 128) whose four models and caches fit in half the free memory.
# - **On a CPU**: the `small` preset (N = 8) in fp32, 8 sequences of 2,048 tokens, one thread
#   (a small multi-threaded step spends its time synchronising threads).
# - The cache, `cache.grouped.GroupedDecodeKVCache`, hands attention the G query heads of a group as G
#   query rows of their KV head, so each KV head is read once on every backend (with
#   `enable_gqa` alone, backends without GQA support copy each KV head G times first). The cell
#   checks that it gives the same logits as the plain cache.

# %%
# NBVAL_IGNORE_OUTPUT
sweep_cfg = get_config(env.size(cpu="small", gpu="medium"))
Ks = [sweep_cfg.N, sweep_cfg.N // 2, sweep_cfg.N // 4, 1]
S_sweep = env.size(cpu=2048, gpu=4096)
B_sweep, why_B = sweep_batch(sweep_cfg, Ks, S_sweep, env.device, env.dtype, share=0.5, max_B=env.size(cpu=8, gpu=128))
print(f"batch: {why_B}")

# the grouped decode path computes what the model's own attention computes
check_model = Transformer(get_config("small")).eval()
check_tokens = torch.randint(0, check_model.cfg.V, (2, 65))
with torch.no_grad():
    plain_cache, grouped_cache = KVCache.for_model(check_model, 2, 65), GroupedDecodeKVCache.for_model(check_model, 2, 65)
    check_model(check_tokens[:, :64], plain_cache, 0), check_model(check_tokens[:, :64], grouped_cache, 0)
    ref_logits, grouped_logits = (check_model(check_tokens[:, 64:], c, 64) for c in (plain_cache, grouped_cache))
torch.testing.assert_close(grouped_logits, ref_logits, atol=1e-5, rtol=1e-4)
print(f"grouped decode attention = the model's own (max logit difference {(grouped_logits - ref_logits).abs().max():.1e})")

threads = torch.get_num_threads()
if env.device.type == "cpu":
    torch.set_num_threads(1)
bandwidth_measured = ceilings.measure_copy_bandwidth(env.device, seconds=0.5)
points = decode_sweep_graphed(sweep_cfg, Ks, B=B_sweep, S=S_sweep, device=env.device, dtype=env.dtype,
                              repeats=env.size(cpu=3, gpu=10), rounds=env.size(cpu=4, gpu=3), progress=tqdm)
torch.set_num_threads(threads)
how = "CUDA graph" if env.on_gpu else "eager"
print(f"{sweep_cfg.name}: L={sweep_cfg.L} D={sweep_cfg.D} N={sweep_cfg.N} H={sweep_cfg.H}, B={B_sweep}, "
      f"context S={S_sweep}, {devices.dtype_name(env.dtype)}; step timed {how if env.on_gpu else 'eager (no CUDA graphs on a CPU)'}; "
      f"measured copy bandwidth {bandwidth_measured / 1e9:,.1f} GB/s")
print(f"{'K':>3} {'KV cache':>10} {'weights':>10} {'step':>9} {'p10..p90 (ms)':>15} {'bytes/BW':>9} "
      f"{'eager step':>11} {'peak (CUDA)':>12}")
for p in points:
    if p.oom:
        print(f"{p.K:>3} {human_bytes(p.kv_cache_bytes):>10}  out of memory: {p.error[:60]}")
        continue
    peak = human_bytes(p.peak_bytes) if p.peak_bytes is not None else "n/a"
    eager_ms = f"{p.eager_timing.median * 1e3:8.2f} ms" if p.eager_timing else "n/a"
    print(f"{p.K:>3} {human_bytes(p.kv_cache_bytes):>10} {human_bytes(p.weight_bytes):>10} "
          f"{p.step_time * 1e3:>6.2f} ms {p.timing.p10 * 1e3:>7.2f}..{p.timing.p90 * 1e3:<7.2f} "
          f"{p.bytes_per_step / bandwidth_measured * 1e3:>6.2f} ms {eager_ms:>11} {peak:>12}")

# %%
# NBVAL_IGNORE_OUTPUT
ran = [p for p in points if not p.oom]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.3))
ax1.errorbar([p.K for p in ran], [p.step_time * 1e3 for p in ran],
             yerr=[[(p.step_time - p.timing.p10) * 1e3 for p in ran], [(p.timing.p90 - p.step_time) * 1e3 for p in ran]],
             fmt="o-", color=COLORS["measured"], capsize=3, label=f"measured step, {how} (median, p10-p90)")
if any(p.eager_timing for p in ran):
    ax1.plot([p.K for p in ran], [p.eager_timing.median * 1e3 for p in ran], "^:", color=COLORS["naive"],
             label="the same step, eager (launch-bound)")
ax1.plot([p.K for p in ran], [p.bytes_per_step / bandwidth_measured * 1e3 for p in ran], "s--",
         color=COLORS["theory"], label="bytes read / measured copy bandwidth")
for p in points:
    if p.oom:
        ax1.axvline(p.K, color=COLORS["measured"], ls=":", lw=1)
        ax1.annotate("OOM", (p.K, 0.5), xycoords=("data", "axes fraction"), color=COLORS["measured"])
ax1.set(xscale="log", xlabel="KV heads K", ylabel="time per decode step (ms)", ylim=(0, None),
        title=f"Decode step vs K: B={B_sweep}, S={S_sweep}")
ax1.set_xticks(Ks, [str(k) for k in Ks])
ax1.minorticks_off()
ax1.legend(loc="best")

x_pos = np.arange(len(points))
ax2.bar(x_pos, [p.weight_bytes / 1e9 for p in points], color=COLORS["theory"], label="weights")
ax2.bar(x_pos, [p.kv_cache_bytes / 1e9 for p in points], bottom=[p.weight_bytes / 1e9 for p in points],
        color=COLORS["cached"], label="KV cache (allocated)")
peaks = [(i, p.peak_bytes / 1e9) for i, p in enumerate(points) if p.peak_bytes is not None]
if peaks:
    ax2.plot(*zip(*peaks), "D", color=COLORS["measured"], label="CUDA peak allocated (build + capture)")
for i, p in enumerate(points):
    if p.oom:
        ax2.annotate("OOM", (i, p.kv_cache_bytes / 1e9), ha="center", color=COLORS["measured"])
ax2.set_xticks(x_pos, [f"K={p.K}" for p in points])
ax2.set(ylabel="GB", title="Memory per model")
ax2.legend(loc="best")
plt.show()

# %%
N_sweep = sweep_cfg.N
by_K = {p.K: p for p in points}
assert not any(p.oom for p in points), "the batch was chosen from the free memory: every K should fit"
for p in points:  # the cache holds exactly B·S·2·L·K·H numbers: N/K times fewer than MHA's
    assert p.kv_cache_bytes == analysis.kv_cache_bytes(sweep_cfg.replace(K=p.K), B_sweep, S_sweep,
                                                        bytes_per_value=torch.finfo(env.dtype).bits // 8)
mha, mqa = by_K[N_sweep], by_K[1]
times = [by_K[K].step_time for K in Ks]
# the time saved from K = N to K = 1, against the bytes saved read at the copy bandwidth:
# r = 1 means the saved bytes were read at exactly the copy bandwidth
saved_ratio = (mha.step_time - mqa.step_time) / ((mha.bytes_per_step - mqa.bytes_per_step) / bandwidth_measured)
print(f"K={N_sweep} -> K=1: KV cache {mha.kv_cache_bytes / mqa.kv_cache_bytes:.0f}x smaller, bytes per step "
      f"{mha.bytes_per_step / mqa.bytes_per_step:.1f}x fewer, step {mha.step_time / mqa.step_time:.2f}x shorter ({how})")
print(f"time saved / (bytes saved / copy bandwidth) = {saved_ratio:.2f} "
      f"(the saved bytes were read at {1 / saved_ratio:.0%} of the copy bandwidth)")
if mha.eager_timing:
    print(f"eager, the same steps: {mha.eager_timing.median * 1e3:.2f} -> {mqa.eager_timing.median * 1e3:.2f} ms "
          f"({mha.eager_timing.median / mqa.eager_timing.median:.2f}x shorter)")
# step time falls with every halving of K (the smallest saving, N/4 -> 1, is still (N/4 - 1)/N of the
# MHA cache, far above the timing noise)
assert all(a > b for a, b in zip(times, times[1:])), f"step time should fall with K: {times}"
if env.on_gpu:
    # a read-only kernel can beat a copy's bandwidth by a few per cent, not more: r >= 0.8; and a
    # decode attention kernel reads a long cache at half the copy bandwidth or better: r <= 2
    assert 0.8 < saved_ratio < 2.0, f"the time saved should track the bytes saved (r = {saved_ratio:.2f})"
    assert mha.step_time > 0.85 * mha.bytes_per_step / bandwidth_measured, "MHA's step beat the memory bound"
    assert mqa.peak_bytes < 0.25 * mha.peak_bytes, "with the cache dominating, MQA's memory should be far below MHA's"
    # eager, the launch floor (the same for every K) hides part of the saving
    assert mha.eager_timing.median / mqa.eager_timing.median < mha.step_time / mqa.step_time, \
        "eager steps should gain less from K than graphed ones"
else:
    # one CPU thread's attention reads the cache well below the copy bandwidth (see r), but never
    # faster: r >= 0.8; a quarter of the copy bandwidth or better: r <= 4
    assert 0.8 < saved_ratio < 4.0, f"the time saved should track the bytes saved (r = {saved_ratio:.2f})"
    print("check skipped on CPU: peak memory (PyTorch keeps no allocation counter on a CPU); "
          "the MHA step against the copy-bandwidth bound (the CPU's attention is not bandwidth-bound)")

# %% [markdown]
# Reading the plot:
# - **Memory** follows the formula exactly: the cache is B·S·2·L·K·H numbers, N/K times smaller
#   than MHA's. On a GPU the peak allocated memory (weights + cache + the captured step) tracks it.
# - **Time.** Decode attention does about G FLOPs per byte of cache it reads (4·S·N·H FLOPs for
#   4·S·K·H bytes at bf16), far below any GPU's ridge point, so it is a bandwidth-bound read of
#   the cache and the step shrinks with K as the bytes do (the dashed line). The printed ratio r
#   says at what share of the copy bandwidth the saved bytes were read.

# %% [markdown]
# - **The graph matters on a GPU.** Eager, the same steps (dotted line) gain less from K (asserted;
#   the printed line gives both ratios): at small K the GPU waits for the host to launch kernels,
#   whatever they read, so part of the bytes saved does not show as time. In the graph the launches are gone and the time follows the
#   bytes; at K = 1 what remains is the weights and the graph's per-kernel cost.
# - **On a CPU** (one thread) the step also falls with K; the printed r says how much more a
#   saved byte cost than in a copy, since the attention kernel's work per query head (dot
#   products, a softmax over S) is not a pure stream of bytes.
#
# **Takeaway:** fewer KV heads mean fewer bytes per step and per sequence; once launch overhead is
# gone, that is directly shorter steps, and always bigger batches.

# %% [markdown]
# ## 5. The price: quality, measured on trained models
#
# Fewer KV heads is less capacity in attention. The GQA paper (Table 1) and DeepSeek-V2 (Table 8)
# report MHA > GQA > MQA in quality, with GQA-8 close to MHA. We trained three byte-level models
# that share everything (architecture, data, seed, batches, number of steps) except K:
# K = 8 (MHA), K = 2 (GQA, N/4) and K = 1 (MQA) (`python -m lecture_lib.train`; see
# `data/checkpoints/README.md`). Their cards record the held-out perplexity per byte. (Notebooks
# 02, 06 and 07 use a real chat model, SmolLM2-135M; here the small models are the right tool: a
# real model comes with one K only, and comparing real models of different K would compare
# different training runs too, while these three differ in K alone.)

# %%
# NBVAL_CHECK_OUTPUT
family = ["gqa-k8", "gqa-k2", "gqa-k1"]  # K = N, N/4, 1 ("gqa-k2" is the "target" checkpoint)
cards = {name: load_meta(name) for name in family}
print(f"{'checkpoint':>10} {'K':>2} {'params':>9} {'KV B/token (bf16)':>18} {'held-out ppl':>13} {'unigram':>8}")
kv_per_token = {}
for name, card in cards.items():
    c = ModelConfig.from_dict(card["config"])
    kv_per_token[name] = analysis.kv_bytes_per_token(c)
    print(f"{name:>10} {c.K:>2} {card['num_params']:>9,} {kv_per_token[name]:>18,.0f} "
          f"{card['heldout_ppl']:>13.3f} {card['unigram_ppl']:>8.2f}")
shared = {k: v for k, v in cards["gqa-k8"]["config"].items() if k in ("L", "D", "N", "H", "F", "V")}
print(f"shared: {' '.join(f'{k}={v}' for k, v in shared.items())}; {cards['gqa-k8']['training']['steps']} steps of "
      f"{cards['gqa-k8']['training']['B']}x{cards['gqa-k8']['training']['T']} bytes; perplexity per byte")
assert [cards[n]["config"]["K"] for n in family] == [8, 2, 1]
assert all({k: cards[n]["config"][k] for k in shared} == shared for n in family)  # only K differs
assert all(cards[n]["training"] == cards["gqa-k8"]["training"] for n in family)  # equal budgets

# %% [markdown]
# The recorded numbers come from the library's `checkpoints.perplexity` (the first 64 held-out
# windows of 256 bytes, fp32). Recompute them here from the stored weights:

# %%
# NBVAL_IGNORE_OUTPUT
held = heldout_tokens()
recomputed = {}
for name in tqdm(family, desc="held-out perplexity"):
    model = load_checkpoint(name, device=env.device)  # fp32, as recorded
    recomputed[name] = perplexity(model, held)
    del model
for name in family:
    rec = cards[name]["heldout_ppl"]
    print(f"{name:>10}: recomputed {recomputed[name]:.4f}, recorded {rec:.4f} "
          f"({(recomputed[name] / rec - 1) * 100:+.4f}%)")
    assert abs(recomputed[name] / rec - 1) < 1e-3, f"{name}: perplexity does not reproduce"

# %% [markdown]
# Why train each variant from scratch? The GQA paper instead converts an MHA checkpoint: it
# mean-pools the K/V projections of each group of heads (`gqa.pool_kv_heads`), then "uptrains"
# for 5% of the original steps. Here is the conversion alone, applied to our trained MHA model:

# %%
# NBVAL_IGNORE_OUTPUT
pooled_ppl = perplexity(pool_kv_heads(load_checkpoint("gqa-k8", device=env.device), 2), held)
print(f"MHA (K=8) mean-pooled to K=2, no further training: held-out ppl {pooled_ppl:.3f}; "
      f"trained with K=2 from the start: {cards['gqa-k2']['heldout_ppl']:.3f}; the MHA model itself: "
      f"{cards['gqa-k8']['heldout_ppl']:.3f}")
assert pooled_ppl > cards["gqa-k8"]["heldout_ppl"], "pooling heads should lose something before uptraining"

# %% [markdown]
# Compare with the unigram baseline in the table (byte frequencies, no context at all): on a model
# this small, pooling the heads without retraining loses most of what attention had learned. The
# paper's uptraining step is what makes conversion work; training with K = 2 from the start (our
# `gqa-k2`) avoids the question.

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots()
xs = [kv_per_token[n] for n in family]
ax.plot(xs, [cards[n]["heldout_ppl"] for n in family], "o-", color=COLORS["cached"], ms=9, label="recorded")
ax.plot(xs, [recomputed[n] for n in family], "x", color=COLORS["measured"], ms=10, mew=2, label="recomputed here")
for n, label in zip(family, ["MHA (K=8)", "GQA (K=2)", "MQA (K=1)"]):
    ax.annotate(label, (kv_per_token[n], cards[n]["heldout_ppl"]), textcoords="offset points", xytext=(8, 4))
ax.set(xscale="log", xlabel="KV-cache bytes per token (bf16)", ylabel="held-out perplexity (per byte)",
       title="Quality vs KV cache: same model, data and budget, only K differs")
ax.set_xticks(xs, [f"{x:,.0f}" for x in xs])
ax.minorticks_off()
ax.legend()
plt.show()
mha_ppl, mqa_ppl = cards["gqa-k8"]["heldout_ppl"], cards["gqa-k1"]["heldout_ppl"]
print(f"MQA vs MHA: {kv_per_token['gqa-k8'] / kv_per_token['gqa-k1']:.0f}x fewer KV bytes per token, "
      f"perplexity {mqa_ppl / mha_ppl - 1:+.1%}; GQA (K=2): 4x fewer, "
      f"{cards['gqa-k2']['heldout_ppl'] / mha_ppl - 1:+.1%}")
# what the text below and the summary claim: fewer KV heads cost perplexity, MQA more than GQA
assert recomputed["gqa-k8"] < recomputed["gqa-k2"] < recomputed["gqa-k1"], "perplexity should rise as K falls"

# %% [markdown]
# How to read it: on the x-axis the bytes fall by 4x and 8x; on the y-axis the perplexity moves by a
# few per cent at most (the line above gives the recorded numbers): GQA with K = N/4 stays close to
# MHA, MQA pays more. Caveats: these are tiny models (see the parameter counts above; 256-byte
# windows, minutes of CPU training) with one seed each, so a difference of a fraction of a per cent
# may be within what another seed would change. Also the three are not the
# same size: fewer KV heads means fewer K/V projection weights (the params column), the
# same confound as in section 3. The CLA paper (Brandon et al., 1B models) draws the same kind of
# curve: MHA 13.15, GQA4 13.36, MQA 13.54 validation perplexity at 16x fewer KV bytes for MQA.
#
# **Takeaway:** the memory saved is proportional to N/K; the quality lost is small for GQA and
# larger for MQA, which is why most recent models settle on G = 4 to 8.

# %% [markdown]
# ## 6. Beyond GQA: MLA, sliding windows, cross-layer sharing
#
# **MLA** (DeepSeek-V2): instead of K and V, cache one compressed latent c of C = 512 dimensions
# per token per layer, and up-project to keys and values when needed. RoPE does not commute with
# that up-projection, so 64 extra dimensions carry a separately cached rotary key: 512 + 64 = 576
# numbers per token per layer (`analysis.mla_kv_bytes_per_token`).

# %%
# NBVAL_CHECK_OUTPUT
for name in ("deepseek-v2", "deepseek-v3"):
    m = mla_config(name)
    elements = analysis.mla_kv_elements_per_token(m)
    per_token = analysis.mla_kv_bytes_per_token(m)
    mha_elements = 2 * m["N"] * m["v_head_dim"] * m["L"]  # the same model with MHA: 2·N·H·L
    print(f"{name}: {m['L']} layers x ({m['kv_lora_rank']} + {m['qk_rope_head_dim']}) = {elements:,} elements "
          f"= {per_token:,.0f} B/token (bf16); MHA with N={m['N']}, H={m['v_head_dim']}: {mha_elements:,} "
          f"elements, {mha_elements / elements:.1f}x more")
v2 = mla_config("deepseek-v2")
assert analysis.mla_kv_elements_per_token(v2) == 34_560 and analysis.mla_kv_bytes_per_token(v2) == 69_120
assert round(2 * v2["N"] * v2["v_head_dim"] * v2["L"] / 34_560) == 57
gqa_groups = (v2["kv_lora_rank"] + v2["qk_rope_head_dim"]) / (2 * v2["v_head_dim"])
print(f"MLA's 576 numbers per layer = the K and V of {gqa_groups} KV heads of H = 128 (GQA with {gqa_groups} groups)")
print(f"Llama 3 70B (GQA, K=8) keeps {analysis.kv_bytes_per_token(get_config('llama3-70b')):,.0f} B/token: "
      f"{analysis.kv_bytes_per_token(get_config('llama3-70b')) / 69_120:.1f}x DeepSeek-V2's (a 236B-parameter MoE)")
assert gqa_groups == 2.25

# %% [markdown]
# 34,560 elements is the "34.6K" of the DeepSeek-V2 paper's Table 9, where MLA also *beat* MHA in
# quality. (The MHA-equivalent cache is about 57x larger; the paper's own headline, 93.3% less KV
# cache, compares with DeepSeek 67B, a different model.)
#
# **Sliding window** (Mistral 7B: 4096-token window, rolling-buffer cache): a layer that attends only
# to the last W tokens keeps min(S, W) positions (`analysis.sliding_window_tokens`), so the cache
# stops growing with the sequence. Information still travels further through the layers (about
# L·W tokens), but not losslessly.

# %%
# NBVAL_CHECK_OUTPUT
mistral = get_config("mistral-7b")
print(f"Mistral 7B: {analysis.kv_bytes_per_token(mistral):,.0f} B/token, window {mistral.sliding_window}")
for S_ in (2048, 4096, 32768, 131072):
    full = analysis.kv_cache_bytes(mistral, 1, S_)
    rolling = analysis.kv_cache_bytes(mistral, 1, S_, window=mistral.sliding_window)
    print(f"S={S_:>6}: full attention {full / 2**20:>7,.0f} MiB, rolling buffer "
          f"{rolling / 2**20:>5,.0f} MiB (keeps {analysis.sliding_window_tokens(S_, mistral.sliding_window)} positions)")
assert analysis.kv_cache_bytes(mistral, 1, 131072, window=4096) == 512 * 2**20

# %% [markdown]
# **Cross-layer attention** (CLA, Brandon et al. 2024): share one K/V between `share` adjacent layers,
# the way GQA shares them between heads: ceil(L/share) layers store a cache
# (`analysis.cla_kv_bytes_per_token`). **Hybrid local/global** layers (character.ai: one global layer
# in six, plus CLA): global layers keep S positions, local ones a window
# (`analysis.hybrid_kv_bytes_per_sequence`). All of these on the Llama 3 8B shape (L = 32, N = 32,
# H = 128), one sequence of 32,768 tokens; the window of 1024 in the hybrid row is our example:

# %%
# NBVAL_CHECK_OUTPUT
l3 = get_config("llama3-8b")
S_long = 32768
options = {
    "MHA (K=32)": analysis.kv_cache_bytes(l3.replace(K=32), 1, S_long),
    "GQA (K=8), as released": analysis.kv_cache_bytes(l3, 1, S_long),
    "MQA (K=1)": analysis.kv_cache_bytes(l3.replace(K=1), 1, S_long),
    "GQA + CLA2": S_long * analysis.cla_kv_bytes_per_token(l3, share=2),
    "MQA + CLA2": S_long * analysis.cla_kv_bytes_per_token(l3.replace(K=1), share=2),
    "GQA, window 4096 on all layers": analysis.kv_cache_bytes(l3, 1, S_long, window=4096),
    "GQA, 1 global in 6, window 1024": analysis.hybrid_kv_bytes_per_sequence(l3, S_long, window=1024, global_every=6),
    "(DeepSeek-V2 MLA, 60 layers)": S_long * analysis.mla_kv_bytes_per_token("deepseek-v2"),
}
for label, nbytes in options.items():
    print(f"{label:>32}: {nbytes / 2**30:7.3f} GiB  ({options['MHA (K=32)'] / nbytes:5.1f}x less than MHA)")
assert options["GQA + CLA2"] == options["GQA (K=8), as released"] / 2
assert options["GQA (K=8), as released"] == 4 * 2**30  # 128 KiB/token x 32k tokens

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.8))
labels = list(options)
ax.barh(labels, [v / 2**30 for v in options.values()],
        color=[COLORS["naive"]] + [COLORS["cached"]] * 6 + [COLORS["theory"]])
ax.invert_yaxis()
ax.set(xscale="log", xlabel="KV cache of one 32k-token sequence (GiB, bf16, log scale)",
       title="Llama 3 8B shape: ways to shrink the KV cache")
plt.show()

# %% [markdown]
# **Takeaway:** GQA divides the cache by G, CLA by the sharing factor, MLA compresses the K/V of all
# heads into one small latent, and local attention caps the length. They compose, and each trades
# some quality for memory, which is why they are chosen at training time, not at serving time.

# %% [markdown]
# ## 7. A widget: memory and the largest batch that fits
#
# Pick a model, the number of KV heads, the batch, the context and a GPU (from
# `data/hardware.json`). Bars: weights (bf16) and the KV caches of the whole batch for each choice
# of K, against the GPU's memory; above each bar the largest batch that fits
# (`analysis.max_batch_that_fits`). Formulas only, so it redraws instantly.

# %%
kv_choices = {"K = N (MHA)": 1, "K = N/2": 2, "K = N/4": 4, "K = N/8": 8, "K = 1 (MQA)": None}
gpu_names = list(load_specs())


def memory_bars(model="llama2-13b", kv="K = N (MHA)", batch=64, context=1024, gpu="H100 SXM"):
    cfg0 = get_config(model)
    spec = get_spec(gpu)
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for i, (label, div) in enumerate(kv_choices.items()):
        K = 1 if div is None else cfg0.N // div
        c = cfg0.replace(K=K)
        weights = 2 * analysis.num_params(c) / 1e9
        kv_gb = analysis.kv_cache_bytes(c, batch, context) / 1e9
        fits_max = analysis.max_batch_that_fits(c, context, memory_bytes=spec.memory_bytes)
        chosen = label == kv
        ax.bar(i, weights, color=COLORS["theory"], alpha=1 if chosen else 0.45, label="weights" if i == 0 else None)
        ax.bar(i, kv_gb, bottom=weights, color=COLORS["cached"], alpha=1 if chosen else 0.45,
               label=f"KV cache, B={batch}" if i == 0 else None)
        ax.annotate(f"max B={fits_max:,}", (i, weights + kv_gb), ha="center", va="bottom")
        if chosen:
            total = weights + kv_gb
            print(f"{model}, K={K} (G={c.G}), B={batch}, S={context} on {spec.key}: weights {weights:,.1f} GB + "
                  f"KV {kv_gb:,.1f} GB = {total:,.1f} GB of {spec.memory_bytes / 1e9:,.0f} GB -> "
                  f"{'fits' if total * 1e9 <= spec.memory_bytes else 'DOES NOT FIT'}; "
                  f"largest batch that fits: {fits_max:,}")
    ax.axhline(spec.memory_bytes / 1e9, color=COLORS["measured"], ls="--", label=f"{spec.key}: {spec.memory_bytes / 1e9:,.0f} GB")
    ax.set_ylim(0, 1.15 * max(ax.get_ylim()[1], spec.memory_bytes / 1e9))
    ax.set_xticks(range(len(kv_choices)), [f"{lbl}\nK={1 if d is None else cfg0.N // d}" for lbl, d in kv_choices.items()])
    ax.set(ylabel="GB", title=f"{model}: memory for B={batch} sequences of {context} tokens")
    ax.legend(loc="upper right")
    plt.show()


memory_bars()  # the static figure (what a reader without a widget frontend sees)

# %%
# NBVAL_IGNORE_OUTPUT
_ = widgets.interact(
    memory_bars,
    model=w.Dropdown(options=real, value="llama2-13b", description="model"),
    kv=w.Dropdown(options=list(kv_choices), value="K = N (MHA)", description="KV heads"),
    batch=w.SelectionSlider(options=[2**i for i in range(11)], value=64, description="batch B"),
    context=w.SelectionSlider(options=[2**i for i in range(8, 18)], value=1024, description="context S"),
    gpu=w.Dropdown(options=gpu_names, value="H100 SXM", description="GPU"),
)

# %% [markdown]
# Things to try: Llama 2 13B at B = 256 (does any K fit?); Llama 3 70B at 128k context on an H200;
# an L4 (24 GB) with Llama 3 8B: how long a context fits for one user?

# %% [markdown]
# ## Summary
# - MHA, GQA and MQA are one attention with N query heads and K KV heads; query head n reads KV
#   head n // G; GQA is MHA with K/V tied inside groups.
# - The KV cache is 2·L·K·H·bytes per token: N/K times smaller with GQA. Llama 2 13B at S = 1024
#   on an H100: K = 8 instead of 40 raises the largest batch from 64 to 341; part of the gain is
#   the smaller model (13.02e9 → 11.34e9 parameters), most of it at B = 1, little at large B.
# - Measured: the cache allocated is the formula, and the decode step falls with each halving of
#   K (asserted). On a GPU, in a CUDA graph, the time saved from K = N to 1 matches the bytes
#   saved at the copy bandwidth within the asserted factor (0.8–2); eager, the launch floor hides
#   part of it (asserted).
# - Quality: on our trained models, fewer KV heads cost a little perplexity, MQA more than GQA.
# - MLA (576 numbers per token per layer, ~57x below MHA), sliding windows (a cap on positions) and
#   CLA (sharing across layers) shrink the cache further.

# %% [markdown]
# ## Exercises
# 1. Uptrain the pooled model of section 5: a few dozen AdamW steps on `corpus.random_batch(
#    corpus.train_tokens(), 16, 256)` at a small learning rate (the paper uptrains for 5% of the
#    original steps: 5% of the training steps printed in section 5). How close to `gqa-k2` does it
#    get? Compare with pooling to K = 1.
# 2. Rerun section 4 with one sequence and a short context (`S_sweep = 128`, `max_B=1`). Which
#    bytes dominate now, and does K still matter?
# 3. On a GPU, rerun section 4 with fewer, longer sequences (`S_sweep = 16384`, `max_B=32`). Does
#    the step still fall with every halving of K? Hint: the attention kernel gives each pair
#    (sequence, KV head) a thread block that walks its S keys in order, so with B·K pairs fewer
#    than the GPU has SMs (`torch.cuda.get_device_properties(0).multi_processor_count`) the step
#    lasts one block's walk, however few bytes there are. FlashDecoding splits the keys across
#    blocks for this reason.
# 4. For Llama 2 13B, which MLA latent size C (plus 64 RoPE dimensions) gives the same KV bytes per
#    token as K = 8? And as K = 1?
# 5. With the widget: on an H100, what context length makes a single Llama 3 8B sequence's cache as
#    large as the weights? Check with `analysis.kv_bytes_per_token` and `analysis.num_params`.
