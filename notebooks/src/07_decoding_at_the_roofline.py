# %% [markdown]
# # 07 · Decoding at the memory-bandwidth roofline
#
# *Follows CS336 Lecture 10, "Arithmetic intensity of inference" and "Throughput and latency":
# generation is memory-limited, and a step's latency is the bytes it reads over the memory
# bandwidth.*
#
# The lecture's bottom line is that **decoding is bound by memory bandwidth**: at batch 1 every
# step reads every weight once to produce one token, so no decoder can beat
# *bytes per step / bandwidth*. That bound is the **roofline**. This notebook takes the library's
# own from-scratch decoder up a ladder of optimisations and measures how close each rung gets:
#
# | rung | how it decodes | what it removes |
# |---|---|---|
# | `naive` | the whole sequence through the model at every step | (nothing: it recomputes the prefix) |
# | `cached` | KV cache, one token a step, eager PyTorch, the token copied to the host every step | recomputation |
# | `static` | `FastGenerator(compile=False)`: cache at fixed shapes written in place (unused tail masked), Q/K/V and gate/up projections fused, token and position kept on the device | changing shapes and per-token host syncs |
# | `compiled` | the one-token step under `torch.compile(mode="reduce-overhead", fullgraph=True)`: one CUDA graph replays the whole step | kernel-launch overhead |
# | `int8` | every linear layer int8 weight-only (one scale per output row), compiled; on a CUDA GPU its matrix-vector products run a hand-written Triton kernel (`lecture_lib.quant.int8_gemv`) | half the weight bytes |
# | `int8_inductor` (GPU) | the same int8 model, with the kernel Inductor generates by itself instead | (the same bytes: a kernel comparison) |
#
# In this notebook you will
# 1. compute the roofline of one decode step for real model shapes (the bytes a step must read),
# 2. measure every rung on your device (tokens/s, bytes per step, achieved GB/s, % of the
#    bandwidth measured in the same run) and draw it against the roofline,
# 3. compare with reference runs on an H100 (a Llama-3.2-1B-like and a Llama-3-8B shape, with
#    Hugging Face `generate` on the same shapes), shipped in `data/reference/`,
# 4. see why eager PyTorch on a GPU is far below the roofline (it is launch-bound), and why int8
#    weights pay off only with a kernel that reads the int8 bytes as fast as the memory allows.

# %%
# NBVAL_IGNORE_OUTPUT
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lecture_lib import Transformer, analysis, devices, get_config, hardware, pretrained, quant
from lecture_lib.cache import KVCache
from lecture_lib.measure import bench, references
from lecture_lib.notebook import setup
from lecture_lib.plotting import COLORS, human_bytes
from lecture_lib.measure.timing import time_fn

env = setup(seed=0)

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
# ## 2. The ladder, measured on this device
#
# `bench.run_decode` does everything in one process: it measures this device's copy bandwidth,
# builds the model with random weights (speed does not depend on what the weights say), then
# times batch-1 decoding for each rung (a warm-up run first, then the median of 3 runs). The
# roofline uses the bandwidth measured in the same run.
#
# Sizes by device:
# - **GPU**: the Llama-3.2-1B-like shape in bf16 (the reference's first shape), 128 new tokens.
#   `compiled`, `int8` and `int8_inductor` each compile the decode step first: tens of seconds each on an H100
#   (more on a small Colab machine). That time is reported separately (`warm-up s`) and is not
#   part of tokens/s.
# - **CPU**: the real SmolLM2-135M-Instruct (`pretrained.load`, its own weights: 540 MB in fp32,
#   far larger than a CPU's caches, so every step really streams from memory), 64 new tokens.
#   Compilation is **off** on a CPU by default (`COMPILE_ON_CPU = False`): Inductor on a CPU
#   generates and compiles C++ for a minute or more, and there are no CUDA graphs to gain from.
#   The `compiled` rung is then skipped, and `int8` and `int4` run eager with PyTorch's packed CPU
#   kernels (`quant.use_cpu_kernels_`: they read the int8/int4 codes directly; activations in bf16).

