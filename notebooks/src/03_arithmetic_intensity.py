# %% [markdown]
# # 03 · Arithmetic intensity and the measured roofline
#
# *Follows CS336 Lecture 10, "Review of arithmetic intensity" and "Arithmetic intensity of
# inference" (with the scaling book's Part 7 and kipply's "Transformer Inference Arithmetic").*
#
# A kernel is limited either by how fast the device computes (FLOP/s) or by how fast it reads
# memory (bytes/s). Which one depends on its **arithmetic intensity**, the FLOPs it does per byte
# it moves, compared with the **accelerator's intensity**, FLOP/s ÷ bytes/s (295 for the
# lecture's H100).
#
# In this notebook you will
# 1. count the FLOPs and bytes of a matmul X[B×D] @ W[D×F] and see its intensity tend to B,
# 2. compute accelerator intensities from datasheets (H100: 989e12 / 3.35e12 ≈ 295),
# 3. **measure** your device's two ceilings and a sweep of matmul FLOP/s over B, and read the
#    ridge point off the data, next to reference measurements from a real H100,
# 4. measure an MLP and attention in prefill (intensity B·T and S/2) and decode (B, and S/(S+1) < 1),
# 5. move the ridge with a widget: another GPU, another number format.
#
# *On a projector:* set `LECTURE_PRESENTATION=1` before starting Jupyter, or call
# `setup(presentation=True)` in the first code cell, for larger fonts in every figure.

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
import numpy as np
import torch

from lecture_lib import analysis, devices, hardware, widgets
from lecture_lib.measure import references, roofline
from lecture_lib.measure.ceilings import measure_ceilings
from lecture_lib.notebook import setup
from lecture_lib.plotting import COLORS, loglog_slope

env = setup(seed=0)
if env.device.type == "cpu":
    torch.set_num_threads(1)  # measure one core: see section 3
    print("CPU measurements in this notebook use 1 thread")

# %% [markdown]
# ## 1. The matmul: FLOPs, bytes, intensity
#
# For X[B×D] @ W[D×F] in bf16 (2 bytes a number) the lecture counts
#
# - FLOPs = 2·B·D·F (a multiply and an add for each of the B·D·F terms),
# - bytes = 2·B·D (read X) + 2·D·F (read W) + 2·B·F (write Y),
#
# $$\text{intensity} = \frac{2BDF}{2BD + 2DF + 2BF} = \frac{BDF}{BD + BF + DF} \;\xrightarrow{B \ll D,F}\; B.$$
#
# When B is small, the weight matrix (D·F numbers) dominates the bytes, and every weight read
# does B multiply-adds: the intensity is B. A matrix-vector product (B = 1, one token being
# generated) does about 1 FLOP per byte. The library's `analysis` functions give:

# %%
# NBVAL_CHECK_OUTPUT
D = F = 8192
print(f"X[B x {D}] @ W[{D} x {F}], bf16")
print(f"{'B':>6} {'FLOPs = 2BDF':>14} {'bytes = 2(BD+DF+BF)':>20} {'intensity':>10} {'intensity / B':>14}")
for B in [1, 4, 16, 64, 256, 1024, 8192]:
    flops, nbytes = analysis.matmul_flops(B, D, F), analysis.matmul_bytes(B, D, F)
    intensity = analysis.matmul_intensity(B, D, F)
    assert intensity == flops / nbytes
    print(f"{B:>6} {flops:>14.3e} {nbytes:>20.3e} {intensity:>10.2f} {intensity / B:>14.3f}")

assert abs(analysis.matmul_intensity(1, D, F) - 1) < 0.001  # matrix-vector: 1 FLOP per byte
assert all(analysis.matmul_intensity(B, D, F) / B > 0.9 for B in range(1, 300))  # ≈ B while B ≪ D, F

# %% [markdown]
# The intensity is B up to a few hundred (intensity/B stays above 0.9), and it saturates near
# D/3 when B is as large as D (all three matrices are then the same size).
#
# **Takeaway:** a matmul's intensity is about its batch size, the number of rows sharing each
# weight read.

# %% [markdown]
# ## 2. The accelerator's intensity
#
# The device's own ratio of peak FLOP/s to memory bandwidth is the **ridge point**: a kernel
# with a higher intensity is compute-limited (good); a lower one is memory-limited (bad). With
# the lecture's H100 figures:

# %%
# NBVAL_CHECK_OUTPUT
h100 = hardware.get_spec("H100 SXM")
h100_ridge = analysis.accelerator_intensity(h100.flops_for("bf16"), h100.memory_bandwidth)
print(f"H100: {h100.flops_for('bf16'):.3e} FLOP/s / {h100.memory_bandwidth:.3e} bytes/s "
      f"= {h100_ridge:.2f} FLOP/byte")
