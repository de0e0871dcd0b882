# %% [markdown]
# # 06 · Quantization
#
# *Follows CS336 Lecture 10, "Quantization" (taking shortcuts, lossy), with the scaling book's
# critical batch size for int8 weights.*
#
# Decoding is memory-bound: every step reads every weight (and the KV cache) once. Fewer bytes
# per number means fewer bytes per token, so quantization buys speed and room for bigger batches;
# what it costs is accuracy. This notebook measures both sides on real weights (random weights
# say nothing about quality): a small model **trained** by the repository for the controlled
# experiments on one weight matrix, and a real chat model, SmolLM2-135M-Instruct, for the
# activations and the whole-model quality; random weights of a real shape for the speed on a GPU.
#
# *On a projector:* set `LECTURE_PRESENTATION=1` before starting Jupyter, or call
# `setup(presentation=True)` in the first code cell, for larger fonts in every figure.

# %%
# NBVAL_IGNORE_OUTPUT
import copy
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F_
from tqdm.auto import tqdm

from lecture_lib import analysis, corpus, devices, get_config, pretrained, quant
from lecture_lib.cache import Int8KVCache, KVCache
from lecture_lib.checkpoints import load_checkpoint, load_meta
from lecture_lib.decode import generate_cached
from lecture_lib.plotting import COLORS, human_bytes
from lecture_lib.measure.quality import cached_perplexity, perplexity_and_kl
from lecture_lib.measure import ceilings
from lecture_lib.measure.bench import build_model
from lecture_lib.measure.quant_speed import measure_variants, speed_shape
from lecture_lib.quant import capture_inputs
from lecture_lib.notebook import setup
from lecture_lib.widgets import interact

env = setup(seed=0)

# %% [markdown]
# In this notebook you will
# 1. read the number formats (fp32, bf16, fp16, fp8, int8, int4) from `torch.finfo`/`iinfo`,
#    and correct the lecture's fp8 range,
# 2. run the lecture's quantize/dequantize example by hand, then compare absmax with zero-point,
# 3. measure the error of per-tensor, per-channel and per-group scales from 2 to 8 bits against
#    the bound scale/2,
# 4. look for outliers in the activations of the real model and see why they break absmax
#    (the motivation of LLM.int8()),
# 5. quantize the real model's weights to int8 and int4: held-out perplexity, KL divergence and
#    bytes; the decode speed at batch 1 (and, on a GPU, at a large batch and in prefill); then
#    the KV cache to int8,
# 6. see how int8 weights move the critical batch size.

# %% [markdown]
# ## 1. Number formats
#
# A floating-point format spends its bits on an exponent (range) and a mantissa (precision); an
# integer format has a fixed step of 1, and a separate **scale** maps its integers to real values.
# The table reads every float row from `torch.finfo` and the int8 row from `torch.iinfo`; int4 has
# no torch dtype, so its row is by definition (4-bit two's complement). `eps` is the gap between 1
# and the next number: the relative precision.

# %%
# NBVAL_CHECK_OUTPUT
def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, int) or float(v).is_integer() and abs(v) < 1e6:
        return f"{int(v):,}"
    return f"{v:.3g}"


formats = quant.format_table()
print(f"{'format':<13}{'bits':>5}{'bytes':>6}{'exp':>4}{'man':>4}{'max':>11}{'min':>11}"
      f"{'smallest normal':>16}{'eps':>10}")
for r in formats:
    print(f"{r['format']:<13}{r['bits']:>5}{r['bytes']:>6g}{fmt(r['exponent_bits']):>4}"
          f"{fmt(r['mantissa_bits']):>4}{fmt(r['max']):>11}{fmt(r['min']):>11}"
          f"{fmt(r['smallest_normal']):>16}{fmt(r['eps']):>10}")

# %% [markdown]
# **The lecture's fp8 range is the wrong variant.** The lecture says e4m3 covers [−240, 240]
# "on H100s". The fp8 that H100s compute with is the OCP **E4M3FN** format, `torch.float8_e4m3fn`,
# whose largest value is **448**: it has no infinities, and only one bit pattern (per sign) is NaN,
# so the top exponent still holds ordinary numbers up to 1.75 · 2⁸ = 448. The **240** belongs to
# **e4m3fnuz** (`torch.float8_e4m3fnuz`, the AMD MI300/Graphcore variant: exponent bias 8 instead
# of 7, no negative zero), whose top is 1.875 · 2⁷ = 240. Both have 3 mantissa bits (eps 1/8);
# e5m2 trades one of them for range (max 57,344), which suits gradients better than weights.

# %%
# NBVAL_CHECK_OUTPUT
e4m3fn, e4m3fnuz = torch.finfo(torch.float8_e4m3fn), torch.finfo(torch.float8_e4m3fnuz)
assert e4m3fn.max == 448 == 1.75 * 2**8 and e4m3fnuz.max == 240 == 1.875 * 2**7
assert torch.iinfo(torch.int8).min == -128 and torch.iinfo(torch.int8).max == 127
assert torch.finfo(torch.bfloat16).max > 1e38 > torch.finfo(torch.float16).max  # bf16 keeps fp32's range
print(f"float8_e4m3fn   max {e4m3fn.max:g}   (H100 / OCP fp8: the one H100 tensor cores use)")
print(f"float8_e4m3fnuz max {e4m3fnuz.max:g}   (AMD/Graphcore variant: the lecture's 240)")

# %% [markdown]
# Floats and integers place their values differently. Every finite fp8 e4m3fn value (all 256 bit
# patterns) against int8 with one scale chosen so that both reach 448: fp8's steps grow with the
# magnitude (constant *relative* precision), int8's are equal (constant *absolute* precision). Small
# values are fine in fp8 and coarse in int8; that is why int8 needs a well-chosen scale.

# %%
vals = quant.float8_values(torch.float8_e4m3fn)
pos = vals[vals > 0].numpy()
int8_grid = np.arange(1, 128) * 448 / 127
fig, ax = plt.subplots(figsize=(9, 2.6))
ax.plot(pos, np.full_like(pos, 1), "|", ms=18, color=COLORS["cached"], label=f"fp8 e4m3fn ({len(pos)} positive values)")
ax.plot(int8_grid, np.full_like(int8_grid, 0), "|", ms=18, color=COLORS["naive"], label="int8 × (448/127) (127 positive values)")
ax.set(xscale="log", yticks=[], ylim=(-0.8, 1.8), xlabel="value (log scale)",
       title="Where the representable positive values lie")
ax.legend(loc="upper left")
plt.show()

# %% [markdown]
# *Takeaway: bf16 is fp32's range with 8 bits of precision; fp8 and int8 cost one byte; fp8 e4m3fn
# goes to 448 (240 is e4m3fnuz); int8 and int4 are integers that need a scale.*
#
# ## 2. Quantize and dequantize
#
# The lecture's mechanics: a real number x becomes an integer code with a **scale** and a
# **zero point**, and comes back approximately:
#
# $$x_q = \mathrm{round}(x / \text{scale}) + \text{zero\_point}, \qquad \hat x = (x_q - \text{zero\_point}) \cdot \text{scale}.$$