# %%
# NBVAL_IGNORE_OUTPUT
REAL = env.size(cpu="smollm2-135m-instruct", gpu=None)  # a real model on a CPU; random weights on a GPU
cfg = pretrained.load(REAL).model.cfg if REAL else get_config("llama3.2-1b-like")
PROMPT, NEW = 16, env.size(cpu=64, gpu=128)
RUNGS = ["naive", "cached", "static", "compiled", "int8"] + env.size(cpu=["int4"], gpu=["int8_inductor"])
# (add "int4" on an Ampere-or-newer GPU)
COMPILE_ON_CPU = False
print(f"{REAL or cfg.name}: L={cfg.L} D={cfg.D} N={cfg.N} K={cfg.K} H={cfg.H} F={cfg.F} V={cfg.V}, "
      f"{analysis.num_params_exact(cfg) / 1e6:,.1f}M parameters, {devices.dtype_name(env.dtype)}; "
      f"batch 1, prompt {PROMPT}, {NEW} new tokens")

# %%
# NBVAL_IGNORE_OUTPUT
t0 = time.perf_counter()
try:
    result = bench.run_decode(cfg, batch=1, prompt_len=PROMPT, new=NEW, dtype=env.dtype, rungs=RUNGS,
                              device=env.device, repeats=3, compile_cpu=COMPILE_ON_CPU, pretrained=REAL)
except torch.cuda.OutOfMemoryError:  # the model itself did not fit: fall back to a smaller one
    print(f"{cfg.name} does not fit in this GPU's memory: using the 'medium' preset instead")
    cfg = get_config("medium")
    torch.cuda.empty_cache()
    result = bench.run_decode(cfg, batch=1, prompt_len=PROMPT, new=NEW, dtype=env.dtype, rungs=RUNGS,
                              device=env.device, repeats=3, compile_cpu=COMPILE_ON_CPU)
print(f"(the whole ladder took {time.perf_counter() - t0:.0f} s)\n")
print(bench.format_table(result))
rows = {r["rung"]: r for r in result["rows"] if r["status"] == "ok"}
for r in result["rows"]:
    if r["rung"] in ("compiled", "int8", "int8_inductor", "int4") and r["status"] == "ok" and env.on_gpu:
        print(f"{r['rung']}: first run (compile + CUDA-graph capture) {r['compile_s']:.1f} s, not counted in tokens/s")
if not env.on_gpu and not COMPILE_ON_CPU:
    print("compile is off on a CPU (COMPILE_ON_CPU = False): 'compiled' is skipped; 'int8' and 'int4' run eager "
          "on PyTorch's packed CPU kernels")

# %% [markdown]
# Reading the table: `MB/step` is the roofline's numerator (section 1) for this model, `GB/s` is
# the bandwidth a rung actually achieved (bytes per step × steps per second), `% BW` its share of
# the copy bandwidth measured at the start of the run. `int8` reads fewer bytes, so its `% roofl`
# (against the unquantized model's roofline) can pass 100%. The last line says whether the exact
# rungs produced the same greedy tokens: in fp32 they do (the library's tests check it); in bf16 a
# different order of additions can flip a near-tie between two random logits, after which the
# sequences go separate ways, so a `False` there is rounding, not a bug.

# %% [markdown]
# ## 3. Every rung against the roofline, next to an H100
#
# Reference runs made on an H100 with the same benchmark
# (`python -m lecture_lib.bench decode --preset <shape> --json ...`, and once more with `--hf`
# for Hugging Face `transformers`' `LlamaForCausalLM.generate`, eager and with its static cache)
# ship in `data/reference/decode_*.json`. The files of one shape are merged into one table.

# %%
# NBVAL_IGNORE_OUTPUT
decode_refs = references.load_decode_references()
if not decode_refs:
    print("Note: no H100 reference runs in data/reference/ (decode_*.json) yet, so only this device is "
          "shown. Make them on a GPU with: python -m lecture_lib.bench decode --preset llama3.2-1b-like "
          "--json data/reference/decode_h100_llama3.2-1b-like.json (and --rungs none --hf for HF's rows).")