assert round(h100_ridge) == 295  # the lecture's assert
print(f"so a bf16 matmul (intensity ≈ B) is compute-limited iff B > {round(h100_ridge)}")
print()
print(f"{'GPU':>14} {'bandwidth':>10} " + " ".join(f"{d:>8}" for d in ["fp32", "bf16", "fp16", "fp8", "int8"])
      + "   (ridge, FLOP/byte)")
for key, spec in hardware.load_specs().items():
    ridges = [f"{spec.ridge(d):>8.0f}" if spec.flops.get(d) else f"{'-':>8}"
              for d in ["fp32", "bf16", "fp16", "fp8", "int8"]]
    print(f"{key:>14} {spec.memory_bandwidth / 1e12:>7.2f} TB/s " + " ".join(ridges))
print()
print(f"scaling book, H100: 9.9e14 / 3.4e12 = {analysis.accelerator_intensity(9.9e14, 3.4e12):.0f} "
      "(its text says 'about 280')")
print(f"kipply, A100: 312e12 / 1.5e12 = {analysis.accelerator_intensity(312e12, 1.5e12):.0f} "
      f"(1.555e12 B/s gives {hardware.get_spec('A100 40GB').ridge():.0f})")

# %% [markdown]
# Notes on the table:
# - The figures are *dense tensor-core peaks* (`data/hardware.json`, each with its source); `fp32` is
#   the plain fp32 rate, which is why its ridge is low. fp8 and int8 double the FLOP/s over the
#   same bandwidth, so they double the ridge in FLOP/byte; but they also halve the bytes per
#   number, so a matmul's intensity doubles too (≈ 2B): the batch that turns it compute-bound
#   stays about the same (section 5).
# - The H200 has the H100's compute with 1.43× the bandwidth: a *lower* ridge, so a smaller batch
#   already makes a matmul compute-bound (and a memory-bound decode step runs 1.43× faster). Sources round differently: the scaling book's 9.9e14 / 3.4e12 gives 291 (it
#   says "about 280"); kipply's A100 ratio 312e12 / 1.5e12 = 208.
#
# **Takeaway:** an H100 needs about 295 FLOPs per byte to be busy; a decode step's matmuls offer
# about B.

# %% [markdown]
# ## 3. Measuring the roofline on your device
#
# Datasheet peaks are not reached in practice. The library measures this device's two ceilings
# in a few seconds: bandwidth from a large copy (bigger than any cache, counting the bytes read
# and written) and FLOP/s from a large square matmul. This runs on whatever device you have (a
# CPU, a laptop GPU, a Colab T4, an H100), so where devices differ the notebook prints its
# reading rather than stating one in prose.
#
# On a CPU this notebook measures **one core** (`torch.set_num_threads(1)` in the first cell). A
# small multi-threaded matmul makes its threads wait for each other several times a call, and on
# a busy machine (a shared CI runner, a laptop with a browser open) each wait can last a
# scheduler time slice: we would be timing the operating system, not the memory. One core has
# its own, lower, ceilings, measured the same way, so the roofline stays consistent.

# %%
# NBVAL_IGNORE_OUTPUT
ceilings = measure_ceilings(env.device, env.dtype)
print(ceilings)
spec = env.info.spec
has_datasheet = spec is not None and bool(spec.flops.get(devices.dtype_name(env.dtype)))
if has_datasheet:
    bw_share, flops_share = ceilings.bandwidth / spec.memory_bandwidth, ceilings.flops / spec.flops_for(env.dtype)
    print(f"datasheet ({spec.key}): {spec.memory_bandwidth / 1e9:,.0f} GB/s, "
          f"{spec.flops_for(env.dtype) / 1e12:,.0f} TFLOP/s, ridge {spec.ridge(env.dtype):,.0f}: measured "
          f"{bw_share:.0%} of the bandwidth, {flops_share:.0%} of the FLOP/s")
    print(f"measured ridge / datasheet ridge = {flops_share:.0%} / {bw_share:.0%} = "
          f"{ceilings.ridge / spec.ridge(env.dtype):.2f}")
else:
    print("no datasheet entry for this device: the measured ceilings are the roofline")

# %% [markdown]
# Real kernels reach about 70–90% of the datasheet bandwidth and 50–75% of its FLOP/s (LECTURE.md,
# caveat 5), so the measured ridge should be between 0.50/0.90 ≈ 0.56 and 0.75/0.70 ≈ 1.07 of the
# datasheet's. The check below allows 0.45 to 1.3 (a small GPU such as the 70 W T4 throttles
# below its FLOP/s peak); it runs where there is a datasheet entry, i.e. on a known GPU.