# %%
# NBVAL_CHECK_OUTPUT
x, scale, zero_point = 5.2342, 0.1, 4
x_q = quant.quantize(x, scale, zero_point)
x_hat = quant.dequantize(x_q, scale, zero_point)
print(f"x = {x}, scale = {scale}, zero_point = {zero_point}")
print(f"x_q   = round({x} / {scale}) + {zero_point} = round({x / scale:.3f}) + {zero_point} = {x_q.item()}")
print(f"x_hat = ({x_q.item()} - {zero_point}) * {scale} = {x_hat.item():.4f}")
print(f"error = {abs(x - x_hat.item()):.4f} <= scale / 2 = {scale / 2}")
assert x_q.item() == 56
assert abs(x_hat.item() - 5.2) < 1e-6
assert abs(x - x_hat.item()) <= scale / 2

# %% [markdown]
# Rounding to the nearest code errs by at most half a step, **scale/2**, as long as x is inside the
# range the codes cover. Quantizing a whole tensor is choosing that scale (and zero point):
#
# - **absmax** (symmetric): scale = max|x| / (2^(b−1) − 1), zero point 0. The codes cover
#   [−max|x|, max|x|].
# - **zero-point** (asymmetric): scale = (max − min) / (2^b − 1), zero point = round(−min / scale).
#   The codes cover [min, max] exactly.
#
# For a symmetric tensor they are the same. For a **skewed** one, such as the output of a SiLU (the
# gate of a SwiGLU MLP: never below −0.28, a long positive tail), absmax wastes the codes below
# −0.28: about half of them.

# %%
# NBVAL_IGNORE_OUTPUT
g = torch.Generator().manual_seed(0)
skewed = F_.silu(2 * torch.randn(4096, generator=g))  # a SwiGLU gate's activations, in shape

rows = []
for bits in (4, 8):
    q_a, s_a = quant.quantize_absmax(skewed, bits)
    q_z, s_z, z_z = quant.quantize_zeropoint(skewed, bits)
    err_a = quant.relative_error(quant.dequantize_absmax(q_a, s_a), skewed)
    err_z = quant.relative_error(quant.dequantize_zeropoint(q_z, s_z, z_z), skewed)
    used_a = q_a.unique().numel()
    used_z = q_z.unique().numel()
    rows.append((bits, err_a, err_z))
    print(f"{bits} bits: absmax scale {s_a.item():.4f}, {used_a:>3} of {2**bits - 1} codes used, "
          f"relative error {err_a:.4f} | zero-point scale {s_z.item():.4f} (zero point {z_z.item()}), "
          f"{used_z:>3} of {2**bits} codes used, relative error {err_z:.4f}")
for bits, err_a, err_z in rows:
    assert err_z < 0.75 * err_a, "zero-point should clearly beat absmax on a skewed tensor"

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
q_a, s_a = quant.quantize_absmax(skewed, 4)
q_z, s_z, z_z = quant.quantize_zeropoint(skewed, 4)
levels_a = quant.dequantize_absmax(torch.arange(-7, 8), s_a)
levels_z = quant.dequantize_zeropoint(torch.arange(0, 16), s_z, z_z)
for ax, levels, name in [(axes[0], levels_a, "absmax (symmetric)"), (axes[1], levels_z, "zero-point (asymmetric)")]:
    ax.hist(skewed.numpy(), bins=120, color=COLORS["theory"], alpha=0.6)
    for v in levels.numpy():
        ax.axvline(v, color=COLORS["measured"], lw=0.8)
    ax.set(title=f"int4 {name}: {len(levels)} levels (red)", xlabel="value")
axes[0].set_ylabel("count")
plt.show()

# %% [markdown]
# *Takeaway: the error is at most scale/2 per element, and the scheme decides the scale: absmax
# for symmetric tensors (weights), zero-point where the values are one-sided (activations after
# SiLU/ReLU).*
#
# ## 3. One scale for how many numbers? Granularity vs bits
#
# One scale for the whole tensor is set by its single largest value. Real weights have rows of very
# different magnitudes, so a finer granularity gives each part its own, smaller scale:
# **per channel** (one scale per output row of the weight) or **per group** (one per `g`
# consecutive input weights of a row), at the cost of storing more scales.
#
# We load the repository's trained model and take one of its weight matrices. (Why not the real
# model of the later sections? Offline, its weights arrive through llama.cpp's 4-bit Q4_1 format,
# so they already sit on a 4-bit grid, which would distort an experiment on rounding error. The
# trained checkpoint's weights have never been quantized.)

# %%
# NBVAL_IGNORE_OUTPUT
meta = load_meta("target")
model_fp32 = load_checkpoint("target", device=env.device)  # fp32: the quality baseline
cfg = model_fp32.cfg
heldout = corpus.heldout_tokens()
print(f"target: L={cfg.L} D={cfg.D} N={cfg.N} K={cfg.K} H={cfg.H} F={cfg.F} V={cfg.V}, "
      f"{model_fp32.num_params() / 1e6:.2f}M parameters, trained {meta['training']['steps']} steps "
      f"on {meta['training']['tokens_seen'] / 1e6:.1f}M bytes of Python documentation")
print(f"recorded held-out perplexity {meta['heldout_ppl']:.3f} (unigram baseline {meta['unigram_ppl']:.2f})")

W = model_fp32.layers[1].mlp.w_up.weight.detach().float().cpu()  # [F D] = [out in]
row_norms = W.norm(dim=1)
print(f"layers.1.mlp.w_up: {tuple(W.shape)}; row norms range {row_norms.min():.3f} .. {row_norms.max():.3f} "
      f"({row_norms.max() / row_norms.min():.1f}x); max|w| {W.abs().max():.3f}, rms {W.pow(2).mean().sqrt():.4f}")

# %% [markdown]
# For every bit width from 2 to 8 and every granularity: the relative error ‖W − Ŵ‖/‖W‖, and a
# check that **every** element is within its bound scale/2. Theory for the average: rounding error
# spread uniformly over a step has RMS scale/√12 (dashed lines).

# %%
# NBVAL_IGNORE_OUTPUT
bit_range = list(range(2, 9))
granularities = [("per tensor", "tensor", None), ("per channel", "channel", None),
                 ("per group of 64", "group", 64), ("per group of 16", "group", 16)]