for ref in decode_refs:
    print(f"=== reference: {ref['model']['name']}, from {', '.join(p.split('/')[-1] for p in ref['sources'])}, "
          f"measured {ref['date'][:10]}")
    print(bench.format_table(ref), "\n")

# %% [markdown]
# The chart: one bar per rung (tokens/s, log scale), the roofline as a dashed line (this model's
# bytes per step over the bandwidth measured in the same run), and under each rung what it
# removes compared with the one before. For `int8` a short dotted line marks its own roofline
# (its smaller bytes over the same bandwidth).

# %%
# NBVAL_IGNORE_OUTPUT
LABELS = {"naive": "naive\nrecomputes\nthe prefix", "cached": "cached\n− recompu-\ntation",
          "static": "static\n− changing\nshapes, syncs", "compiled": "compiled\n− launch\noverhead",
          "int8": "int8\n− bytes", "int8_inductor": "int8,\nInductor's\nkernel", "int4": "int4\n− bytes",
          "HF eager": "HF\ngenerate()\neager",
          "HF static": "HF\ngenerate()\nstatic cache"}
BAR_COLORS = {"naive": COLORS["naive"], "cached": COLORS["cached"], "static": "#17becf", "compiled": COLORS["measured"],
              "int8": "#8c564b", "int8_inductor": "#c49c94", "int4": "#e377c2"}


def draw_ladder(ax, res, title):
    """Bars of decode tokens/s per rung against the roofline of this result's model and bandwidth."""
    roof = res["roofline_tok_per_s"]
    ok = [r for r in res["rows"] if r["status"] == "ok"]
    lo = min([r["tok_per_s"] for r in ok] + [roof]) / 3
    hi = max([roof] + [r["roofline_tok_per_s"] for r in ok]) * 3
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    own_label = "its own roofline (fewer bytes)"
    for x, r in enumerate(res["rows"]):
        if r["status"] != "ok":  # OOM, skipped or error: say so where the bar would be
            ax.text(x, np.sqrt(lo * roof), r["status"].upper(), ha="center", va="center", rotation=90, fontsize=8,
                    color="grey")
            continue
        ax.bar(x, r["tok_per_s"], color=BAR_COLORS.get(r["rung"], COLORS["theory"]), alpha=0.85, width=0.7)
        ax.text(x, r["tok_per_s"] * 1.08, f"{r['tok_per_s']:,.0f}\n{r['tok_per_s'] / roof:.0%}", ha="center",
                va="bottom", fontsize=7)
        if abs(r["roofline_tok_per_s"] / roof - 1) > 0.05:  # a quantized rung reads fewer bytes
            ax.plot([x - 0.4, x + 0.4], [r["roofline_tok_per_s"]] * 2, ":", color=COLORS["roofline"], lw=2,
                    label=own_label)
            own_label = None
    hf = [x for x, r in enumerate(res["rows"]) if r["rung"].startswith("HF")]
    if hf:  # Hugging Face's rows apart from ours
        ax.axvline(min(hf) - 0.5, color="grey", lw=0.8)
    step_bytes = res["batch"] * res["bandwidth_bytes_per_s"] / roof
    ax.axhline(roof, color=COLORS["roofline"], ls="--", label=f"roofline {roof:,.0f} tok/s: {human_bytes(step_bytes)}/step "
                                                              f"at {res['bandwidth_bytes_per_s'] / 1e9:,.0f} GB/s")
    ax.set_xticks(range(len(res["rows"])), [LABELS.get(r["rung"], r["rung"]) for r in res["rows"]], fontsize=7)
    ax.set(ylabel="decode tokens/s (batch 1), log scale", title=title)
    ax.legend(fontsize=7, loc="upper left")


panels = [(result, f"this device: {result['device_name']}\n{result['model']['name']}, {result['dtype']}")]
panels += [(ref, f"reference: {ref['device_name']}\n{ref['model']['name']}, {ref['dtype']}") for ref in decode_refs]
fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.8), squeeze=False)
for ax, (res, title) in zip(axes[0], panels):
    draw_ladder(ax, res, title)