# %%
if env.on_gpu and has_datasheet:
    assert 0.45 < ceilings.ridge / spec.ridge(env.dtype) < 1.3, (ceilings.ridge, spec.ridge(env.dtype))
    print(f"checked: measured ridge {ceilings.ridge:,.0f} is within 0.45-1.3x of the datasheet's "
          f"{spec.ridge(env.dtype):,.0f}")
else:
    print(f"check skipped on {env.device.type}: no datasheet ridge to compare with")

# %% [markdown]
# Now the sweep: X[B×D] @ W[D×F] for B from 1 upwards, timed with the library's `time_fn`
# (median of repeats). W is bigger than the caches (on an H100 the 50 MB L2 could otherwise hold
# a small W, and we would time the cache): `roofline.matmul_sweep` cycles through enough copies
# of W to exceed the last-level cache twice over. D = F = 8192 on a GPU, 2048 on a CPU. FLOPs
# and bytes come from the formulas above, with the element size of the dtype actually used
# (4 bytes in fp32 on a CPU: its intensity is then B/2).

# %%
# NBVAL_IGNORE_OUTPUT
sweep = roofline.matmul_sweep(env.device, env.dtype, progress=True)
print(f"D = F = {sweep[0]['D']}, {sweep[0]['dtype']}, {sweep[0]['weight_copies']} copies of W")
print(f"{'B':>6} {'time':>10} {'intensity':>10} {'achieved':>16} {'bytes/s':>12}")
for r in sweep:
    if r["status"] != "ok":
        print(f"{r['B']:>6}   out of memory")
        continue
    print(f"{r['B']:>6} {r['seconds'] * 1e6:>8.1f} µs {r['intensity']:>10.1f} "
          f"{r['flops_per_s'] / 1e12:>9.3f} TFLOP/s {r['bytes_per_s'] / 1e9:>7.0f} GB/s")
ridge = roofline.ridge_from_sweep(sweep)
print(f"\nfrom the sweep: {ridge}")
print(f"from the ceilings: ridge {ceilings.ridge:,.1f} FLOP/byte")
seconds = {r["B"]: r["seconds"] for r in roofline.ok_records(sweep)}
for lo, hi in [(1, 16), (1, 64), (64, 256)]:
    if lo in seconds and hi in seconds:
        print(f"B = {lo} -> {hi}: {hi // lo}x the FLOPs in {seconds[hi] / seconds[lo]:.2f}x the time")

# %% [markdown]
# **Reading the ridge off the data.** `roofline.ridge_from_sweep` fits the roofline itself to the
# points: on log-log axes a roofline is a line of slope 1 (bandwidth-bound: FLOP/s =
# bandwidth × intensity) followed by a flat line (compute-bound). It tries every split of the
# points into "below" and "above", fits the two lines by least squares, keeps the best, and
# reports where they cross. It also reports the first B that reaches 80% of the fitted plateau
# (real curves bend before the corner).
#
# Reference measurements from a real H100, made by `python -m lecture_lib.measure.roofline` and shipped in
# `data/reference/`, are drawn on the same axes, so that a CPU run shows both.

# %%
# NBVAL_IGNORE_OUTPUT
matmul_refs = references.load_references()
if not matmul_refs:
    print("Note: no reference measurements in data/reference/ (matmul_*.json) yet, so there is no "
          "H100 overlay. Make one on a GPU with: python -m lecture_lib.measure.roofline")
for ref in matmul_refs:
    r = ref.get("ridge", {})
    print(f"reference: {ref['device']}, {ref['dtype']}, measured {ref['date'][:10]}; ceilings "
          f"{ref['ceilings']['bandwidth'] / 1e9:,.0f} GB/s, {ref['ceilings']['flops'] / 1e12:,.3g} TFLOP/s; "
          f"ridge from its sweep {r.get('intensity', float('nan')):,.1f} FLOP/byte (B ≈ {r.get('B', float('nan')):,.0f})")

# %% [markdown]
# Where is the memory-bound region? Below the ridge. On a GPU (ridge ≈ 100–400) B up to 64 is
# deep inside it. On a CPU the ridge is tens of times lower (B of a few tens in fp32), and
# very small B can hit special cases of the CPU's math library (a matrix-vector kernel at B = 1,
# sometimes one matrix-vector product *per row* for B of 2 or 3), so there we fit B = 4 to 16.
# Above the ridge we fit the points from 4× the ridge's B on (at least the last three), where
# the curve should be flat.

# %%
# NBVAL_IGNORE_OUTPUT
fit_lo, fit_hi = env.size(cpu=(4, 16), gpu=(1, 64))
slope = roofline.memory_bound_slope(sweep, B_max=fit_hi, B_min=fit_lo)
ok = roofline.ok_records(sweep)
oom = [r["B"] for r in sweep if r["status"] != "ok"]
plateau_lo = min(4 * ridge.B, ok[-3]["B"])  # compute-bound side: from 4x the ridge's B, >= 3 points
plateau_slope = roofline.memory_bound_slope(sweep, B_max=ok[-1]["B"], B_min=plateau_lo)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
x_range = (0.2, 2e4)
roofline.plot_roofline(ax1, ceilings.flops, ceilings.bandwidth, f"this device, measured ceilings (ridge {ceilings.ridge:,.0f})",
                       COLORS["measured"], "--", x_range)
