# %% [markdown]
# # 07 · Decoding at the memory-bandwidth roofline
#
# *Follows CS336 Lecture 10, "Arithmetic intensity of inference" and "Throughput and latency":
# generation is memory-limited, and a step's latency is the bytes it reads over the memory
# bandwidth.*
#
# *On a projector:* set `LECTURE_PRESENTATION=1` before starting Jupyter, or call
# `setup(presentation=True)` in the first code cell, for larger fonts in every figure.
#
# At batch 1 every decode step reads every weight once to produce one token, so no decoder can
# beat *bytes per step / bandwidth*: the **roofline**. This notebook takes the library's own
# decoder up a ladder of optimisations and sees how close each rung gets.

# %%
# NBVAL_IGNORE_OUTPUT
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from lecture_lib import analysis, devices, get_config, hardware, pretrained, quant
from lecture_lib.decode import generate_cached
from lecture_lib.measure import agreement, bench, ladder, launch, quant_speed, roofline
from lecture_lib.notebook import setup
from lecture_lib.plotting import COLORS, human_bytes
from lecture_lib.quant import int8_gemv

env = setup(seed=0)

# %% [markdown]
# The ladder:
#
# | rung | how it decodes | what it removes |
# |---|---|---|
# | `naive` | the whole sequence through the model at every step | (nothing) |
# | `cached` | KV cache, one token a step, eager, a host sync per token | recomputation |
# | `static` | `FastGenerator(compile=False)`: fixed-shape cache, fused Q/K/V and gate/up, no host sync | changing shapes, syncs |
# | `compiled` | the step under `torch.compile(mode="reduce-overhead")`: one CUDA graph a step | launch overhead |
# | `int8` | int8 weight-only (a scale per output row), compiled; Triton GEMV on a GPU | half the bytes |
# | `int8_inductor` | the same, with Inductor's own kernel | (a kernel comparison) |

# %% [markdown]
# In this notebook you will
# 1. compute the roofline of one decode step for real model shapes,
# 2. load the full ladder stored from a benchmark run on an H100 or H200 (it compiles three
#    times, minutes in all) and measure the rungs that fit a live session on your device,
# 3. check that the exact rungs pick the same greedy tokens (exactly in fp32, to a stated
#    rate in bf16),
# 4. see why eager PyTorch on a GPU is far below the roofline (launch overhead), what that does
#    to an eager measurement, and what the practical ceiling is,
# 5. see why int8 weights pay off only with a kernel that reads the int8 bytes directly.

# %% [markdown]
# ## 1. The roofline of one decode step
#
# To produce one token, a decode step must read (lecture §"Throughput and latency", with the
# library's exact count in `analysis.decode_bytes_per_step`):
#
# - **every weight matrix once**: Q, K, V, O and the three SwiGLU matrices of each layer, and the
#   LM head (`analysis.linear_params`), plus the small RMSNorm weights;
# - **one row of the embedding table** per sequence (a lookup, not a matmul);
# - **the KV cache so far**: B·S·2·L·K·H values.
#
# $$t_\text{step} \;\ge\; \frac{\text{bytes per step}}{\text{memory bandwidth}}, \qquad
# \text{tokens/s} \;\le\; \frac{B \cdot \text{bandwidth}}{\text{bytes per step}}.$$
#
# For the two shapes of the reference runs (bf16, batch 1, prompt 16 and 256 new tokens, so the
# mean position is S = 16 + 128 = 144), at the lecture's H100 bandwidth of 3.35 TB/s:

# %%
# NBVAL_CHECK_OUTPUT
S_mean = 16 + 256 // 2
h100 = hardware.get_spec("H100 SXM")