plt.show()

# %% [markdown]
# What holds on every device, checked on this run:
# - **no rung beats the roofline** (up to measurement noise). On a GPU we allow 1.1×. On a CPU the
#   copy we measure the bandwidth with undercounts what a read-only stream gets (a copy also
#   fetches every destination cache line before overwriting it; section 4 measures a read-only
#   matrix-vector product), so there we only check 2×;
# - **int8 reads well under 0.6× the bytes** of the unquantized model (1 byte a weight plus a scale
#   per row, against 2 in bf16 or 4 in fp32);
# - on a GPU, **compiling with CUDA graphs is the big step**: at least 3× the eager cached rung, or
#   at least half the roofline where eager is already that close (on a slow-memory GPU such as an
#   L4, eager is less far behind);
# - on a CPU, **the cache beats naive** decoding at this length. (On a GPU at short lengths it may
#   not: both steps are launch-bound, see section 4.)

# %%
limit = env.size(cpu=2.0, gpu=1.1)
for r in rows.values():
    assert r["tok_per_s"] <= limit * r["roofline_tok_per_s"], f"{r['rung']} beats its roofline: {r}"
if "int8" in rows:
    assert rows["int8"]["bytes_per_step"] < 0.6 * rows["cached"]["bytes_per_step"], "int8 should read < 0.6x the bytes"
if env.on_gpu:
    assert "compiled" in rows, f"the compiled rung failed: {[r for r in result['rows'] if r['rung'] == 'compiled']}"
    assert rows["compiled"]["tok_per_s"] >= min(3 * rows["cached"]["tok_per_s"], 0.5 * result["roofline_tok_per_s"]), \
        "compiling with CUDA graphs should beat eager decoding by far"
elif env.device.type == "cpu":
    assert rows["cached"]["tok_per_s"] > rows["naive"]["tok_per_s"], "the KV cache should beat naive decoding on a CPU"
print("checked:", ", ".join(f"{k} {v['tok_per_s']:,.1f} tok/s ({v['tok_per_s'] / v['roofline_tok_per_s']:.0%} of its roofline)"
                            for k, v in rows.items()))

# %% [markdown]
# *Takeaway: the same model, on the same device, decodes an order of magnitude faster or slower
# depending only on how the step is run; the roofline is what's left when the overheads are gone.*

# %% [markdown]
# ## 4. Where a step's time goes
#
# Split each step's time into the **memory time** (bytes per step / copy bandwidth: what the
# roofline allows) and **the rest**. What is the rest?
#
# In eager PyTorch every operation of the step (a matmul, an add, a RoPE rotation, ...) is a
# separate kernel: Python calls into the dispatcher, which picks a kernel, allocates the output
# and asks the driver to launch it. That costs some microseconds per operation whatever its
# size. Below we count the operations of one eager decode step (views excluded: they launch no
# kernel) on a narrow copy of the model with the same layers and heads (the count does not
# depend on the widths).

# %%
# NBVAL_IGNORE_OUTPUT
class CountOps(TorchDispatchMode):
    """Counts the aten operations a block of code runs; views (no kernel) are not counted."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += not func.is_view
        return func(*args, **(kwargs or {}))


def eager_ops_per_step(c):
    """Operations in one KV-cached eager decode step (and greedy pick) of a model shaped like c."""
    narrow = c.replace(D=64, F=64, V=256, S_max=64)  # same L, N, K, H: the same operations
    m = Transformer(narrow).to(env.device, env.dtype).eval()
    cache = KVCache.for_model(m, 1, 32)
    x = torch.zeros(1, 16, dtype=torch.long, device=env.device)
    with torch.inference_mode():
        m(x, cache, 0)
        with CountOps() as counter:
            m(x[:, :1], cache, 16)[:, -1].argmax(-1).tolist()
    return counter.ops


def time_split(res):
    """ms per step of each ok rung, and how much of it the roofline's memory time explains."""
    out = []
    for r in res["rows"]:
        if r["status"] == "ok":
            mem = r["bytes_per_step"] / res["bandwidth_bytes_per_s"] * 1e3
            out.append((r["rung"], r["ms_per_step"], mem, max(r["ms_per_step"] - mem, 0.0)))
    return out