roofline.plot_roofline(ax1, ridge.plateau_flops, ridge.bandwidth, f"fitted to the sweep (ridge {ridge.intensity:,.0f})",
                       COLORS["measured"], ":", x_range, lw=1)
roofline.plot_records(ax1, sweep, f"matmul sweep, {ok[0]['dtype']}", COLORS["measured"], annotate=(1, fit_hi, 512))
if spec is not None and spec.flops.get(devices.dtype_name(env.dtype)):
    roofline.plot_roofline(ax1, spec.flops_for(env.dtype), spec.memory_bandwidth, f"{spec.key} datasheet",
                           COLORS["theory"], "-", x_range, lw=1)
roofline.plot_roofline(ax1, h100.flops_for("bf16"), h100.memory_bandwidth, "H100 datasheet (lecture: ridge 295)",
                       COLORS["roofline"], "-", x_range, lw=1, alpha=0.6)
for ref in matmul_refs:
    c = ref["ceilings"]
    roofline.plot_roofline(ax1, c["flops"], c["bandwidth"], f"reference {ref.get('spec') or ref['device_type']}: measured ceilings",
                           COLORS["reference"], "--", x_range, lw=1)
    roofline.plot_records(ax1, ref["matmul"]["records"], f"reference {ref.get('spec') or ref['device_type']} sweep ({ref['dtype']})",
                          COLORS["reference"], "s", ms=4)
ax1.set(xlabel="arithmetic intensity (FLOP/byte)", ylabel="achieved FLOP/s", title="Roofline: matmul X[B×D] @ W[D×F]")
ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)  # below the axes: no data hidden

Bs = np.array([r["B"] for r in ok])
ax2.loglog(Bs, [r["flops_per_s"] for r in ok], "o-", color=COLORS["measured"], label="this device")
_, c = loglog_slope([r["B"] for r in ok if fit_lo <= r["B"] <= fit_hi],
                    [r["flops_per_s"] for r in ok if fit_lo <= r["B"] <= fit_hi])
xs = np.geomspace(fit_lo, fit_hi, 20)
ax2.loglog(xs, np.exp(c) * xs**slope, "-", color="black", lw=3, alpha=0.4, label=f"fit B={fit_lo}..{fit_hi}: slope {slope:.2f}")
ax2.axhline(ceilings.flops, color=COLORS["measured"], ls="--", lw=1, label="measured matmul ceiling")
if np.isfinite(ridge.B):
    ax2.axvline(ridge.B, color=COLORS["measured"], ls=":", lw=1, label=f"ridge from the sweep, B ≈ {ridge.B:,.0f}")
for b in oom:
    ax2.axvline(b, color="black", ls="-", lw=0.5)
    ax2.annotate("OOM", (b, ceilings.flops), rotation=90, fontsize="small")
for ref in matmul_refs:
    rok = roofline.ok_records(ref["matmul"]["records"])
    ax2.loglog([r["B"] for r in rok], [r["flops_per_s"] for r in rok], "s-", ms=4, color=COLORS["reference"],
               label=f"reference {ref.get('spec') or ref['device_type']} ({ref['dtype']})")
ax2.set(xlabel="batch size B (rows of X)", ylabel="achieved FLOP/s", title="FLOP/s grows ∝ B until the ridge")
ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
plt.show()
print(f"log-log slope of FLOP/s vs B for B = {fit_lo}..{fit_hi}: {slope:.2f} (1 = time independent of B)")
print(f"log-log slope for B = {plateau_lo:,.0f}..{ok[-1]['B']}: {plateau_slope:.2f} (0 = FLOP/s flat at the ceiling)")
print(f"fitted bandwidth line {ridge.bandwidth / 1e9:,.0f} GB/s = {ridge.bandwidth / ceilings.bandwidth:.0%} of the copy "
      f"bandwidth; plateau {ridge.plateau_flops / 1e12:,.3g} TFLOP/s = {ridge.plateau_flops / ceilings.flops:.0%} of the matmul ceiling")
print(f"fitted ridge / ceilings' ridge = {ridge.intensity:,.1f} / {ceilings.ridge:,.1f} = {ridge.intensity / ceilings.ridge:.2f}")
print(f"B = {ok[0]['B']} uses {ok[0]['flops_per_s'] / ceilings.flops:.2%} of the measured FLOP/s ceiling "
      f"(its intensity over the ridge: {ok[0]['intensity'] / ceilings.ridge:.2%})")