errors, theory = {}, {}
eps32 = torch.finfo(torch.float32).eps
for label, gran, gs in granularities:
    for scheme in ("absmax", "zeropoint"):
        for bits in bit_range:
            kw = dict(bits=bits, scheme=scheme, granularity=gran, group_size=gs or 128)
            W_hat = quant.fake_quantize(W, **kw)
            bound = quant.error_bound(W, **kw)
            # within scale/2, up to the fp32 rounding of the dequantized value (a few ulps of w)
            assert ((W_hat - W).abs() <= bound + 4 * eps32 * W.abs()).all(), (label, scheme, bits)
            errors[label, scheme, bits] = quant.relative_error(W_hat, W)
            theory[label, scheme, bits] = ((2 * bound).pow(2).mean().sqrt() / math.sqrt(12) / W.pow(2).mean().sqrt()).item()
print("every element within scale/2 (up to fp32 rounding), for every granularity, scheme and bit width")
print(f"{'relative error (absmax)':<26}" + "".join(f"{b:>8} bits" for b in bit_range))
for label, _, _ in granularities:
    print(f"{label:<26}" + "".join(f"{errors[label, 'absmax', b]:>13.4f}" for b in bit_range))

# %%
fig, ax = plt.subplots(figsize=(7, 4.2))
palette = [COLORS["naive"], COLORS["cached"], COLORS["reference"], COLORS["roofline"]]
for (label, _, _), color in zip(granularities, palette):
    ax.plot(bit_range, [errors[label, "absmax", b] for b in bit_range], "o-", color=color, label=f"{label}, absmax")
    ax.plot(bit_range, [errors[label, "zeropoint", b] for b in bit_range], "x:", color=color)
    ax.plot(bit_range, [theory[label, "absmax", b] for b in bit_range], "--", color=color, lw=0.8)
ax.plot([], [], "kx:", label="same, zero-point")
ax.plot([], [], "k--", lw=0.8, label="theory: scale/√12 (absmax)")
ax.set(yscale="log", xlabel="bits per weight", ylabel="relative error ‖W − Ŵ‖ / ‖W‖",
       title="Quantization error of a real weight matrix (layers.1.mlp.w_up)")
ax.legend(loc="best")
plt.show()

# %% [markdown]
# Reading the plot:
# - Each extra bit halves the step, so the error halves: straight lines on a log axis, a factor of 2
#   a bit (checked below from 4 to 8 bits, where the uniform-rounding model holds).
# - Finer granularity is lower at every width: a group's scale is set by its own largest value.
#   From 4 bits up, going from one scale per tensor to one per group of 16 is worth more than one
#   extra bit: the group-of-16 curve at b bits lies below the per-tensor curve at b + 1.
# - At 2 bits the measured error falls *below* the scale/√12 line (most clearly per tensor): most
#   weights round to the code 0, whose error is the weight itself, smaller than a step. The theory
#   assumes errors spread over a whole step; with so few levels that no longer holds.

# %% [markdown]
# - Zero-point (dotted) is a little better than absmax even on weights, most of all at few bits
#   and in small groups: it has one more code (absmax leaves −2^(b−1) unused to stay symmetric: at
#   2 bits that is 3 levels instead of 4), and the min and max of 16 weights are rarely symmetric.
#   It pays with a zero point per scale and a subtraction when dequantizing.

# %%
for label, _, _ in granularities:
    e = [errors[label, "absmax", b] for b in bit_range]
    assert all(a > b for a, b in zip(e, e[1:])), f"{label}: more bits must mean less error"
    for b in range(4, 8):
        ratio = errors[label, "absmax", b] / errors[label, "absmax", b + 1]
        assert 1.6 < ratio < 2.5, f"{label}: one more bit should halve the error ({b}->{b+1}: {ratio:.2f})"
    for b in (6, 7, 8):
        assert 0.75 < errors[label, "absmax", b] / theory[label, "absmax", b] < 1.25, "uniform-rounding theory"
for b in bit_range:
    e = [errors[label, "absmax", b] for label, _, _ in granularities]
    assert all(a >= c for a, c in zip(e, e[1:])), f"{b} bits: finer granularity should not be worse"
    assert e[0] > 1.3 * e[-1], f"{b} bits: per-group-16 should clearly beat per-tensor"
for b in range(4, 8):  # one scale per 16 weights is worth more than one extra bit
    assert errors["per group of 16", "absmax", b] < errors["per tensor", "absmax", b + 1]
# at 2 bits the error falls below the uniform-rounding line, most of all per tensor
below = {label: errors[label, "absmax", 2] / theory[label, "absmax", 2] for label, _, _ in granularities}
assert below["per tensor"] < 0.85 and below["per tensor"] == min(below.values()), below
# zero-point beats absmax everywhere, and by more at fewer bits and in smaller groups
zp_gain = {(label, b): errors[label, "zeropoint", b] / errors[label, "absmax", b] for label, _, _ in granularities for b in bit_range}
assert all(r < 1 for r in zp_gain.values())
assert all(zp_gain[label, 2] < zp_gain[label, 8] for label, _, _ in granularities)
assert all(zp_gain["per group of 16", b] < zp_gain["per tensor", b] for b in bit_range)

# %% [markdown]
# Try it: pick the bit width, scheme and granularity and see the error (the drawing function uses
# the weight matrix above; a redraw is a few milliseconds).

# %%
def draw_quant(bits=4, scheme="absmax", granularity="channel", group_size=16, row=0):
    W_hat = quant.fake_quantize(W, bits=bits, scheme=scheme, granularity=granularity, group_size=group_size)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.4))
    a1.plot(W[row, :64].numpy(), "o", ms=4, color=COLORS["theory"], label="w")
    a1.plot(W_hat[row, :64].numpy(), "_", ms=9, mew=2, color=COLORS["measured"], label="ŵ (dequantized)")
    a1.set(title=f"row {row}, first 64 weights", xlabel="input index")
    a1.legend(loc="best")
    a2.hist((W_hat - W).flatten().numpy(), bins=100, color=COLORS["cached"])
    a2.set(title=f"{bits}-bit {scheme}, per {granularity}: relative error {quant.relative_error(W_hat, W):.4f}",
           xlabel="ŵ − w (whole matrix)")
    plt.show()


draw_quant()

# %%
# NBVAL_IGNORE_OUTPUT
import ipywidgets as w_

_ = interact(draw_quant, bits=w_.IntSlider(4, 2, 8), scheme=["absmax", "zeropoint"],
             granularity=["channel", "tensor", "group"],
             group_size=[g for g in (16, 32, 64, 128, 256) if W.shape[1] % g == 0],
             row=w_.IntSlider(0, 0, W.shape[0] - 1))

# %% [markdown]
# *Takeaway: error ≈ scale/√12 and halves with every bit; finer scales (per channel, per group)
# lower it at the price of storing more scales.*

# %% [markdown]
# ## 4. Outliers: why absmax breaks on activations (LLM.int8())
#
# Weight-only quantization keeps activations in bf16. Quantizing the activations too (so that the
# matmul itself runs in int8) meets a problem that LLM.int8() (Dettmers et al., 2022) found in
# large models (from about 6.7B parameters on): a few **feature dimensions** carry values up to
# 20× larger than the rest, in most tokens. An int8 matmul needs one scale per **row** of x (per
# token), not per column: the scale must factor out of the sum over the inner dimension. So one outlier feature sets the scale
# of every token it appears in, and the ordinary features are crushed into a few codes.
# LLM.int8()'s fix: multiply the outlier dimensions separately in 16-bit and the rest in int8.