for res, where in [(result, "this device")] + [(ref, "reference " + ref["device_name"]) for ref in decode_refs]:
    c = get_config("small").replace(**{k: res["model"][k] for k in bench.SHAPE_FIELDS})
    ops = eager_ops_per_step(c)
    split = {rung: (ms, mem, rest) for rung, ms, mem, rest in time_split(res)}
    print(f"{where}, {res['model']['name']} (L={c.L}): {ops} operations in one eager decode step")
    for rung in ("cached", "compiled"):
        if rung in split:
            ms, mem, rest = split[rung]
            per_op = f" = {rest * 1e3 / ops:,.1f} µs for each of the {ops} operations" if rung == "cached" else ""
            print(f"  {rung:<9} {ms:8.3f} ms/step = {mem:.3f} ms of memory time + {rest:.3f} ms of the rest{per_op}")
assert eager_ops_per_step(cfg) > 20 * cfg.L, "an eager step runs tens of operations per layer"

# %% [markdown]
# Each reference shape's operations were counted here, on this device: the eager op count depends
# only on the number of layers and the code path (a GPU may pick another attention kernel, which
# changes the count a little).

# %%
# NBVAL_IGNORE_OUTPUT
fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 3.8), squeeze=False)
for ax, (res, title) in zip(axes[0], panels):
    split = time_split(res)
    ys = np.arange(len(split))[::-1]
    ax.barh(ys, [s[2] for s in split], color=COLORS["roofline"], label="memory time: bytes per step / copy bandwidth")
    ax.barh(ys, [s[3] for s in split], left=[s[2] for s in split], color="lightgrey",
            label="the rest: launches and dispatch, recomputation (naive), kernels below peak bandwidth")
    for y, (rung, ms, mem, rest) in zip(ys, split):
        ax.text(ms, y, f" {ms:,.2f} ms", va="center", fontsize=7)
    ax.set_yticks(ys, [s[0] for s in split])
    ax.set_xlim(0, max(s[1] for s in split) * 1.3)
    ax.set(xlabel="ms per decode step", title=title)
fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8)
plt.show()

# %% [markdown]
# How to read it:
# - **Eager on a GPU is launch-bound.** The 1B-like model's step runs several hundred operations.
#   At tens of microseconds of Python, dispatcher and driver time each (the µs per operation
#   printed above), that is many milliseconds, while reading its 2.5 GB takes under a millisecond
#   on an H100. The GPU sits idle between tiny kernels. This is also why `naive` is no slower than
#   `cached` at these lengths on a GPU (in the H100 reference it is even faster: it runs the same
#   layers on a few more rows, which the GPU absorbs for free, and writes no cache), and why
#   `static` changes little when eager: it removes host syncs and changing shapes but adds masking
#   and a decomposed attention. It pays off only once the compiler turns the step into one graph.
# - **CUDA graphs remove the launches**: the step is recorded once and replayed with one call,
#   so the memory time becomes most of the step. What remains is mostly that matrix-vector
#   kernels read below the copy bandwidth (measured next).
# - **On a CPU** the picture is different: the memory is about 100× slower, so the memory time is
#   a large part of each step and eager PyTorch gets much closer to the roofline than it does on a
#   GPU; the rest is per-operation overhead and matrix-vector products that do not reach full
#   bandwidth.
#
# A practical ceiling: the bandwidth one large matrix-vector product (the core of a decode step)
# actually reaches on this device.

# %%
# NBVAL_IGNORE_OUTPUT
out_f, in_f = env.size(cpu=(4096, 8192), gpu=(16384, 8192))  # 134 MB fp32 / 268 MB bf16: more than any cache
big = nn.Linear(in_f, out_f, bias=False, device=env.device, dtype=env.dtype)
xv = torch.randn(1, in_f, device=env.device, dtype=env.dtype)
with torch.inference_mode():
    t_float = time_fn(big, xv, warmup=3, repeats=env.size(10, 50), device=env.device).median