for name in ["llama3.2-1b-like", "llama3-8b"]:
    c = get_config(name)
    parts = {"weight matrices (incl. LM head)": analysis.linear_params(c) * 2,
             "RMSNorm weights": analysis.norm_params(c) * 2,
             "one embedding row": c.D * 2,
             f"KV cache, {S_mean} positions": S_mean * analysis.kv_bytes_per_token(c, 2)}
    total = analysis.decode_bytes_per_step(c, 1, S_mean, 2, 2)
    assert total == sum(parts.values())
    print(f"{name} (L={c.L} D={c.D} N={c.N} K={c.K} H={c.H} F={c.F} V={c.V}), bf16, B=1:")
    for what, n in parts.items():
        print(f"  {what:<32} {n / 1e6:>10,.3f} MB  ({n / total:6.2%})")
    print(f"  {'total per step':<32} {total / 1e6:>10,.3f} MB -> {total / h100.memory_bandwidth * 1e3:.3f} ms at "
          f"{h100.memory_bandwidth / 1e12:.2f} TB/s: roofline {h100.memory_bandwidth / total:,.0f} tokens/s")
    q = analysis.int8_decode_bytes_per_step(c, 1, S_mean)  # 1 byte a weight + a bf16 scale per output row
    print(f"  int8 weights: {q / 1e6:,.3f} MB per step ({q / total:.3f} of bf16): roofline "
          f"{h100.memory_bandwidth / q:,.0f} tokens/s")

# %% [markdown]
# At batch 1 and short contexts the KV cache is a rounding error: **decoding one sequence is
# streaming the weights once per token**. The 1B-like model must read 2.48 GB a token, so even a
# perfect decoder on an H100 makes about 1,350 tokens/s at the datasheet bandwidth (less at the
# bandwidth a real copy reaches, which is what we use below). Halving the bytes (int8) doubles
# the bound.
#
# *Takeaway: the roofline is a byte count divided by a bandwidth; nothing about FLOPs.*

# %% [markdown]
# ## 2. The ladder: stored from a GPU, and live on your device
#
# The whole ladder compiles the decode step three times (`compiled`, `int8`, `int8_inductor`;
# the `warm-up s` column of the stored tables shows how long each took), minutes in all: too long
# for a notebook cell. It runs as a benchmark instead, which writes every figure to a JSON file:
#
# `python -m lecture_lib.bench decode --preset llama3.2-1b-like --rungs naive,cached,static,compiled,int8,int8_inductor,int4 --json out.json`
#
# The notebook loads the stored runs of your GPU's class (`data/reference/`: an H200 ladder where
# one is stored, else the H100's, with Hugging Face `generate` on the same shapes) and measures
# live only what fits in a cell:
# - **GPU**: the eager rungs (`cached`, `static`) of the Llama-3.2-1B-like shape, random bf16
#   weights (fp16 on a GPU without bf16), 128 new tokens; no compile.
# - **CPU**: the real SmolLM2-135M-Instruct (540 MB of fp32 weights, far more than the caches, so
#   every step streams from memory), 64 new tokens, every rung but `compiled` (Inductor on a CPU
#   compiles C++ for a minute or more, and there are no CUDA graphs to gain); `int8` and `int4`
#   run eager on PyTorch's packed CPU kernels (`quant.use_cpu_kernels_`).

# %%
# NBVAL_IGNORE_OUTPUT
SHAPE, why = quant_speed.speed_shape(env.device, env.dtype, shapes=("llama3.2-1b-like", "medium"))
REAL = None if env.on_gpu else "smollm2-135m-instruct"
cfg = pretrained.load(REAL).model.cfg if REAL else get_config(SHAPE or "small")
PROMPT, NEW = 16, env.size(cpu=64, gpu=128)
LIVE_RUNGS = env.size(cpu=["naive", "cached", "static", "int8", "int4"], gpu=["cached", "static"])
print(f"{REAL or cfg.name}: L={cfg.L} D={cfg.D} N={cfg.N} K={cfg.K} H={cfg.H} F={cfg.F} V={cfg.V}, "
      f"{analysis.num_params_exact(cfg) / 1e6:,.1f}M parameters, {devices.dtype_name(env.dtype)}; "
      f"batch 1, prompt {PROMPT}, {NEW} new tokens" + (f" ({why})" if env.on_gpu else ""))

t0 = time.perf_counter()
result = bench.run_decode(cfg, batch=1, prompt_len=PROMPT, new=NEW, dtype=env.dtype, rungs=LIVE_RUNGS,
                          device=env.device, repeats=3, pretrained=REAL, progress=None)