# %% [markdown]
# Do a real model's activations have outliers? We load SmolLM2-135M-Instruct (`pretrained.load`:
# the cache, else the hub's bf16 original, else the Q4_1 copy in a PyPI wheel; its origin is
# printed), in fp32 so that the only rounding in what follows is the one we add. We capture the
# inputs of the linear layers of a few of its 30 layers on held-out text (forward hooks), and
# look at the largest |x| of each feature dimension.

# %%
# NBVAL_IGNORE_OUTPUT
real = pretrained.load("smollm2-135m-instruct", device=env.device, dtype=torch.float32)
rcfg = real.model.cfg
print(real)
real_tokens = torch.tensor(real.tokenizer.encode(corpus.heldout_text()))  # the held-out text, its own tokens
print(f"held-out text: {len(real_tokens):,} SmolLM2 tokens")
n_act = env.size(cpu=4, gpu=16)  # windows of 256 held-out tokens
act_tokens = real_tokens[: n_act * 256].reshape(n_act, 256).to(env.device)
act_layers = (0, 10, 20, rcfg.L - 1)
names = [f"layers.{i}.{part}" for i in act_layers for part in ("attn.wq", "attn.wo", "mlp.w_gate", "mlp.w_down")]
acts = capture_inputs(real.model, act_tokens, names)

def outlier_ratio(x):
    per_dim = x.abs().amax(0)  # largest |x| of each feature dimension
    return (per_dim.max() / per_dim.median()).item()

ratios = {n: outlier_ratio(a) for n, a in acts.items()}
print(f"{'input of':<22}{'dims':>6}{'max |x|':>9}{'median dim max':>16}{'ratio':>7}")
for n, a in acts.items():
    per_dim = a.abs().amax(0)
    print(f"{n:<22}{a.shape[1]:>6}{per_dim.max():>9.2f}{per_dim.median():>16.2f}{ratios[n]:>7.1f}")
worst = max(ratios, key=ratios.get)
print(f"\nstrongest outliers: input of {worst} (largest feature {ratios[worst]:.1f}x the median feature's max)")

# %% [markdown]
# Where to look: the inputs of `wq`/`wk`/`wv` and `w_gate`/`w_up` come out of an RMSNorm, which
# divides every token by its own RMS but then multiplies each feature by a learned weight, so a few
# dims can still stand out; `wo` reads averages of value vectors. The input of `w_down` is the
# product silu(gate)·up of two activations, which makes it the most heavy-tailed candidate.
# Compare the ratios in the table. Below, the layer with the largest ratio: each feature dim's
# largest |x|, and the distribution of all its values.

# %%
x_w = acts[worst]  # [tokens features]
per_dim = x_w.abs().amax(0)
threshold = 6 * per_dim.median().item()  # "outlier": 6x a typical feature's largest value
outliers = quant.outlier_channels(x_w, threshold)
fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.5))
a1.vlines(np.arange(len(per_dim)), 0, per_dim.numpy(), color=COLORS["cached"], lw=1)
a1.axhline(threshold, color=COLORS["measured"], ls="--", label=f"6 × median = {threshold:.2f}")
a1.set(title=f"input of {worst}: largest |x| per feature dim", xlabel="feature dimension", ylabel="max |x| over tokens")
a1.legend(loc="best")
tok_share = (x_w.abs() > threshold).any(1).float().mean().item()
a2.hist(x_w.flatten().numpy(), bins=100, color=COLORS["theory"], log=True)
a2.set(title="all values (log counts)", xlabel="x")
plt.show()
print(f"{len(outliers)} outlier dims {outliers.tolist()[:10]} (|x| > {threshold:.2f}); "
      f"{tok_share:.1%} of tokens hold at least one outlier value")

# %% [markdown]
# Now the matmul that reads this input, three ways: exact (fp32), int8 "vector-wise" (one absmax
# scale per token of x and per output row of W, as LLM.int8() does without its fix), and LLM.int8()'s
# decomposition (the outlier dims above in fp32, the rest in int8).

# %%
# NBVAL_IGNORE_OUTPUT
W_worst = real.model.get_submodule(worst).weight.detach().float().cpu()
y_exact = F_.linear(x_w, W_worst)
err_int8 = quant.relative_error(quant.int8_matmul(x_w, W_worst), y_exact)
err_llm = quant.relative_error(quant.llm_int8_matmul(x_w, W_worst, threshold), y_exact)
print(f"real activations, input of {worst}: int8 error {err_int8:.4f}, "
      f"with outlier decomposition ({len(outliers)} dims in fp32) {err_llm:.4f}")
gain = err_int8 / err_llm
print("verdict: " + (f"strong outliers: splitting off {len(outliers)} dims cuts the int8 error {gain:.1f}x"
                     if gain > 2 else
                     f"no strong outliers here: the largest feature is {ratios[worst]:.0f}x the "
                     f"median one, per-token int8 already errs only {err_int8:.1%}, and splitting off "
                     f"{len(outliers)} dims gains {gain:.1f}x"))

# %% [markdown]
# LLM.int8() found outlier features emerging systematically from about 6.7B parameters; this model
# has 135M. Whatever the table above shows for it, the mechanism is clearer with a controlled
# experiment. We make an outlier ourselves
# **without changing the function**: multiply two feature dims of the real x by a factor α and
# divide the matching columns of W by α. The exact product x·Wᵀ is unchanged, but the magnitude
# now sits in the activation, as in a large model. (Read backwards, this is SmoothQuant's trick:
# move the magnitude from activations into the weights, where per-channel scales can absorb it.)

# %%
# NBVAL_IGNORE_OUTPUT
dims = per_dim.argsort()[-2:]  # the two largest dims, made larger still
alphas = [1, 2, 5, 10, 20, 50, 100]
synth = []
for a in alphas:
    x_s, W_s = x_w.clone(), W_worst.clone()
    x_s[:, dims] *= a
    W_s[:, dims] /= a
    y = F_.linear(x_s, W_s)
    t = 6 * x_s.abs().amax(0).median().item()
    synth.append((quant.relative_error(quant.int8_matmul(x_s, W_s), y),
                  quant.relative_error(quant.llm_int8_matmul(x_s, W_s, t), y)))
    print(f"alpha {a:>3}: max|x| {x_s.abs().max():7.2f}; int8 error {synth[-1][0]:.4f}, LLM.int8() {synth[-1][1]:.4f}")