w_bytes = big.weight.numel() * big.weight.element_size()
gemv_bw = w_bytes / t_float
print(f"one matrix-vector product, {out_f}x{in_f} {devices.dtype_name(env.dtype)} ({human_bytes(w_bytes)}): "
      f"{t_float * 1e3:.3f} ms -> reads at {gemv_bw / 1e9:,.0f} GB/s = {gemv_bw / result['bandwidth_bytes_per_s']:.0%} "
      f"of the copy bandwidth ({result['bandwidth_bytes_per_s'] / 1e9:,.0f} GB/s)")
best = max(rows.values(), key=lambda r: r["gb_per_s"] if not r["rung"].startswith("int") else 0)
print(f"best unquantized rung here, {best['rung']}: {best['gb_per_s']:,.0f} GB/s = {best['gb_per_s'] * 1e9 / gemv_bw:.0%} of that "
      f"ceiling; a decoder made of perfect GEMVs would reach about {gemv_bw / best['bytes_per_step']:,.0f} tokens/s")

# %% [markdown]
# On a GPU one matrix-vector product reads below the copy bandwidth, and that is the practical
# ceiling of a decoder made of them. On a CPU it can read *faster* than a copy, which has to fetch
# each destination line before overwriting it, so there the copy-based roofline is a little low.
#
# *Takeaway: on a GPU the gap between eager and the roofline is overhead, not bytes; CUDA graphs
# close most of it, and the rest is how well a matrix-vector kernel streams memory.*

# %% [markdown]
# ## 5. Why int8 needs the right kernel
#
# int8 weight-only quantization stores 1 byte a weight and one scale per output row
# (`quant.Int8Linear`). Its portable form is `F.linear(x, W_int8.to(x.dtype)) * scales`. Run
# eagerly, that line is three steps: read the int8 weight (1 byte a weight), **write a
# full-precision copy** (2 bytes in bf16, 4 in fp32), then read that copy for the matrix-vector
# product: 5 bytes a weight in bf16 instead of 2. On a large layer eager int8 is *slower* than not
# quantizing. The bytes are saved only by a kernel that reads the int8 weights and converts them
# in registers. Two ways to get one:
#
# - **let the compiler fuse it**: under `torch.compile`, Inductor fuses the conversion into a
#   matrix-vector kernel it generates (the `int8_inductor` rung);
# - **write the kernel**: `lecture_lib.quant.int8_gemv` is a short Triton kernel. Each program takes
#   a few output rows, walks along K loading a tile of int8 weights (contiguous, so the loads are
#   wide) and the matching piece of x, accumulates their products in float32 registers, and
#   applies the row scales once at the end; the tile sizes are autotuned per matrix shape. On a
#   CUDA GPU, `Int8Linear` calls it for inputs of at most `int8_gemv.MAX_ROWS` rows (decode), and
#   the ladder's `int8` rung uses it.
#
# Measured on the same matrix as above. On a GPU each kernel is timed as a CUDA-graph replay of
# 10 calls, as in the compiled decode step (eager, the launch overhead of tens of µs would be a
# large part of a 50 µs kernel):

# %%
# NBVAL_IGNORE_OUTPUT
from lecture_lib.measure.timing import graph_seconds
from lecture_lib.quant import int8_gemv


q8 = quant.Int8Linear.from_linear(big)
q8.kernel = "torch"  # the portable form, even on a GPU
eb = big.weight.element_size()
n_w = q8.weight.numel()
with torch.inference_mode():
    t_eager8 = time_fn(q8, xv, warmup=3, repeats=env.size(10, 50), device=env.device).median
    t_graph = {}
    if env.on_gpu:  # on a CPU compiling takes long and the lesson of the eager line is the same
        t_graph[f"{devices.dtype_name(env.dtype)} weight (cuBLAS)"] = (graph_seconds(big, xv), eb)
        try:
            t_graph["int8, Inductor's fused kernel"] = (graph_seconds(torch.compile(q8), xv), 1)
        except Exception as e:  # report and go on: the ladder above already has the int8 rungs
            print(f"compiling the int8 layer failed here ({type(e).__name__}: {str(e)[:200]})")
        if int8_gemv.available():
            t_graph["int8, Triton kernel (int8_gemv)"] = (graph_seconds(
                lambda x: int8_gemv.int8_linear(x, q8.weight, q8.scales), xv), 1)