print(f"(the live rungs took {time.perf_counter() - t0:.0f} s)\n")
print(bench.format_table(result))
rows = ladder.rows_by_rung(result)

# %%
# NBVAL_IGNORE_OUTPUT
REF_CLASS, refs = ladder.reference_ladders(result["device_name"] if env.on_gpu else None)
print(f"stored full ladders shown: {REF_CLASS}" + ("" if ladder.device_class(result["device_name"]) == REF_CLASS
                                                   else " (none stored for this device's class)"))
for ref in refs:
    print(f"\n=== stored: {ref['model']['name']} on {ref['device_name']}, from "
          f"{', '.join(p.split('/')[-1] for p in ref['sources'])}, measured {ref['date'][:10]}")
    print(bench.format_table(ref))
    compiles = [r for r in ref["rows"] if r["status"] == "ok" and r["rung"] in ("compiled", "int8", "int8_inductor", "int4")]
    each = ", ".join(f"{r['rung']} {r['compile_s']:.0f} s" for r in compiles)
    print(f"compiling: {each} "
          f"({sum(r['compile_s'] for r in compiles):.0f} s in all, not counted in tokens/s)")

# %% [markdown]
# `MB/step` is the roofline's numerator for the model, `GB/s` the bandwidth a rung achieved
# (bytes per step × steps per second), `% BW` its share of the copy bandwidth measured in the same
# run. `int8` and `int4` read fewer bytes, so their `% roofl` (against the unquantized roofline)
# can pass 100%. The chart: one bar per rung, log scale, the roofline dashed.

# %%
# NBVAL_IGNORE_OUTPUT
panels = [(result, f"live, this device: {result['device_name']}, {result['model']['name']}, {result['dtype']}")]
panels += [(ref, f"stored: {ref['device_name']}, {ref['model']['name']}, {ref['dtype']}") for ref in refs]
fig, axes = plt.subplots(len(panels), 1, figsize=(8.5, 1.0 + 0.45 * sum(len(p[0]["rows"]) + 2 for p in panels)),
                         gridspec_kw={"height_ratios": [len(p[0]["rows"]) + 2 for p in panels]}, squeeze=False)
for ax, (res, title) in zip(axes[:, 0], panels):
    ladder.draw_ladder(ax, res, title)
plt.show()

# %% [markdown]
# What the runs must show, checked below:
# - **no rung beats its roofline** (up to noise: 1.1× on a GPU; on a CPU 2×, because a copy,
#   which we measure the bandwidth with, also fetches every destination line before overwriting
#   it, so it undercounts a read-only stream: section 4 measures one);
# - **int8 reads well under 0.6× the bytes** (1 byte a weight and a scale per row, against 2 or 4);
# - in every stored GPU ladder, **compiling with CUDA graphs is the big step**: at least 3× the
#   eager `cached` rung;
# - on a CPU, **the cache beats naive** decoding at this length.

# %%
for res in [result] + refs:
    limit = 1.1 if res["device_type"] == "cuda" else 2.0
    for r in ladder.rows_by_rung(res).values():
        if not r["rung"].startswith("HF"):
            assert r["tok_per_s"] <= limit * r["roofline_tok_per_s"], f"{r['rung']} beats its roofline: {r}"
    by = ladder.rows_by_rung(res)
    if "int8" in by:
        assert by["int8"]["bytes_per_step"] < 0.6 * by["cached"]["bytes_per_step"], "int8 should read < 0.6x the bytes"
for ref in refs:
    by = ladder.rows_by_rung(ref)
    assert by["compiled"]["tok_per_s"] >= 3 * by["cached"]["tok_per_s"], f"stored {ref['model']['name']}: compile gains < 3x"
    print(f"stored {ref['model']['name']} on {ref['device_name']}: compiled {by['compiled']['tok_per_s'] / by['cached']['tok_per_s']:.1f}x "
          f"cached, {by['compiled']['pct_roofline']:.0f}% of the roofline")