fig, ax = plt.subplots()
ax.plot(alphas, [s[0] for s in synth], "o-", color=COLORS["naive"], label="int8, absmax per token")
ax.plot(alphas, [s[1] for s in synth], "s-", color=COLORS["cached"], label="LLM.int8(): outlier dims in fp32")
ax.set(xscale="log", yscale="log", xlabel="outlier factor α (two dims of x ×α, W's columns ÷α)",
       ylabel="relative error of x·Wᵀ", title="Same product, magnitude moved into two activation dims")
ax.legend()
plt.show()

# %%
assert synth[0][0] < 0.05, "int8 matmul without outliers should be accurate"
assert synth[-1][0] > 5 * synth[0][0], "a 100x outlier should ruin absmax int8"
assert synth[-1][1] < 2 * synth[0][1] + 1e-3, "the decomposition should stay as good as without outliers"

# %% [markdown]
# The int8 error grows with α: the outlier sets the scale of every token it appears in, so every
# other feature of that token gets α times fewer codes. With the outlier dims split off, the error
# stays where it was.
#
# LLM.int8() pays for this with a second matmul and a gather (the lecture: 15–23% slower than
# fp16). Later methods avoid the split: **SmoothQuant** rescales the outlier dims into the weights
# (as above, backwards), **AWQ** protects the ~1% of weights that meet large activations by scaling
# them before quantizing, **GPTQ** corrects the remaining weights for each one's rounding error.
#
# *Takeaway: activations, unlike weights, have outlier features in large models; per-token absmax
# cannot absorb them, and keeping those few dims in 16-bit (or moving their magnitude into the
# weights) restores int8 accuracy.*

# %% [markdown]
# ## 5. Weight-only int8 and int4 on the real model
#
# Now the whole model. Weight-only quantization stores the linear layers' weights as int8
# (`quant.Int8Linear`, one absmax scale per output channel) or int4 (`quant.Int4Linear`, zero-point,
# two weights a byte). Activations, the KV cache, norms and the embedding stay in full precision,
# and so does SmolLM2's output layer, which shares its matrix with the embedding (a tied head).
# The variants (`quant.VARIANTS`, made by `quant.quantized_copy`):
#
# | variant | codes | scales |
# | --- | --- | --- |
# | int8 per channel | 1 byte | 1 per output row |
# | int4 per channel | ½ byte | 1 scale + 1 zero point per output row |
# | int4 groups of g | ½ byte | 1 scale + 1 zero point per g consecutive input weights |
#
# Groups must tile each row exactly: SmolLM2's input dims (576, 1536) share the divisors 64 and 32,
# the group sizes llama.cpp and the int4 kernels use.

# %% [markdown]
# **Quality**: held-out perplexity, and the **KL divergence** from the unquantized model's
# next-token distribution (nats per token). When the damage is a fraction of a percent of
# perplexity, whether the perturbed model scores a little better or worse on a particular sample of
# text is partly luck; the KL divergence measures how far the predictions moved and ranks small
# degradations reliably (llama.cpp reports it for its quantization types for that reason). Both in
# fp32 on every device, so that the only error is the weights' rounding. The reference is the model
# as loaded: if it came through Q4_1 (see its origin above), the table measures what int8/int4
# add on top of that.

# %%
# NBVAL_IGNORE_OUTPUT
n_windows = env.size(cpu=8, gpu=32)  # windows of 256 held-out tokens to score
variants = quant.VARIANTS
quality, quality_bytes = {}, {}
for v in tqdm(variants, desc="perplexity and KL"):
    m = quant.quantized_copy(real.model, v)
    quality[v] = perplexity_and_kl(m, real.model, real_tokens, B=4, max_windows=n_windows)
    quality_bytes[v] = quant.weight_bytes(m)
    del m
b0_q = quality["unquantized"]
print(f"{'variant':<19}{'perplexity':>11}{'vs base':>9}{'KL (nats/token)':>17}{'weights (fp32 model)':>22}")
for v in variants:
    print(f"{v:<19}{quality[v][0]:>11.4f}{quality[v][0] / b0_q[0] - 1:>+9.2%}{quality[v][1]:>17.5f}"
          f"{human_bytes(quality_bytes[v]):>22}")
print(f"({n_windows} windows of 256 held-out tokens)")

# %%
ppl = {v: q[0] for v, q in quality.items()}
kl = {v: q[1] for v, q in quality.items()}
print(f"int8: {ppl['int8 per channel'] / ppl['unquantized'] - 1:+.2%} perplexity; int4 per channel: KL "
      f"{kl['int4 per channel'] / kl['int8 per channel']:.0f}x int8's")
assert abs(ppl["int8 per channel"] / ppl["unquantized"] - 1) < 0.01, "int8 per channel should be within 1% of the unquantized model"
assert kl["int4 per channel"] > 3 * kl["int8 per channel"] and kl["int4 groups of 64"] > 3 * kl["int8 per channel"], \
    "int4 should move the model more than int8"
assert kl["int4 per channel"] > kl["int4 groups of 64"] > kl["int4 groups of 32"], "smaller groups should move the model less"
assert max(ppl["int4 groups of 64"], ppl["int4 groups of 32"]) < ppl["int4 per channel"], \
    "per-group int4 should lose less perplexity than per-channel int4"

# %% [markdown]
# - 255 levels per row are plenty for weights: int8 per channel moves the model little (the
#   smallest KL, perplexity within 1%).
# - int4 moves it far more, and smaller groups buy quality back: the KL divergence falls from per
#   channel to groups of 64 to groups of 32, and both group sizes lose less perplexity than per
#   channel (asserted above; between the two group sizes the perplexity can go either way, which is
#   why the KL is the ranking to trust).
#
# What the rounding does to text: the greedy reply of three variants to the same question.

# %%
# NBVAL_IGNORE_OUTPUT
reply = {}
for v in ("unquantized", "int8 per channel", "int4 per channel"):
    m = quant.quantized_copy(real.model, v)
    reply[v] = pretrained.Pretrained(m, real.tokenizer, v, real.origin, real.folder).chat(
        "Name three uses of a hash table.", max_new_tokens=40)
    print(f"{v:>17}: {reply[v]!r}")
    del m

# %% [markdown]
# A reply can change at the first token whose top two candidates were close; from there on the
# text takes another path.
#
# **Speed.** A decode step at batch 1 is the weight read, so fewer bytes should mean a shorter
# step, if the kernel reads the small codes directly. On a GPU, SmolLM2 is too small to show it
# (135M parameters are read in a few hundredths of a millisecond; its step is ~1,000 small
# kernels). So on a GPU the speed model is a **real shape with random weights** (`bench.build_model`:
# Llama 3 8B where the memory allows, else a Llama-3.2-1B-like shape) in bf16 (fp16 on a T4),
# quantized the same way; speed does not depend on what the weights say. On a CPU it is SmolLM2
# itself in fp32, on one thread.