# %% [markdown]
# Reading the plots:
# - **Left of the ridge** every call reads all of W whatever B is, so ideally the time does not
#   depend on B: twice the rows, twice the FLOPs in the same time. FLOP/s then grows linearly
#   with B (slope 1 on log-log axes) and the points climb the bandwidth line. **Right of the
#   ridge** FLOP/s is flat at the compute ceiling and the time grows with B.
# - **On a GPU** (the H100 reference, or your own run) the time is nearly flat up to B of a few
#   hundred, the memory-bound points sit close to the measured copy bandwidth, the plateau near
#   the measured matmul ceiling, and the ridge read from the data near the ratio of the two
#   ceilings. B = 1 uses about 1/ridge of the compute: well under 1% of an H100.

# %% [markdown]
# - **On a CPU** the two regimes are there, but the ridge is far lower, and the time is
#   not flat below it (the printed time ratios): the math library's kernels for small B do not
#   read W at full bandwidth (they repack W, and at B = 2 or 3 may re-read it per row), and they
#   grow more efficient as B grows, also past the ridge, where FLOP/s keeps rising towards the
#   ceiling instead of turning flat (the printed slope above the ridge; on a busy machine single
#   points also jump up or down). So the measured bandwidth line sits below the
#   copy bandwidth. That is a property of the kernels, not of the roofline model: the roofline
#   is an upper bound, and real kernels can sit below it.

# %% [markdown]
# For the same reason the CPU's slopes move from run to run, more on a busy machine, and with a
# ridge at B of a few tens the fitted range B = 4..16 already feels the compute. So on a CPU the
# checks below only ask for a slope of 0.4 to 1.5 below the ridge; on a GPU, 0.8 to 1.2, time
# within 1.5x from B = 1 to 64, a plateau slope under 0.1, and the two ridges within 1.5x.
#
# **Takeaway:** below the ridge, adding rows to a matmul costs far less than proportionally more
# time (on a GPU, almost none): that is why batching raises decode throughput.

# %%
# Below the ridge FLOP/s grows about linearly with B. On a CPU the fitted range sits close to the
# ridge and the small-B kernels vary (see above): a looser bound there.
lo, hi = env.size(cpu=(0.4, 1.5), gpu=(0.8, 1.2))
assert lo <= slope <= hi, f"FLOP/s should grow about linearly with B below the ridge, slope {slope:.2f}"
# The sweep's plateau is the compute ceiling: the same library's big matmul on a GPU, within 20%.
assert env.size(cpu=0.3, gpu=0.8) <= ridge.plateau_flops / ceilings.flops <= env.size(cpu=1.5, gpu=1.2)
# B = 1 sits on or under the bandwidth line, so it uses about intensity/ridge of the compute. A
# read-only stream can beat a copy's counted rate: by a few tens of percent on a GPU, by up to 1.5x
# on a CPU (there a copy's writes first read the destination line, traffic the count leaves out).
assert ok[0]["flops_per_s"] < env.size(cpu=2.0, gpu=1.5) * ok[0]["intensity"] * ceilings.bandwidth
if env.on_gpu:
    # "time hardly depends on B": 64x the FLOPs in under 1.5x the time
    assert seconds[64] < 1.5 * seconds[1], (seconds[1], seconds[64])
    # above the ridge FLOP/s saturates: flat within noise from 4x the ridge's B on
    assert abs(plateau_slope) < 0.1, f"FLOP/s should be flat above the ridge, slope {plateau_slope:.2f}"
    # small-B matmuls read W at 70-100% of the copy bandwidth and the plateau is within 20% of the
    # ceiling (asserted above), so the ridge read off the sweep is within 1.5x of the ceilings' ridge
    assert 1 / 1.5 < ridge.intensity / ceilings.ridge < 1.5, (ridge.intensity, ceilings.ridge)
    print("checked on the GPU: flat time up to B = 64, a flat plateau, and the fitted ridge near the ceilings' ridge")
else:
    print("checks skipped on a CPU: flat time below the ridge, a flat plateau above it, and the fitted ridge "
          "near the ceilings' ridge (its matmul kernels gain efficiency with B on both sides; see above)")

# %% [markdown]
# ## 4. Prefill and decode: MLP and attention
#
# **MLP** (SwiGLU: up, gate and down matrices) on B sequences of T tokens: FLOPs 6·B·T·D·F,
# bytes 4BTD + 4BTF + 6DF, so
#
# $$\text{intensity}_\text{MLP} = \frac{3BTDF}{2BTD + 2BTF + 3DF} \;\to\; B\cdot T \quad (BT \ll D, F).$$
#
# **Attention** (FlashAttention-style: read Q, K, V once, write Y) of T queries against S keys:
# FLOPs 4·B·S·T·D, bytes 4BSD + 4BTD, so
#
# $$\text{intensity}_\text{attention} = \frac{ST}{S + T}: \quad \text{prefill } (T = S): \tfrac{S}{2}, \qquad \text{decode } (T = 1): \tfrac{S}{S+1} < 1.$$
#
# B drops out of the attention intensity: every sequence has its own KV cache, so batching does
# not help attention. For Llama 2 13B's shapes (D = 5120, F = 13824), with the library:

# %%
# NBVAL_CHECK_OUTPUT
D13, F13 = 5120, 13824
print("MLP (bf16), D = 5120, F = 13824")
for phase, B, T in [("prefill", 1, 1024), ("prefill", 4, 1024), ("decode", 1, 1), ("decode", 16, 1),
                    ("decode", 64, 1), ("decode", 256, 1)]:
    i = analysis.mlp_intensity(B, T, D13, F13)
    print(f"  {phase:>7} B={B:>3} T={T:>4}: intensity {i:7.1f}  (B·T = {B * T})")
print("attention (bf16)")
for S in [1024, 4096]:
    pre, dec = analysis.attention_intensity(S, S), analysis.attention_intensity(S, 1)
    print(f"  S = {S}: prefill (T = S) {pre:7.1f} = S/2,  decode (T = 1) {dec:.5f} = S/(S+1)")
    assert pre == S / 2 and dec == S / (S + 1) < 1
assert abs(analysis.mlp_intensity(1, 1, D13, F13) - 1) < 0.01
assert all(0.9 < analysis.mlp_intensity(B, 1, D13, F13) / B <= 1 for B in (1, 16, 64))

# %% [markdown]
# So prefill is compute-bound (intensity in the hundreds to thousands), and decode is
# memory-bound: the MLP's intensity is the number of concurrent requests B, and attention's is
# below 1 whatever we do. Now measured: `roofline.mlp_attention_measurements` runs the library's
# `SwiGLU` module and `F.scaled_dot_product_attention` in both phases (prefill without a causal
# mask, so that the kernel does exactly the formula's work).

# %%
# NBVAL_IGNORE_OUTPUT
blocks = roofline.mlp_attention_measurements(env.device, env.dtype, progress=True)
b0 = blocks[0]
print(f"MLP D={b0['D']} F={b0['F']}, attention with {blocks[-1]['N']} heads of {blocks[-1]['H']}, {b0['dtype']}")
for r in blocks:
    shape = f"B={r['B']:<3} T={r['T']:<5}" + (f" S={r['S']:<5}" if r["S"] else " " * 8)
    rate = f"{r['flops_per_s'] / 1e12:9.4f} TFLOP/s" if r["status"] == "ok" else "   out of memory"
    print(f"{r['kind']:>9} {r['phase']:>7} {shape}: intensity {r['intensity']:8.2f}, {rate}")

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(11, 5))
x_range = (0.1, 1e4)
roofline.plot_roofline(ax, ceilings.flops, ceilings.bandwidth, "this device, measured ceilings", COLORS["measured"], "--", x_range)
styles = {("mlp", "prefill"): "o", ("mlp", "decode"): "v", ("attention", "prefill"): "s", ("attention", "decode"): "^"}
for (kind, phase), marker in styles.items():
    roofline.plot_records(ax, roofline.ok_records(blocks, kind, phase), f"{kind} {phase}", COLORS["measured"], marker,
                          annotate=(1, 8, 32, 64) if (kind, phase) == ("mlp", "decode") else (), ms=7,
                          mfc="none" if phase == "decode" else None)
for ref in matmul_refs:
    c = ref["ceilings"]
    name = ref.get("spec") or ref["device_type"]
    roofline.plot_roofline(ax, c["flops"], c["bandwidth"], f"reference {name}: measured ceilings", COLORS["reference"], "--", x_range)
    for (kind, phase), marker in styles.items():
        roofline.plot_records(ax, roofline.ok_records(ref["mlp_attention"]["records"], kind, phase), f"reference {name}: {kind} {phase}",
                              COLORS["reference"], marker, ms=6, mfc="none" if phase == "decode" else None)
ax.set(xlabel="arithmetic intensity (FLOP/byte)", ylabel="achieved FLOP/s", title="Prefill is compute-bound, decode memory-bound")
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1))  # beside the axes: no data hidden
plt.show()

# %% [markdown]
# Prefill points sit high on the right, decode points low on the left, on the bandwidth line or
# below it. MLP decode climbs with B (its intensity is B); attention decode stays at intensity
# < 1 whatever B is. (On a GPU a single decode sequence may not even fill the chip, which puts
# B = 1 attention below the line: a second reason to batch, but not an intensity one.)