print(f"{devices.dtype_name(env.dtype)} weight, eager: {t_float * 1e3:8.3f} ms ({eb} bytes a weight read)")
print(f"int8 portable form, eager: {t_eager8 * 1e3:8.3f} ms ({t_eager8 / t_float:.2f}x; reads 1 + writes {eb} + "
      f"reads {eb} = {1 + 2 * eb} bytes a weight, and allocates the copy every call)")
for name, (t, b) in t_graph.items():
    print(f"{name + ', graph:':<40} {t * 1e3:8.3f} ms, reads {n_w * b / t / 1e9:6,.0f} GB/s "
          f"= {n_w * b / t / result['bandwidth_bytes_per_s']:.0%} of the copy bandwidth")
assert t_eager8 > 0.8 * t_float, "the eager portable int8 form should not be a real speed-up over the unquantized weight"
if len(t_graph) == 3:
    (t16, _), (t_ind, _), (t_tri, _) = t_graph.values()
    assert t_tri < 0.8 * t16, "the int8 kernel should beat the unquantized GEMV clearly on a large matrix"
    print(f"int8 / {devices.dtype_name(env.dtype)} time: Inductor's {t_ind / t16:.2f}, Triton's {t_tri / t16:.2f} "
          f"(the bytes alone would give {1 / eb:.2f})")
del big, q8, xv
if env.on_gpu:
    torch.cuda.empty_cache()

# %% [markdown]
# Even with a good kernel, int8 gains less than the 2× its bytes promise in a whole decode step:
# 1. **Halving the bytes halves only the memory part of the step.** With section 4's split of the
#    compiled rung, int8 should take (rest + memory time × int8 bytes / bf16 bytes): the
#    launch gaps between a step's hundreds of kernels, the attention and the norms stay.
# 2. **The kernel must stream its int8 bytes as fast as the bf16 GEMV streams its bf16 bytes.** A
#    kernel that reads half the bytes also runs half as long, so its fixed costs (ramping up,
#    the tail of the last wave of programs) weigh twice as much; small matrices suffer most.
#    Compare the achieved GB/s of the rows.

# %%
# NBVAL_IGNORE_OUTPUT
for res, where in [(result, "this device")] + [(ref, "reference " + ref["device_name"]) for ref in decode_refs]:
    split = {rung: (ms, mem, rest) for rung, ms, mem, rest in time_split(res)}
    by = {r["rung"]: r for r in res["rows"] if r["status"] == "ok"}
    if "compiled" in by and "int8" in by:
        c16 = by["compiled"]
        ms, mem, rest = split["compiled"]
        print(f"{where}, {res['model']['name']}:")
        print(f"  {'compiled':<14} {c16['tok_per_s']:7,.0f} tok/s, reading {c16['gb_per_s']:6,.0f} GB/s")
        for rung in ("int8", "int8_inductor"):
            if rung in by:
                c8 = by[rung]
                ratio = c8["bytes_per_step"] / c16["bytes_per_step"]
                print(f"  {rung:<14} {c8['tok_per_s']:7,.0f} tok/s, reading {c8['gb_per_s']:6,.0f} GB/s "
                      f"({c8['tok_per_s'] / c16['tok_per_s']:.2f}x compiled; bytes alone: {1 / ratio:.2f}x; bytes with "
                      f"the rest of the step unchanged: {1e3 / (rest + mem * ratio) / c16['tok_per_s']:.2f}x)")
    else:
        print(f"{where}, {res['model']['name']}: no compiled int8 rung to compare (compile off, or a rung missing)")