# %% [markdown]
# How each step is timed (`measure.quant_speed.measure_variants`, `timing.decode_step_seconds`):
# one token per sequence, 64 tokens in the KV cache. On a GPU the step is a **CUDA-graph replay**
# (no launch overhead), int8 layers run the library's Triton kernel (up to 16 rows), int4 layers
# the CUDA int4 kernel where their group size allows it (Ampere or newer). On a CPU the step runs
# eager and `quant.use_cpu_kernels_` switches the layers to PyTorch's packed CPU kernels (bf16
# activations) where they exist. A layer without a kernel runs the portable form, which
# dequantizes its whole weight at every call. The column "linear only" times the linear layers
# alone (`quant_speed.linear_seconds`): the part of the step that quantization shrinks.

# %%
# NBVAL_IGNORE_OUTPUT
speed_name, why_shape = speed_shape(env.device, env.dtype)
if speed_name is None:  # a CPU (or a GPU too small for the real shapes): SmolLM2 itself
    speed_cfg = rcfg
    make_speed_model = lambda: copy.deepcopy(real.model).to(env.dtype)  # noqa: E731
else:
    speed_cfg = get_config(speed_name)
    make_speed_model = lambda: build_model(speed_cfg, env.device, env.dtype)  # noqa: E731
speed_label = f"{speed_name} shape, random weights" if speed_name else "SmolLM2-135M"
print(f"speed model: {speed_label} ({why_shape}); {devices.dtype_name(env.dtype)} on {env.device.type}")
how = "CUDA graph" if env.on_gpu else "eager"
threads = torch.get_num_threads()
if env.device.type == "cpu":
    torch.set_num_threads(1)  # on a shared 2-core machine one thread is far steadier than two
speed_variants = env.size(cpu=variants, gpu=variants[:4])  # on a GPU without groups of 32: keeps the cell short
speed = measure_variants(make_speed_model, speed_variants, cases=((1, 1),), repeats=env.size(cpu=5, gpu=20),
                         runs=env.size(cpu=3, gpu=1), progress=tqdm)
s0 = speed[0]
print(f"\n{'variant':<19}{'weights':>10}{'bits/w':>8}{'step ms':>9}{'speed':>8}{'linear only':>13}{'speed':>8}  layers")
for r in speed:
    print(f"{r['variant']:<19}{human_bytes(r['bytes']):>10}{r['bits_per_weight']:>8.2f}{r['step'][1, 1] * 1e3:>9.3f}"
          f"{s0['step'][1, 1] / r['step'][1, 1]:>7.2f}x{r['linear'] * 1e3:>10.3f} ms{s0['linear'] / r['linear']:>7.2f}x  {r['layers']}")
print("(bits/w: the linear layers but the LM head, codes plus scales and zero points; speed: vs unquantized)")
bandwidth = ceilings.measure_copy_bandwidth(env.device)  # with the same threads as the steps
torch.set_num_threads(threads)
nbytes = torch.finfo(env.dtype).bits // 8
floor = analysis.decode_bytes_per_step(speed_cfg, 1, 64, nbytes, nbytes) / bandwidth
print(f"memory floor of the unquantized step: {floor * 1e3:.3f} ms (its bytes at the measured copy bandwidth, "
      f"{bandwidth / 1e9:,.0f} GB/s); the step took {s0['step'][1, 1] * 1e3:.3f} ms ({how}), "
      f"the linear layers alone {s0['linear'] * 1e3:.3f} ms")

# %% [markdown]
# Where weight-only quantization does **not** help: a large batch and a prefill. Both multiply
# every weight by many rows, so the matmuls are compute-bound (section 7: above B_crit), and int8
# weights still need bf16 arithmetic; past 16 rows `Int8Linear` even dequantizes its whole weight
# first. Measured on a GPU for the unquantized and int8 models: B = 512 sequences, and a prefill of
# 512 tokens.

# %%
# NBVAL_IGNORE_OUTPUT
big_B, prefill_T = 512, 512
if env.on_gpu and speed_name:
    large = measure_variants(make_speed_model, ["unquantized", "int8 per channel"],
                             cases=((1, 1), (big_B, 1), (1, prefill_T)), repeats=10, linear=False)
    for (B_, T_), label in [((1, 1), "decode, B = 1"), ((big_B, 1), f"decode, B = {big_B}"),
                            ((1, prefill_T), f"prefill of {prefill_T} tokens")]:
        t16, t8 = large[0]["step"][B_, T_], large[1]["step"][B_, T_]
        print(f"{label:<24} unquantized {t16 * 1e3:8.2f} ms, int8 {t8 * 1e3:8.2f} ms: int8 {t16 / t8:.2f}x")
else:
    large = None
    print(f"check skipped on {env.device.type}: a large batch and a prefill are measured on a GPU with a real "
          f"shape only (here each would take minutes; section 7's roofline says what to expect)")

# %%
sp = {r["variant"]: r for r in speed}
step_gain = {v: s0["step"][1, 1] / r["step"][1, 1] for v, r in sp.items()}
linear_gain = {v: s0["linear"] / r["linear"] for v, r in sp.items()}
for v in speed_variants[1:]:
    verdict = "faster" if step_gain[v] > 1.05 else ("slower" if step_gain[v] < 0.95 else "about as fast")
    print(f"{v:<18} step {verdict} than unquantized ({step_gain[v]:.2f}x; linear layers alone "
          f"{linear_gain[v]:.2f}x) with {sp[v]['layers']}")
assert sp["int8 per channel"]["linear_bytes"] < 0.6 * s0["linear_bytes"]
assert sp["int4 groups of 64"]["linear_bytes"] < 0.6 * sp["int8 per channel"]["linear_bytes"]
# the portable form writes a full-precision copy of every weight at every call, the int4 kernel reads
# half a byte a weight: on any device that is several times more memory traffic
if "Int4Linear[torch]" not in sp["int4 groups of 64"]["layers"]:
    assert sp["int4 per channel"]["step"][1, 1] > 1.5 * sp["int4 groups of 64"]["step"][1, 1], \
        "portable int4 (a dequantized copy per call) should be clearly slower than the int4 kernel"
else:
    print("check skipped: no int4 kernel on this device (groups of 64 run the portable form too)")
if env.on_gpu and speed_name:
    # int8 reads a little over half the bytes of every matrix but the bf16 LM head: the linear layers
    # alone should gain well over 1.4x; the whole step less, since its ~30 small kernels a layer
    # (norms, RoPE, attention) do not shrink
    assert linear_gain["int8 per channel"] > 1.4, "int8 linear layers should read their weights much faster"
    assert step_gain["int8 per channel"] > 1.2, "int8 weights should shorten a memory-bound decode step"
    assert linear_gain["int8 per channel"] > step_gain["int8 per channel"], "the rest of the step does not shrink"
    for B_, T_ in ((big_B, 1), (1, prefill_T)):  # compute-bound: int8 weights cannot make it faster
        assert large[1]["step"][B_, T_] > large[0]["step"][B_, T_] / 1.1, "weight-only int8 should not help here"
elif env.on_gpu:
    print(f"check skipped: no real shape fits this GPU ({why_shape}), and SmolLM2's step is launch-bound")