if env.on_gpu:
    print("check skipped on a GPU: naive vs cached (no naive rung live; the stored ladders have it, and at these "
          "lengths both are launch-bound, section 4)")
else:
    assert rows["cached"]["tok_per_s"] > rows["naive"]["tok_per_s"], "the KV cache should beat naive decoding on a CPU"
    print(f"live: cached {rows['cached']['tok_per_s'] / rows['naive']['tok_per_s']:.1f}x naive")
print("live:", ", ".join(f"{k} {v['tok_per_s']:,.1f} tok/s ({v['tok_per_s'] / v['roofline_tok_per_s']:.0%} of its roofline)"
                         for k, v in rows.items()))

# %% [markdown]
# *Takeaway: the same model on the same device decodes an order of magnitude faster or slower
# depending only on how the step is run; the roofline is what's left when the overheads are gone.*

# %% [markdown]
# ## 3. Do the exact rungs pick the same tokens?
#
# `cached`, `static` and `compiled` compute the same function in a different order of additions
# (fused matrices, a masked fixed-length cache, other kernels). The benchmark's last line compares
# their greedy sequences. In fp32 they must be identical. In bf16 (8 bits of mantissa) each
# operation rounds to about 2^-8 ≈ 0.4% of a value, and where the best two logits are that close (a
# *near-tie*; a random model's logits are nearly flat) the argmax can flip, after which the
# sequences go separate ways: the stored bf16 runs' `False` is that, not a bug.
#
# So we check position by position: feed the `cached` rung's greedy tokens through the static path
# (teacher forcing, `measure.agreement`) and count where its argmax agrees. In fp32 we assert
# every position; in bf16 or fp16 at least 90%: a bug (a wrong position, a broken mask) would
# make it near 0, while rounding flips only the near-ties, whose gap is printed.

# %%
# NBVAL_IGNORE_OUTPUT
model = pretrained.load(REAL).model if REAL else bench.build_model(cfg, env.device, env.dtype, seed=0)
torch.manual_seed(1)  # the benchmark's prompt: seed + 1
prompt = torch.randint(0, cfg.V, (1, PROMPT), device=env.device)
ref_tokens = generate_cached(model, prompt, NEW).tokens
agr = agreement.teacher_forced_agreement(model, prompt, ref_tokens)
gaps = ", ".join(f"position {i}: {g:.3f}" for i, g in agr["mismatches"][:8]) or "none"
print(f"{devices.dtype_name(env.dtype)}: the static path agrees with cached at {agr['rate']:.1%} of {agr['n']} "
      f"positions; mismatches (gap of the best two logits, in standard deviations of the logits): {gaps}")
print(f"live greedy sequences identical to cached: {result['greedy_tokens_agree']}")
for ref in refs:
    print(f"stored {ref['model']['name']} ({ref['dtype']}): {ref['greedy_tokens_agree']}")
if env.dtype == torch.float32:
    assert agr["rate"] == 1.0 and all(result["greedy_tokens_agree"].values()), "fp32: the exact rungs must agree"
else:
    assert agr["rate"] >= 0.9, f"{devices.dtype_name(env.dtype)}: agreement {agr['rate']:.1%} is below 90%"
    print("check skipped in 16-bit: identical sequences (one near-tie flip changes the rest); rate checked instead")
print("check skipped: the compiled rung is not run live (compiling takes minutes); it differs from static only "
      "in kernels, i.e. in rounding")

# %% [markdown]
# *Takeaway: exact optimisations are exact up to rounding: identical tokens in fp32, and in bf16 the
# same tokens except at near-ties.*

# %% [markdown]
# ## 4. Where a step's time goes, and the practical ceiling
#
# Split each step into its **memory time** (bytes per step / copy bandwidth: what the roofline
# allows) and **the rest**. In eager PyTorch every operation of the step (a matmul, an add, a RoPE
# rotation, ...) is a separate kernel: Python calls the dispatcher, which picks a kernel,
# allocates the output and asks the driver to launch it, some microseconds whatever its size.
# We count the operations of one eager step (views excluded: no kernel) on a narrow model with
# the same layers and heads (the count does not depend on the widths).