# %% [markdown]
# How much slower is decode? The roofline predicts it: prefill runs at the compute ceiling, decode
# at bandwidth × its intensity (about 1 FLOP/byte at B = 1 in 16-bit), so the ratio is about the
# ridge divided by decode's intensity. The checks: the MLP's measured ratio is within 2x of that
# prediction (both phases sit within tens of percent of their roofline on a GPU); attention's is
# at least half of it (decode can't beat the bandwidth line, and a single sequence's attention may
# not even fill a GPU, which makes the ratio larger, never smaller); MLP decode climbs with B;
# attention decode stays under the bandwidth line whatever B is.

# %%
ratios = {kind: roofline.prefill_decode_ratio(blocks, ceilings.flops, ceilings.bandwidth, kind)
          for kind in ("mlp", "attention")}
for kind, (measured, predicted) in ratios.items():
    print(f"{kind:>9}: prefill / decode (B = 1) FLOP/s = {measured:,.0f}x here; the roofline with the "
          f"measured ceilings predicts {predicted:,.0f}x")
for ref in matmul_refs:
    name, c = ref.get("spec") or ref["device_type"], ref["ceilings"]
    for kind in ("mlp", "attention"):
        measured, predicted = roofline.prefill_decode_ratio(ref["mlp_attention"]["records"], c["flops"],
                                                            c["bandwidth"], kind)
        print(f"{kind:>9}: prefill / decode (B = 1) FLOP/s = {measured:,.0f}x on the reference {name} "
              f"(predicted {predicted:,.0f}x)")

mlp_measured, mlp_predicted = ratios["mlp"]
assert mlp_predicted / 2 < mlp_measured < 2 * mlp_predicted, ratios["mlp"]
assert ratios["attention"][0] > ratios["attention"][1] / 2, ratios["attention"]
decode_Bs = sorted({r["B"] for r in roofline.ok_records(blocks, "mlp", "decode")})
gain = roofline.best_flops(blocks, "mlp", "decode", decode_Bs[-1]) / roofline.best_flops(blocks, "mlp", "decode", 1)
print(f"MLP decode FLOP/s, B = {decode_Bs[-1]} over B = 1: {gain:.1f}x")
# intensity grows B-fold; a CPU's small-B kernels gain less than that (section 3), a GPU's nearly all
assert gain > env.size(cpu=3, gpu=decode_Bs[-1] / 4), "batching should raise MLP decode FLOP/s"
attention_decode = roofline.ok_records(blocks, "attention", "decode")
assert all(r["flops_per_s"] < env.size(cpu=2.0, gpu=1.5) * r["intensity"] * ceilings.bandwidth
           for r in attention_decode), "attention decode should stay under the bandwidth line at any B"

# %% [markdown]
# **Takeaway:** the same weights and kernels run about ridge-times slower (in FLOP/s) in decode
# than in prefill: hundreds of times on a GPU, whose ridge is a few hundred FLOP/byte (the H100
# reference above), tens of times or fewer on a CPU (the ratios are printed above). Only batching
# more sequences lifts the MLP; nothing in this picture lifts attention.

# %% [markdown]
# ## 5. Move the ridge: another GPU, another number format
#
# The ridge is a property of the hardware *and* the number format. Pick a GPU from
# `data/hardware.json` and a format it supports; the plot redraws from the datasheet figures
# (no measurement), with the lecture's H100 in bf16 for comparison, your device's measured
# ceilings, and where typical workloads land. A matmul whose inputs take b bytes a number has
# intensity ≈ 2B/b, so it turns compute-bound at B ≈ ridge·b/2.

# %%
SPECS = hardware.load_specs()
BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5}


def dtypes_of(gpu):
    return [d for d in BYTES if SPECS[gpu].flops.get(d)]