else:
    # on a CPU the fp32 step is mostly the weight read (see the memory floor above) and PyTorch's
    # int8 kernel reads 1 byte a weight instead of 4
    assert step_gain["int8 per channel"] > 1.05, "int8 with the CPU kernel should beat the fp32 step"
    print("check skipped on CPU: the GPU's int8 speed-up and the large batch / prefill (GPU only)")

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
labels = [v.replace(" per ", "\nper ").replace(" groups", "\ngroups") for v in variants]
colors = [COLORS["theory"], COLORS["cached"], COLORS["naive"], COLORS["reference"], COLORS["roofline"]]
panels = [("perplexity vs unquantized (%)", [100 * (ppl[v] / ppl["unquantized"] - 1) for v in variants]),
          ("KL to the unquantized (nats/token)", [kl[v] for v in variants]),
          ("SmolLM2 weight bytes (MB, fp32)", [quality_bytes[v] / 1e6 for v in variants]),
          (f"step speed-up, B=1\n({speed_name or 'SmolLM2'}, {how})", [step_gain.get(v, np.nan) for v in variants])]
for ax, (title, vals) in zip(axes, panels):
    ax.bar(labels, vals, color=colors)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=90)
axes[0].axhline(1, color=COLORS["measured"], ls="--", lw=1, label="+1%")
axes[0].legend(loc="best")
axes[3].axhline(1, color=COLORS["measured"], ls="--", lw=1)
plt.show()

# %% [markdown]
# Reading the speed table (the printed lines above say which way each comparison went in this run):
# - **Bytes.** int8 stores 1 byte a weight (+ a scale per row), int4 half a byte + the scales and
#   zero points (the `bits/w` column). The embedding, the norms and the output layer stay in full
#   precision: in SmolLM2 the 49,152 × 576 embedding is a fifth of all weights.
# - **Batch 1.** With a kernel that reads the codes directly, fewer bytes give a shorter step,
#   but by less than the byte ratio: the rest of the step (attention, norms, RoPE, the unquantized
#   output layer) does not shrink. On a GPU the int8 linear layers alone gain more than the whole
#   step (asserted). On a shared CPU the timings are noisy; the memory-floor line says how much
#   of the unquantized step is the weight read there.
# - **No kernel, no gain.** int4 per channel (no kernel takes groups of a whole row) writes a
#   full-precision copy of each weight at every call, more traffic than the unquantized layer:
#   clearly slower than int4 with a kernel (asserted where an int4 kernel exists).

# %% [markdown]
# - **Large batch, prefill** (GPU): the matmuls are compute-bound, and int8 weights are not faster
#   there (asserted); this implementation is slower, because past 16 rows it dequantizes the whole
#   weight before the bf16 matmul. Weight-only quantization then saves memory, not time.
#
# *Takeaway: int8 weights are nearly free in quality and cut the bytes each decode step reads;
# int4 costs more quality, which smaller groups buy back with bytes; the speed comes only at small
# batch and only with a kernel that reads the codes (notebook 07 measures the whole ladder).*

# %% [markdown]
# ## 6. An int8 KV cache
#
# The KV cache is read every step as well, and at long contexts and large batches it outweighs the
# weights (notebooks 04 and 05). `Int8KVCache` stores keys and values as int8 with one absmax
# scale per (token, head), in the model's dtype: 1 + (scale bytes)/H bytes a number instead of 2
# (bf16) or 4 (fp32).

# %%
# NBVAL_IGNORE_OUTPUT
S = 2048
for B_kv in (1, 16):
    c_full = KVCache.for_model(real.model, B_kv, S)
    c_int8 = Int8KVCache.for_model(real.model, B_kv, S)
    formula = analysis.kv_cache_bytes(rcfg, B_kv, S, bytes_per_value=1 + 4 / rcfg.H)
    assert c_int8.nbytes == formula
    print(f"B={B_kv:>2}, S={S}: fp32 cache {human_bytes(c_full.nbytes):>10}, int8 cache {human_bytes(c_int8.nbytes):>10} "
          f"({c_int8.nbytes / c_full.nbytes:.3f}x; with bf16 scales vs a bf16 cache: {(1 + 2 / rcfg.H) / 2:.3f}x)")
    del c_full, c_int8

# %% [markdown]
# Quality: held-out perplexity with every key and value written to the cache and read back
# (`measure.quality.cached_perplexity`). Each window goes through the cache in one prefill call; since
# every query attends to keys and values *read back from the cache*, that is exactly what
# token-by-token decoding sees (the library's test checks that both give the same number).

# %%
# NBVAL_IGNORE_OUTPUT
int8_cache = lambda m, B, S: Int8KVCache.for_model(m, B, S)  # noqa: E731
ppl_cache = cached_perplexity(real.model, real_tokens, B=4, max_windows=n_windows)
ppl_kv8 = cached_perplexity(real.model, real_tokens, int8_cache, B=4, max_windows=n_windows)
ppl_both = cached_perplexity(quant.quantized_copy(real.model, "int8 per channel"), real_tokens, int8_cache, B=4, max_windows=n_windows)
print(f"fp32 KV cache:                   {ppl_cache:.4f} (no cache: {quality['unquantized'][0]:.4f})")
print(f"int8 KV cache:                   {ppl_kv8:.4f} ({ppl_kv8 / ppl_cache - 1:+.3%})")
print(f"int8 KV cache + int8 weights:    {ppl_both:.4f} ({ppl_both / ppl_cache - 1:+.3%})")

# %%
assert abs(ppl_cache / quality["unquantized"][0] - 1) < 1e-4, "an exact cache must not change the perplexity"
assert abs(ppl_kv8 / ppl_cache - 1) < 0.01, "an int8 KV cache should cost under 1% perplexity"
assert abs(ppl_both / ppl_cache - 1) < 0.02

# %% [markdown]
# For Llama 2 13B (K = N = 40 heads of H = 128, bf16 scales), the same arithmetic:

# %%
# NBVAL_CHECK_OUTPUT
c13 = get_config("llama2-13b")
kv_bf16 = analysis.kv_bytes_per_token(c13)
kv_int8 = analysis.kv_bytes_per_token(c13, bytes_per_value=1 + 2 / c13.H)
print(f"llama2-13b KV bytes per token: bf16 {kv_bf16:,.0f}, int8 + bf16 scale per (token, head) {kv_int8:,.0f} "
      f"({kv_int8 / kv_bf16:.3f}x)")
for S in (1024, 4096):
    b16 = analysis.max_batch_that_fits(c13, S)
    b8 = analysis.max_batch_that_fits(c13, S, kv_bytes_per_value=1 + 2 / c13.H)
    b88 = analysis.max_batch_that_fits(c13, S, bytes_per_param=1, kv_bytes_per_value=1 + 2 / c13.H)
    print(f"  S={S}: largest batch in 80 GB: bf16 everything {b16}, int8 KV {b8}, int8 KV + int8 weights {b88}")