# %%
# NBVAL_IGNORE_OUTPUT
for res, where in [(result, "live")] + [(ref, "stored " + ref["device_name"]) for ref in refs]:
    c = get_config("small").replace(**{k: res["model"][k] for k in bench.SHAPE_FIELDS})
    ops = launch.eager_ops_per_step(c, env.device, env.dtype)
    split = {rung: (ms, mem, rest) for rung, ms, mem, rest in ladder.time_split(res)}
    print(f"{where}, {res['model']['name']} (L={c.L}): {ops} operations in one eager decode step")
    for rung in ("cached", "compiled"):
        if rung in split:
            ms, mem, rest = split[rung]
            per_op = f" = {rest * 1e3 / ops:,.1f} µs for each of the {ops} operations" if rung == "cached" else ""
            print(f"  {rung:<9} {ms:8.3f} ms/step = {mem:.3f} ms of memory time + {rest:.3f} ms of the rest{per_op}")
assert launch.eager_ops_per_step(cfg) > 20 * cfg.L, "an eager step runs tens of operations per layer"

# %%
# NBVAL_IGNORE_OUTPUT
fig, axes = plt.subplots(len(panels), 1, figsize=(8.5, 1.2 + 0.45 * sum(len(p[0]["rows"]) + 1 for p in panels)),
                         gridspec_kw={"height_ratios": [len(p[0]["rows"]) + 1 for p in panels]}, squeeze=False)
for ax, (res, title) in zip(axes[:, 0], panels):
    split = ladder.time_split(res)
    ys = np.arange(len(split))[::-1]
    ax.barh(ys, [s[2] for s in split], color=COLORS["roofline"], label="memory time: bytes per step / copy bandwidth")
    ax.barh(ys, [s[3] for s in split], left=[s[2] for s in split], color="lightgrey",
            label="the rest: launches and dispatch, recomputation (naive), kernels below the copy bandwidth")
    for y, (rung, ms, mem, rest) in zip(ys, split):
        ax.text(ms, y, f" {ms:,.2f} ms", va="center")
    ax.set_yticks(ys, [ladder.label(res, s[0]) for s in split])
    ax.set_xlim(0, max(s[1] for s in split) * 1.3)
    ax.set(xlabel="ms per decode step", title=title)
fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center")
plt.show()

# %% [markdown]
# - **Eager on a GPU is launch-bound**: hundreds of operations at the µs each printed above make
#   many milliseconds, against well under a millisecond of memory time at 1B on an H100 or H200.
#   The GPU idles between tiny kernels, which is also why `naive` is no slower than `cached` there
#   at these lengths, and why `static` alone gains nothing (eager, its masked fixed-length
#   attention even costs more).
# - **On a CPU** the memory is about 100× slower, so memory time is most of the step and eager
#   PyTorch gets much closer to the roofline.
#
# The same launch cost distorts any eager measurement of a short kernel. Below, the step of the
# live model and one large matrix-vector product are each timed eagerly and, on a GPU, as a CUDA
# graph replay (the same kernels, no launches, no compile).

# %%
# NBVAL_IGNORE_OUTPUT
from lecture_lib.decode.fast import fuse_projections_