def draw_ridge(gpu="H100 SXM", dtype="bf16"):
    spec = SPECS[gpu]
    if not spec.flops.get(dtype):
        print(f"{gpu} has no {dtype} figure (formats it has: {dtypes_of(gpu)})")
        return
    peak, bw, b = spec.flops_for(dtype), spec.memory_bandwidth, BYTES[dtype]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x_range = (0.1, 1e4)
    roofline.plot_roofline(ax, h100.flops_for("bf16"), h100.memory_bandwidth, "H100, bf16 (lecture)", COLORS["theory"], "-", x_range, lw=1)
    roofline.plot_roofline(ax, peak, bw, f"{gpu}, {dtype}", COLORS["roofline"], "-", x_range, lw=2.5)
    roofline.plot_roofline(ax, ceilings.flops, ceilings.bandwidth, "this device, measured", COLORS["measured"], "--", x_range, lw=1)
    ax.axvline(peak / bw, color=COLORS["roofline"], ls=":", lw=1)
    workloads = {  # Llama 2 13B shapes, inputs of b bytes a number
        "decode attention": analysis.attention_intensity(4096, 1, b),
        "decode MLP, B=1": analysis.mlp_intensity(1, 1, D13, F13, b),
        "decode MLP, B=64": analysis.mlp_intensity(64, 1, D13, F13, b),
        "prefill attention, S=4096": analysis.attention_intensity(4096, 4096, b),
        "prefill MLP, 4096 tokens": analysis.mlp_intensity(1, 4096, D13, F13, b),
    }
    # markers named in the legend, not text on the axes: several workloads share an intensity
    for (name, x), marker in zip(workloads.items(), ["v", "^", "D", "s", "P"]):
        y = analysis.roofline(x, peak, bw)
        ax.plot([x], [y], marker, color="black", mfc="none", ms=9, mew=1.5, ls="none",
                label=f"{name}: {x:,.1f} FLOP/byte")
    ax.set(xlabel="arithmetic intensity (FLOP/byte)", ylabel="attainable FLOP/s",
           title=f"{gpu}, {dtype}: ridge {peak / bw:,.0f} FLOP/byte")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1))
    plt.show()
    print(f"{gpu}, {dtype}: {peak / 1e12:,.1f} TFLOP/s / {bw / 1e12:.2f} TB/s = ridge {peak / bw:,.1f} FLOP/byte; "
          f"with {b:g}-byte inputs a matmul is compute-bound for B > {peak / bw * b / 2:,.0f}")


draw_ridge("H100 SXM", "bf16")

# %%
# NBVAL_IGNORE_OUTPUT
import ipywidgets

# one menu of the (GPU, format) pairs the datasheets list, so that every choice has a figure
pairs = [(f"{gpu}, {dtype}", (gpu, dtype)) for gpu in SPECS for dtype in dtypes_of(gpu)]
choice = ipywidgets.Dropdown(options=pairs, value=("H100 SXM", "bf16"), description="GPU, format")
_ = widgets.interact(lambda gpu_and_format: draw_ridge(*gpu_and_format), gpu_and_format=choice)

# %% [markdown]
# Things to try: the T4 has no bf16 (fp16 only); the L4's low bandwidth (300 GB/s) puts its
# ridge above 400; the H200 has the H100's FLOP/s but more bandwidth, so its ridge is lower; fp8
# doubles the ridge in FLOP/byte but also halves the bytes, so the critical batch stays near 295.
#
# **Takeaway:** the batch at which decode turns compute-bound is set by the chip's FLOP/s per
# byte of bandwidth: more bandwidth (H200) lowers it; a smaller number format raises the ridge
# in FLOP/byte and the matmul's intensity alike, so the batch barely moves.

# %% [markdown]
# ## Summary
# - A matmul X[B×D] @ W[D×F] does 2BDF FLOPs on 2(BD + DF + BF) bytes: intensity ≈ B when B ≪ D, F.
# - The accelerator's intensity is peak FLOP/s ÷ bandwidth: 989e12 / 3.35e12 ≈ 295 for the H100.
# - Measured on a GPU, FLOP/s grows linearly with B below the ridge (time flat: reading W is the
#   cost) and is flat above it, and the ridge read off the data sits near the ratio of the
#   measured ceilings, itself near the datasheet's (all asserted on a GPU). On a CPU the two
#   regimes are there, but its small-B kernels sit below the roofline, so time grows with B.
# - Prefill has intensity B·T (MLP) and S/2 (attention): compute-bound. Decode has B (MLP) and
#   S/(S+1) < 1 (attention): memory-bound, about ridge-times slower per FLOP than prefill (the
#   roofline's prediction, checked). Batching lifts the MLP, never attention.

# %% [markdown]
# ## Exercises
# 1. On a CPU: rerun section 3 with all cores (`torch.set_num_threads(os.cpu_count())`). Which
#    ceiling moves more, and where does the ridge go? Run it again while something else keeps the
#    machine busy. On a GPU: rerun the sweep in fp32 (`roofline.matmul_sweep(env.device, "fp32")`).
#    Where does the ridge move, and why? (Compare the spec's `fp32` and `tf32` figures.)
# 2. Use `analysis.matmul_intensity(B, D, F, bytes_per_value=1)` for int8 weights and activations.
#    At which B does an H100 matmul turn compute-bound in int8? With int8 weights but bf16
#    activations (bytes: 2BD + DF + 2BF)?
# 3. Measure attention decode at B = 1 and B = 64 with a longer S (`mlp_attention_measurements(...,
#    S=...)`). Does the achieved FLOP/s change with B? Does its intensity?
# 4. Run `roofline.matmul_sweep(env.device, env.dtype, D=1024, F=1024, cache_factor=0)`: one small
#    copy of W, which now stays in the cache between calls. What happens to the bandwidth line and
#    the ridge? Which number would you report as "the" bandwidth?