assert kv_bf16 == 819_200 and kv_int8 == 416_000

# %% [markdown]
# *Takeaway: an int8 KV cache halves the cache (vs bf16) for a perplexity change far below 1%, and
# so roughly doubles the batch that fits.*
#
# ## 7. How int8 weights move the critical batch size
#
# A decode step's weight matmuls read every weight once and do 2 FLOPs per weight per sequence. They
# are memory-bound while
#
# $$\underbrace{\frac{2\,B\,P}{\text{FLOP/s}}}_{\text{compute}} < \underbrace{\frac{P \cdot \text{bytes per weight}}{\text{bandwidth}}}_{\text{memory}}
# \quad\Longleftrightarrow\quad B < B_\text{crit} = \beta \cdot \frac{\text{FLOP/s}}{\text{bandwidth}},$$
#
# with β = (bytes per weight)/2 when the arithmetic runs in bf16 (the scaling book's β = bits per
# parameter / bits per activation). bf16 weights: β = 1, the lecture's 295 for an H100. int8
# weights dequantized to bf16: the memory time halves, the compute stays, so the crossing comes at
# **half** the batch. If the matmul itself runs in int8 (weights *and* activations), the tensor
# cores do twice the operations per second and B_crit is back at ~295.

# %%
# NBVAL_CHECK_OUTPUT
cases = [("bf16 weights, bf16 compute", 1.0, analysis.H100_FLOPS_PER_SECOND),
         ("int8 weights, bf16 compute", 0.5, analysis.H100_FLOPS_PER_SECOND),
         ("int4 weights, bf16 compute", 0.25, analysis.H100_FLOPS_PER_SECOND),
         ("int8 weights, int8 compute (1979 TOPS)", 0.5, 2 * analysis.H100_FLOPS_PER_SECOND)]
b_crit = {}
for label, beta, flops in cases:
    b_crit[label] = analysis.critical_batch(flops, analysis.H100_MEMORY_BANDWIDTH, beta=beta)
    print(f"H100, {label:<40} beta = {beta:<4}  B_crit = {b_crit[label]:6.1f}")
assert round(b_crit["bf16 weights, bf16 compute"]) == 295
assert round(b_crit["int8 weights, bf16 compute"]) == 148
assert round(b_crit["int8 weights, int8 compute (1979 TOPS)"]) == 295

# %% [markdown]
# The general step-time model (`analysis.step_time`, here for Llama 2 13B's weights, KV cache left
# out) shows the same thing as a picture: int8 weights halve the memory floor, and the two curves
# meet the compute line at B = 295 and B ≈ 148.

# %%
c13 = get_config("llama2-13b")
Bs = np.unique(np.geomspace(1, 2048, 200).astype(int))
fig, ax = plt.subplots()
compute = 2 * Bs * analysis.num_params(c13) / analysis.H100_FLOPS_PER_SECOND
ax.plot(Bs, compute * 1e3, color=COLORS["theory"], ls="--", lw=1, label="compute alone: 2·B·params / FLOP/s")
for label, bpp, color in [("bf16 weights", 2, COLORS["cached"]), ("int8 weights", 1, COLORS["naive"]),
                          ("int4 weights", 0.5, COLORS["reference"])]:
    t = [analysis.step_time(c13, int(b), 0, bytes_per_param=bpp) for b in Bs]
    ax.plot(Bs, np.array(t) * 1e3, color=color, label=label)
    bc = analysis.critical_batch(beta=bpp / 2)
    ax.axvline(bc, color=color, ls=":", lw=1)
    ax.annotate(f"B_crit ≈ {bc:.0f}", (bc * 1.05, 30 if bpp == 2 else (15 if bpp == 1 else 1.2)), color=color)
ax.set(xscale="log", yscale="log", xlabel="batch size B (sequences decoded together)",
       ylabel="time per decode step (ms)", title="Llama 2 13B on an H100 (lecture's figures): weight read vs compute")
ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
ax.yaxis.set_minor_formatter(plt.NullFormatter())
ax.legend(loc="best")
plt.show()

# %% [markdown]
# What this means in practice: below B_crit (interactive serving, small batches), int8 weights can
# make the weight read up to 2× faster (section 5 measured how much of that reaches the whole step).
# Above it, the step is compute-bound and weight-only quantization saves nothing but memory; to go
# faster there, the arithmetic itself must get cheaper (fp8/int8 matmuls, which double the
# tensor-core rate).
#
# *Takeaway: B_crit = β·(FLOP/s ÷ bandwidth); int8 weights with bf16 compute halve it (295 → 148 on
# an H100), int8 compute restores it.*

# %% [markdown]
# ## Summary
# - Formats: bf16 for inference by default; fp8 e4m3fn reaches 448 (the lecture's 240 is
#   e4m3fnuz); int8/int4 are integers plus a scale.
# - x_q = round(x/scale) + zero point, x̂ = (x_q − zero point)·scale: error ≤ scale/2. absmax for
#   symmetric values, zero-point for skewed ones.
# - Error halves with every bit; per-channel and per-group scales lower it at the cost of storing
#   scales.
# - Activations of large models have outlier features that break per-token absmax; LLM.int8() keeps
#   them in 16-bit (SmoothQuant/AWQ move or protect them instead).
# - On a real model (SmolLM2-135M): int8 weights cost < 1% perplexity, int4 more; per-group int4
#   moves the model less than per-channel int4 (smaller groups, smaller KL divergence); an int8 KV
#   cache costs under 1%.
# - Speed at batch 1 needs a kernel that reads the codes directly, and is less than the byte ratio
#   (the rest of the step does not shrink); on a GPU, for a real shape, asserted for int8. The
#   portable dequantize-then-matmul form is slower. At a large batch and in prefill int8 weights
#   are not faster (asserted on a GPU).
# - int8 weights halve the bytes a decode step reads, and with them B_crit.

# %% [markdown]
# ## Exercises
# 1. Quantize only the MLPs of the real model (`quant.quantize_model_(m, bits=4, group_size=32,
#    skip=("lm_head", "wq", "wk", "wv", "wo"))`) and then only attention. Which part is more sensitive?
# 2. Use `quant.fake_quantize` on every linear weight to make a perplexity-vs-bits curve (2 to 8 bits)
#    for per-channel and per-group scales. Where does quality fall off a cliff?
# 3. Quantize `lm_head` too (`skip=()`; SmolLM2's is tied to the embedding, so the embedding stays
#    in full precision and the model grows). What happens to perplexity, and why is the output
#    layer more sensitive than the others?
# 4. In section 4, set α = 100 and vary the LLM.int8() threshold. How few outlier dims must be split
#    off to recover the accuracy?
# 5. With `analysis.step_time`, find the batch size at which int8 weights stop helping Llama 3 70B
#    on an H100, and how much memory its KV cache needs there at S = 4096.