fuse_projections_(model)  # the fast path's step: fused Q/K/V and gate/up
step_eager, step_graph = launch.step_seconds(model, S=PROMPT + NEW // 2)
step_mem = rows["cached"]["bytes_per_step"] / result["bandwidth_bytes_per_s"]
print(f"one decode step, {cfg.name}: eager {step_eager * 1e3:.3f} ms; memory time {step_mem * 1e3:.3f} ms")
if step_graph is None:
    print("check skipped on a CPU: no CUDA graphs (the eager step is the only one)")
else:
    print(f"  as a CUDA graph (no compile): {step_graph * 1e3:.3f} ms = {step_eager / step_graph:.1f}x faster; "
          f"the rest above the memory time: eager {(step_eager - step_mem) * 1e3:.3f} ms, graph "
          f"{(step_graph - step_mem) * 1e3:.3f} ms")
    if step_mem < 0.25 * step_eager:  # launch-bound: the graph must remove most of the rest
        assert step_graph - step_mem <= 0.5 * (step_eager - step_mem), "a CUDA graph should remove most launch time"
    else:
        print(f"check skipped: this GPU's eager step is already {step_mem / step_eager:.0%} memory time, "
              "so a graph can remove little")

# The matrix must not fit in the last-level cache, or repeated calls read it from the cache, not
# from memory: on a GPU 268 MB in bf16 is several times any L2; a CPU's L3 (a VM may report
# hundreds of MB) sets the size there, at three times the cache.
in_f = 8192
llc = roofline.cache_bytes(env.device)
out_f = env.size(cpu=max(4096, -(-3 * llc // (in_f * 4 * 1024)) * 1024), gpu=16384)
print(f"last-level cache {human_bytes(llc)}; the matrix below is {human_bytes(out_f * in_f * env.dtype.itemsize)}")
big = torch.nn.Linear(in_f, out_f, bias=False, device=env.device, dtype=env.dtype)
xv = torch.randn(1, in_f, device=env.device, dtype=env.dtype)
STAT = env.size(cpu="min", gpu="median")  # a shared CPU: other work only adds time, so take the fastest call
t_eager, t_graph = launch.eager_and_graph_seconds(big, xv, repeats=env.size(20, 50), stat=STAT)
w_bytes = big.weight.numel() * big.weight.element_size()
copy_bw = result["bandwidth_bytes_per_s"]
print(f"\none matrix-vector product, {out_f}x{in_f} {devices.dtype_name(env.dtype)} ({human_bytes(w_bytes)}), "
      f"copy bandwidth {copy_bw / 1e9:,.0f} GB/s:")
print(f"  eager: {t_eager * 1e3:.3f} ms -> apparent {w_bytes / t_eager / 1e9:,.0f} GB/s = {w_bytes / t_eager / copy_bw:.0%} of copy")
if t_graph is None:
    print("  check skipped on a CPU: no CUDA graph; the eager time is the kernel's (no launch gap to hide)")
    ceiling = w_bytes / t_eager
else:
    print(f"  graph: {t_graph * 1e3:.3f} ms -> {w_bytes / t_graph / 1e9:,.0f} GB/s = {w_bytes / t_graph / copy_bw:.0%} of copy; "
          f"the eager call pays {(t_eager - t_graph) * 1e6:.0f} µs of launch")
    ceiling = w_bytes / t_graph
    assert t_eager - t_graph > 2e-6, "an eager call should pay microseconds of launch that a graph replay does not"
    assert ceiling >= 0.7 * copy_bw, "a large GEMV in a graph should stream close to the copy bandwidth"
for res, where in [(result, "live")] + [(ref, "stored " + ref["device_name"]) for ref in refs]:
    best = max((r for r in ladder.rows_by_rung(res).values() if r["rung"] in ("naive", "cached", "static", "compiled")),
               key=lambda r: r["gb_per_s"])
    print(f"{where}, best unquantized rung ({best['rung']}): {best['pct_bandwidth']:.0f}% of its run's copy bandwidth")

# %% [markdown]
# **The practical ceiling** is what the best kernel reaches *as the compiled step runs it*, i.e. in
# a graph. Timed eagerly, a GEMV of a few tens of µs also pays its launch (printed), so its
# apparent bandwidth is bytes / (kernel + launch) and understates the kernel; in a graph the same
# GEMV streams at about the copy bandwidth. So on a GPU the practical ceiling is the copy
# bandwidth itself, and the compiled rung's gap to it is not the big GEMV: it is the step's many
# small kernels (norms, RoPE, attention, small matrices), whose fixed costs weigh more in a small
# model (`python -m lecture_lib.measure.gemv_bench --preset <shape>` times each decode matrix in a
# graph).

# %% [markdown]
# **On a CPU** a GEMV can read faster than the copy's counted bandwidth (the "% of copy" above,
# when this runs on a CPU), even with the matrix three times the last-level cache, so not from
# the cache. Part of that is the copy's
# hidden traffic: a write first fetches each line it overwrites, so a copy counted as 2 bytes
# moves 3 (at most 1.5×). The rest is not pinned down here (the two may use the cores and
# prefetchers differently); on a CPU the practical ceiling is the measured GEMV, not the copy.
#
# *Takeaway: on a GPU the gap between eager and the roofline is launch overhead, not bytes; timed
# in a graph, a large GEMV reaches the copy bandwidth, and that is the ceiling.*

# %% [markdown]
# ## 5. Why int8 needs the right kernel
#
# int8 weight-only quantization stores 1 byte a weight and a scale per output row
# (`quant.Int8Linear`). Its portable form, `F.linear(x, W_int8.to(x.dtype)) * scales`, run
# eagerly, reads the int8 weight, **writes a full-precision copy**, then reads that copy: 5 bytes a
# weight in bf16 instead of 2, slower than not quantizing. The bytes are saved only by a kernel
# that reads the int8 codes and converts them in registers:
# - Inductor fuses the conversion into a GEMV it generates (the `int8_inductor` rung, compiled);
# - `lecture_lib.quant.int8_gemv` is a short Triton kernel (tiles of int8 weights, float32
#   accumulation, row scales applied at the end); `Int8Linear` uses it on a CUDA GPU for decode;
# - on a CPU, PyTorch's packed kernel `aten._weight_int8pack_mm` reads the codes directly.
#
# Measured on the matrix above, on a GPU as CUDA-graph replays:

# %%
# NBVAL_IGNORE_OUTPUT
q8 = quant.Int8Linear.from_linear(big)
q8.kernel = "torch"  # the portable form, even on a GPU
eb = big.weight.element_size()
with torch.inference_mode():
    t_eager8 = launch.eager_and_graph_seconds(q8, xv, repeats=env.size(20, 50), stat=STAT)[0]
print(f"{devices.dtype_name(env.dtype)} weight, eager:   {t_eager * 1e3:8.3f} ms ({eb} bytes a weight read)")
print(f"int8 portable form, eager: {t_eager8 * 1e3:8.3f} ms ({t_eager8 / t_eager:.2f}x; reads 1 + writes {eb} + reads {eb} "
      f"= {1 + 2 * eb} bytes a weight)")
# Bandwidth-bound, the portable form takes (1 + 2 eb) / eb >= 2.25x as long; 1.5x leaves room for noise
assert t_eager8 > 1.5 * t_eager, "the eager portable int8 form should be clearly slower than the float weight"
if env.on_gpu and int8_gemv.available():
    t_tri = launch.eager_and_graph_seconds(lambda x: int8_gemv.int8_linear(x, q8.weight, q8.scales), xv)[1]
    print(f"graph: {devices.dtype_name(env.dtype)} (cuBLAS) {t_graph * 1e3:.3f} ms, {w_bytes / t_graph / copy_bw:.0%} of copy; "
          f"int8 Triton {t_tri * 1e3:.3f} ms, {q8.weight.numel() / t_tri / copy_bw:.0%} of copy; "
          f"int8 / {devices.dtype_name(env.dtype)} time {t_tri / t_graph:.2f} (the bytes alone: {1 / eb:.2f})")
    # half the bytes: 0.5 at equal streaming; 0.8 allows a kernel that streams at 60% of the float one's rate
    assert t_tri < 0.8 * t_graph, "the int8 kernel should beat the float GEMV clearly on a large matrix"
else:
    print("check skipped here: the Triton int8 kernel needs a CUDA GPU (on a CPU, the live ladder's int8 rung "
          "runs the packed CPU kernel: checked below)")
del big, q8, xv
if env.on_gpu:
    torch.cuda.empty_cache()

# %% [markdown]
# In a whole decode step int8 gains less than the 2× its bytes promise: halving the bytes halves
# only the memory part of the step (the rest of section 4's split stays), and a kernel that reads
# half the bytes also runs half as long, so its fixed costs weigh twice as much. Below: every
# stored GPU run with both rungs (int8 against compiled bf16, and the gain predicted if only the
# memory time shrank), and the live CPU ladder's int8 against `static` (the same fast path with
# float weights). Checked where the claim is made: stored, for shapes of 1B parameters and more,
# int8 ≥ 1.1× compiled (below every stored ratio; the compiled rung alone moves by up to ~±8%
# between processes); live on a CPU, the packed kernels faster at all (a busy 2-core machine moves
# a rung by 10–15%). A tiny shape, where int8 does not pay, is printed too.

# %%
for g in ladder.int8_gains(ladder.all_gpu_runs()):
    print(f"stored {g['file']:<44} {g['params'] / 1e9:5.2f}B params: int8 {g['gain']:.2f}x compiled (bytes alone {g['bytes_gain']:.2f}x)")
    if g["params"] >= 1e9:
        assert g["gain"] >= 1.1, f"stored {g['file']}: int8 should beat compiled bf16 at >= 1B parameters"
for ref in refs:
    for rung in ("int8", "int8_inductor"):
        pred = ladder.int8_prediction(ref, rung)
        if pred is not None:
            by = ladder.rows_by_rung(ref)
            print(f"stored {ref['model']['name']} on {ref['device_name']}, {rung}: {by[rung]['tok_per_s'] / by['compiled']['tok_per_s']:.2f}x "
                  f"compiled; predicted from the bytes with the rest of the step unchanged {pred:.2f}x")
if env.on_gpu:
    print("live check skipped on a GPU: the int8 rung needs a compile (section 5's GEMV above is the live int8 check)")
else:
    for rung in ("int8", "int4"):
        gain = rows[rung]["tok_per_s"] / rows["static"]["tok_per_s"]
        print(f"live {rung} (packed CPU kernel): {gain:.2f}x static, reading {rows[rung]['bytes_per_step'] / rows['static']['bytes_per_step']:.2f}x the bytes")
        assert gain > 1.0, f"{rung} on the packed CPU kernels should decode faster than the fp32 weights"

# %% [markdown]
# *Takeaway: quantized weights cut time only if the kernel that reads them dequantizes in registers
# and streams its bytes about as fast as the unquantized one; even then, only the memory part of
# the step shrinks.*

# %% [markdown]
# ## Summary
# - A batch-1 decode step must read every weight once: **tokens/s ≤ bandwidth / bytes per step**.
#   At short contexts the KV cache is a small part of those bytes.
# - The ladder: the KV cache removes recomputation; a static cache removes changing shapes and
#   host syncs (by itself, no faster); compiling with CUDA graphs removes the launch overhead that
#   dominates eager PyTorch on a GPU (the big step); int8 weights remove bytes and pay off, for
#   shapes of 1B parameters and more, with a kernel that dequantizes in registers.
# - The exact rungs agree token for token in fp32, and in bf16 except at near-ties.
# - Timed eagerly, a short GPU kernel looks slower than it is (its launch counts); in a graph a
#   large GEMV reaches the copy bandwidth: the practical ceiling.
# - Hugging Face `generate` (stored H100 rows) is launch-bound eager, and its compiled static cache
#   lands between eager and our compiled step: the same lesson in a production library.

# %% [markdown]
# ## Exercises
# 1. Rerun the benchmark with `--batch 8`. Predict the new roofline in tokens/s from section 1's
#    formula before you measure; how close does `compiled` get?
# 2. With `analysis.decode_bytes_per_step`, find the context S at which the KV cache reads as many
#    bytes as the weights for Llama 3 8B at B = 1 and at B = 64.
# 3. On an Ampere-or-newer GPU, run the benchmark with `--rungs compiled,int8,int4`: does the gain
#    follow the bytes?
# 4. Predict the stored 8B `cached` rung from its operation count and the µs per operation of the
#    1B shape (section 4); compare.
# 5. On a CPU, run `python -m lecture_lib.bench decode --model smollm2-135m-instruct --new 64
#    --rungs static,compiled --compile-cpu` (a minute or two of compiling). Why does compiling gain
#    less than on a GPU?