# %% [markdown]
# In the H100 reference runs, the hand-written kernel is what makes int8 pay: with it int8
# decodes about 1.4× (1B-like) and 1.45× (8B) faster than compiled bf16, against about 1.15× with
# the kernel Inductor generates, whose int8 GB/s stays well below the bf16 row's. Inductor's
# rung also moves more from run to run: in three H100 runs of the 1B-like shape it gave 790 to
# 960 tokens/s, while the Triton rung stayed between 945 and 980 (the compiled bf16 rung itself
# moved between 685 and 780 in four runs). The 2× of the bytes stays out of reach: the rest of
# the step does not shrink, and the int8 kernel reads below the copy bandwidth.
#
# On other GPUs the balance can differ. The Triton kernel's candidate tile sizes come from a sweep
# on an H100, and autotuning only picks among them. In a run of this notebook on an H200
# (2026-11-27), Inductor's kernel read the large matrix faster than ours (81% against 74% of the
# copy bandwidth) and the `int8` rung gained only 1.10× over compiled bf16 at the 1B-like shape.
# `python -m lecture_lib.measure.gemv_bench --preset llama3-8b --sweep` times a wider set of tile sizes on
# your GPU.
# (On a CPU with compile off, the ladder's `int8` and `int4` rungs run eager on PyTorch's packed
# CPU kernels, `aten._weight_int8pack_mm` and `aten._weight_int4pack_mm_for_cpu`, which read the
# codes directly; compare their rows with `cached` in the table of section 2, and their bytes per
# step with its 540 MB.)
#
# *Takeaway: quantized weights cut time only if the kernel that reads them does the
# dequantization in registers and streams its bytes as fast as the unquantized one; that can take
# a hand-written kernel.*

# %% [markdown]
# ## Summary
# - A batch-1 decode step must read every weight once: **tokens/s ≤ bandwidth / bytes per step**.
#   At short contexts the KV cache is a small part of those bytes; the weights are the rest.
# - The ladder: the KV cache removes recomputation; a static cache removes changing shapes and
#   host syncs (by itself, no faster); compiling the step with CUDA graphs removes the per-kernel
#   launch overhead that dominates eager PyTorch on a GPU (this is the big step); int8 weights
#   remove bytes, need a kernel that dequantizes in registers, and pay off only as far as that
#   kernel streams its bytes as fast as the bf16 one (here, a hand-written Triton kernel beat the
#   one Inductor generates).
# - On a GPU, eager PyTorch runs far below the roofline because it is launch-bound: hundreds of
#   operations at tens of microseconds each against under a millisecond of memory time. On a CPU
#   the memory is slow enough that eager gets much closer.
# - The best rung is limited by how fast a matrix-vector kernel streams memory, a bit below the
#   copy bandwidth; a larger model gets closer to the roofline, since fixed costs weigh less.
# - In the H100 reference runs, Hugging Face `generate` in eager mode is launch-bound like our
#   eager rungs, and its static cache (compiled with CUDA graphs) lands between eager and our
#   compiled step: the same lesson in a production library.
#
# ## Exercises
# 1. Rerun the ladder with `batch=8`. The weights are read once for all 8 sequences: how does
#    the roofline in tokens/s change, and how close does `compiled` get? (Section 1's formula
#    predicts the new roofline before you measure.)
# 2. With `analysis.decode_bytes_per_step`, find the context length S at which the KV cache
#    reads as many bytes as the weights for Llama 3 8B at B = 1, and at B = 64. What does that
#    mean for the roofline of long conversations?
# 3. On an Ampere-or-newer GPU, add `"int4"` to `RUNGS`. Compare bytes per step and tokens/s
#    with int8: does the gain follow the bytes?
# 4. Using section 4's split, predict the eager tokens/s of the 8B shape on an H100 from its
#    operation count and the µs per operation you found at 1B; compare with the reference's
#    `cached` row.
# 5. On a CPU, set `COMPILE_ON_CPU = True` (a minute or two of compiling). How much does the
#    compiled rung gain over `static`, and why is it less than on a GPU?
