# %% [markdown]
# # 04 · Naive vs KV-cached decoding
#
# *Follows CS336 Lecture 10, "Arithmetic intensity of inference": naive inference, the KV cache,
# prefill and generation.*
#
# A decoder produces one token at a time. The **naive** way feeds the whole sequence so far to
# the model at every step, so step *i* repeats all the work of step *i − 1*: generating T tokens
# costs O(T³) FLOPs in attention (O(T²) in the MLPs). The **KV cache** stores every token's keys
# and values, so each step processes one new token: O(T²) in attention, O(T) in the MLPs.
#
# In this notebook you will
# 1. check that both ways produce **identical** greedy tokens,
# 2. measure the total time against T next to the FLOP counts where the MLPs dominate,
# 3. see why the first naive steps can cost no more than cached ones,
# 4. find the attention-dominated regime where the lecture's T³ and T² appear,
# 5. compare the KV-cache size from the lecture's formula with the bytes actually allocated,
# 6. see prefill and decode as two regimes against the device's compute ceiling.
#
# *On a projector:* set `LECTURE_PRESENTATION=1` before starting Jupyter, or call
# `setup(presentation=True)` in the first code cell, for larger fonts in every figure.

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from lecture_lib import Transformer, analysis, get_config
from lecture_lib.axes import label_log_axis
from lecture_lib.cache import KVCache
from lecture_lib.config import ModelConfig
from lecture_lib.decode import generate_cached, generate_naive
from lecture_lib.measure import ceilings, latency, opcount
from lecture_lib.measure.bench import build_model
from lecture_lib.measure.timing import decode_step_seconds, forward_seconds
from lecture_lib.notebook import setup
from lecture_lib.plotting import COLORS, human_bytes, loglog_slope, plot_loglog_fit

env = setup(seed=0)
if env.device.type == "cpu":
    torch.set_num_threads(1)  # one core: timings stay stable when the machine is shared (CI runs notebooks in parallel)

# %% [markdown]
# ## A model to decode with
#
# Random weights are enough here: speed does not depend on what the weights say. On a CPU we use
# the library's `small` preset in fp32; on a GPU a larger `medium` preset in bf16, since a tiny
# model on a GPU is bound by kernel-launch overhead, which hides the effect we want to see.

# %%
# NBVAL_IGNORE_OUTPUT
cfg = get_config(env.size(cpu="small", gpu="medium"))
model = build_model(cfg, env.device, env.dtype)
P = 8  # prompt length
T_max = env.size(cpu=256, gpu=512)  # tokens to generate
B = env.size(cpu=1, gpu=64)  # sequences decoded together (why 64 on a GPU: see section 2)
prompt = torch.randint(0, cfg.V, (B, P), device=env.device)
print(f"{cfg.name}: L={cfg.L} D={cfg.D} N={cfg.N} K={cfg.K} H={cfg.H} F={cfg.F} V={cfg.V}, "
      f"{model.num_params() / 1e6:.1f}M parameters; B={B}, prompt {P} tokens, generating {T_max}")

# %% [markdown]
# ## 1. Same tokens, either way
#
# The cache is an optimisation, not an approximation: greedy decoding must give exactly the same
# tokens. (On a GPU in bf16, two different kernels for the same function can round differently,
# and a near-tie between two logits could then pick another token: compared here in fp32 on the
# same device.)

# %%
check_model = build_model(cfg, env.device, torch.float32)
check_prompt = torch.randint(0, cfg.V, (2, P), device=env.device)
naive_tokens = generate_naive(check_model, check_prompt, 48).tokens
cached_tokens = generate_cached(check_model, check_prompt, 48).tokens
assert torch.equal(naive_tokens, cached_tokens), "cached decoding changed the tokens"
print(f"identical greedy tokens for B=2, 48 new tokens: {torch.equal(naive_tokens, cached_tokens)}")
del check_model

# %% [markdown]
# **Takeaway:** the KV cache changes the cost, not the result.
#
# ## 2. Time per step and total time
#
# We time every step with the library's per-token timestamps: a token's time is when it is on the
# host, ready to be streamed. The total time to generate the first T tokens is the timestamp of
# token T, so one long run gives the whole curve. The cached way runs three times and the naive way
# (slow on a CPU) once or twice; we keep the fastest time of each step, the least disturbed by the
# rest of the machine. These are whole eager generations, as `generate_naive` and
# `generate_cached` run them.
#
# On a GPU we decode B = 64 sequences at once. An eager decode step of this model launches a few
# hundred small kernels, each costing microseconds of host time whatever its size; at B = 1 that
# fixed cost per step would hide the extra work of the naive way until very long sequences. A
# batch multiplies the naive way's FLOPs by B while the cached step stays launch-bound.

# %%
# NBVAL_IGNORE_OUTPUT
def step_times(fn, runs, warm_up):
    fn(model, prompt, warm_up)  # warm-up: first-call allocations and kernel selection
    gaps = [np.diff([0.0] + fn(model, prompt, T_max).token_times) for _ in range(runs)]
    return np.min(gaps, axis=0)  # [T_max] seconds per step, step 0 includes the prefill


# On a GPU the naive warm-up runs the whole length: every step has a new shape, and a first run
# spends much of its time in the memory allocator and kernel selection for each of them
naive_steps = step_times(generate_naive, runs=1, warm_up=env.size(cpu=16, gpu=T_max))
cached_steps = step_times(generate_cached, runs=env.size(cpu=3, gpu=2), warm_up=16)
T = np.arange(1, T_max + 1)
naive_total, cached_total = np.cumsum(naive_steps), np.cumsum(cached_steps)
print(f"generating {T_max} tokens: naive {naive_total[-1]:.2f} s, cached {cached_total[-1]:.2f} s "
      f"({naive_total[-1] / cached_total[-1]:.1f}x faster with the cache)")
print(f"median step: naive {np.median(naive_steps[1:]) * 1e3:.2f} ms, cached {np.median(cached_steps[1:]) * 1e3:.2f} ms")

# %% [markdown]
# The FLOPs of the same runs, counted by the library from the model's shapes (every matmul, the LM
# head, and attention over the keys each query sees). The right panel puts time and FLOPs on one
# axis, each relative to its value at the first T shown, so that their slopes compare directly.

# %%
# NBVAL_IGNORE_OUTPUT
Ts = np.unique(np.geomspace(32, T_max, 10).astype(int))  # past the first steps, where the prompt dominates
flops_naive = np.array([analysis.generation_flops_naive(cfg, P, int(t), B=B) for t in Ts], float)
flops_cached = np.array([analysis.generation_flops_cached(cfg, P, int(t), B=B) for t in Ts], float)
attention_share = analysis.generation_flops_naive(cfg, P, T_max, B=B, part="attention") / flops_naive[-1]

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
ax1.plot(T[1:], naive_steps[1:] * 1e3, ".", ms=3, color=COLORS["naive"], label="naive: whole prefix every step")
ax1.plot(T[1:], cached_steps[1:] * 1e3, ".", ms=3, color=COLORS["cached"], label="KV cache: one token per step")
ax1.set(xscale="log", yscale="log", xlabel="generated token index", ylabel="time for this step (ms)",
        title="Time per decode step vs position")
ax1.legend(loc="upper left")

rel = lambda y: np.asarray(y) / np.asarray(y)[0]  # noqa: E731 - relative to the first T shown
slope_naive = plot_loglog_fit(ax2, Ts, rel(naive_total[Ts - 1]), "naive, time", COLORS["naive"])
slope_cached = plot_loglog_fit(ax2, Ts, rel(cached_total[Ts - 1]), "cached, time", COLORS["cached"])
fslope_naive = plot_loglog_fit(ax2, Ts, rel(flops_naive), "naive, FLOPs", COLORS["theory"], marker="s")
fslope_cached = plot_loglog_fit(ax2, Ts, rel(flops_cached), "cached, FLOPs", COLORS["theory"], marker="^")
ax2.set(xlabel="tokens generated T", ylabel=f"total, relative to T = {Ts[0]}",
        title="Total time and FLOPs vs T (log-log, fitted slopes)")
ax2.legend(loc="upper left")
for axis in (ax1.xaxis, ax1.yaxis, ax2.xaxis):
    label_log_axis(axis)
plt.show()
print(f"fitted slopes, time:  naive {slope_naive:.2f}, cached {slope_cached:.2f}")
print(f"fitted slopes, FLOPs: naive {fslope_naive:.2f}, cached {fslope_cached:.2f}")
print(f"attention's share of the naive FLOPs at T = {T_max}: {attention_share:.0%} "
      f"(S* = {analysis.attention_linear_crossover(cfg):,.0f} keys for this model: section 4)")

# %% [markdown]
# Reading the plot:
# - The **FLOP counts** grow with slope about 2 (naive) and 1 (cached) over this range: the MLP's
#   2·params FLOPs per token dominate (attention's share is printed), and the attention terms
#   that make the asymptotes T³ and T² only win at lengths comparable to several times the model
#   width (section 4).
# - The **measured times** follow when each step has enough work to keep the device busy. On a
#   CPU the naive step is cheap for a short prefix and its cost per token falls as the prefix
#   grows (bigger matmuls run more efficiently), so its time slope sits below the FLOP slope. On a
#   GPU in eager mode a step is limited by kernel launches: the cached step is flat, and the naive
#   step stays near that floor until its prefix is long enough to fill the GPU, so the naive
#   slope sits further below the FLOP slope. Either way the difference is overhead, not a wrong
#   formula: the check below asks that naive time grows faster than cached time and is at least
#   twice as long at the end.

# %%
# The regime the text names: MLP-dominated FLOPs, slopes near 2 (naive) and 1 (cached)
assert attention_share < 0.5, "this range should be MLP-dominated"
assert abs(fslope_naive - 2) < 0.25 and abs(fslope_cached - 1) < 0.1, "FLOP slopes: ~T^2 naive, ~T cached here"
assert slope_naive > slope_cached + 0.15, "naive decoding should scale worse than cached"
assert naive_total[-1] > 2 * cached_total[-1], "the cache should win clearly at the longest length"

# %% [markdown]
# **Takeaway:** where the MLPs dominate, the cache turns a T² total into a T total; the measured
# times show it as soon as the steps have real work, and overheads flatten the naive curve.
#
# ## 3. The first steps: operators, not FLOPs
#
# At the first steps the naive way recomputes only a handful of tokens, so its extra FLOPs are
# small, and its step skips the cache's bookkeeping: writing each layer's new K and V into the
# cache and reading the filled prefix back. `opcount.count_ops` counts the PyTorch operators each
# step dispatches; every one costs host time, and on a GPU every one that computes is a kernel
# launch.

# %%
# NBVAL_IGNORE_OUTPUT
with torch.inference_mode():
    cache = KVCache.for_model(model, B, P + 1)
    model(prompt, cache, 0)  # the prefill fills positions 0 .. P-1
    new = prompt[:, -1:]
    ops_cached = opcount.count_ops(model, new, cache, P)  # one token at position P
    ops_naive = opcount.count_ops(lambda: model(torch.cat([prompt, new], dim=1)))  # the whole prefix, P + 1 tokens
    del cache
extra = ops_cached - ops_naive
print(f"operators per step: cached {sum(ops_cached.values())} ({opcount.kernel_ops(ops_cached)} compute), "
      f"naive {sum(ops_naive.values())} ({opcount.kernel_ops(ops_naive)} compute)")
print(f"only in the cached step: {dict(extra)}")
first = slice(1, 9)  # steps 1..8, after the prefill
t_naive, t_cached = np.mean(naive_steps[first]), np.mean(cached_steps[first])
print(f"steps 1-8, mean time: naive {t_naive * 1e3:.2f} ms, cached {t_cached * 1e3:.2f} ms "
      f"(naive / cached {t_naive / t_cached:.2f}); the naive step at position {P + 8} processes "
      f"{(P + 8) * B} tokens, the cached one {B}")

# %%
assert sum(ops_cached.values()) > sum(ops_naive.values()), "the cached step should dispatch more operators"
assert extra["aten.copy_"] >= 2 * cfg.L, "the extra operators should include the K and V cache writes"
if env.on_gpu:
    # eager on a GPU a short step costs its kernel launches, not its FLOPs: fewer operators, faster step
    assert t_naive < t_cached, "launch-bound first steps: the naive step, with fewer operators, should be faster"
else:
    print("check skipped on CPU: which first step is faster (a CPU computes synchronously, so the naive "
          "step's extra tokens count; which effect wins depends on the CPU)")

# %% [markdown]
# On a GPU in eager mode the host issues kernels while the GPU runs them: a short step's GPU work
# hides under its launches, so the step costs its operators, and the cached one has more (the
# cache writes and reads printed above). Its first steps are then slower than the naive ones,
# until the naive prefix grows. On a CPU the same cores dispatch and compute, so the naive step's
# extra tokens cost time at once; which effect wins at the first steps depends on the CPU.
#
# **Takeaway:** a step's cost is FLOPs, bytes *and* operators; at tiny sizes the operators win,
# which is why fast decoders fuse kernels and replay CUDA graphs (notebook 07).

# %% [markdown]
# ## 4. Where the cube appears: the attention-dominated regime
#
# Per decoded token, the linear layers cost 2·linear_params FLOPs whatever the position, and
# attention 4·L·N·H·S for S keys. They are equal at S* = linear_params / (2·L·N·H)
# (`analysis.attention_linear_crossover`), about 6·D for a Llama shape. Below S* generation is
# MLP-dominated (section 2); well above it attention dominates, and the FLOPs of T tokens grow as
# T³ naive and T² cached. The local slope of the library's FLOP counts, for this model and two
# real ones:

# %%
# NBVAL_IGNORE_OUTPUT
shapes = {cfg.name: cfg, "llama2-7b": get_config("llama2-7b"), "llama3-8b": get_config("llama3-8b")}
fig, ax = plt.subplots()
local = {}
for (name, c), style in zip(shapes.items(), ["-", "--", ":"]):
    S_star = analysis.attention_linear_crossover(c)
    x = np.geomspace(S_star / 100, S_star * 100, 41)  # T from S*/100 to 100 S*
    Tx = np.unique(x.astype(int))
    ln_T = np.log(Tx)
    for how, fn, color in [("naive", analysis.generation_flops_naive, COLORS["naive"]),
                           ("cached", analysis.generation_flops_cached, COLORS["cached"])]:
        slope = np.gradient(np.log([float(fn(c, 1, int(t))) for t in Tx]), ln_T)  # d log FLOPs / d log T
        local[name, how] = (Tx / S_star, slope)
        ax.semilogx(Tx / S_star, slope, style, color=color, label=f"{how}, {name}")
    print(f"{name:>11}: S* = {S_star:>7,.0f} keys (D = {c.D})")
ax.axvline(1, color=COLORS["theory"], lw=0.8)
ax.set(xlabel="tokens generated T / S*", ylabel="local slope d log FLOPs / d log T",
       title="Total FLOPs of generation: from T² to T³ (naive), T to T² (cached)", yticks=[1, 1.5, 2, 2.5, 3])
ax.legend(loc="upper left", ncols=2)
plt.show()

# %%
for name in shapes:  # the regimes, from the library's FLOP counts: well below S* and well above
    (r, naive), (_, cached) = local[name, "naive"], local[name, "cached"]
    assert naive[0] < 2.1 and cached[0] < 1.1, f"{name}: MLP-dominated below S*: slopes ~2 and ~1"
    assert naive[-1] > 2.9 and cached[-1] > 1.9, f"{name}: attention-dominated above S*: slopes ~3 and ~2"

# %% [markdown]
# Now measured. A naive run into that regime would take minutes, so we time single steps at a few
# positions and sum them: the naive step at prefix n is a forward over n tokens
# (`timing.forward_seconds`), the cached step at position n reads n keys from the cache
# (`timing.decode_step_seconds`); `latency.summed_steps` adds up the step times of every
# position, interpolated between the measured ones. On a GPU both run as CUDA-graph replays, so
# kernel launches do not count; on a CPU eager. The model is narrow (small D, so a small S*),
# with a small MLP and vocabulary (small S*), and the same B for both ways.

# %%
# NBVAL_IGNORE_OUTPUT
if env.on_gpu:
    # one long sequence: a naive step's n-linear work (below) needs n in the hundreds of thousands
    # before the n² attention outweighs it
    cfg_att = ModelConfig(L=4, D=256, N=4, K=4, H=64, F=128, V=64, S_max=262144 + 1, name="narrow")
    B_att, n_max = 1, 262144
else:
    cfg_att = ModelConfig(L=2, D=64, N=4, K=4, H=16, F=32, V=64, S_max=4096 + 1, name="narrow")
    B_att, n_max = 1, 4096
model_att = build_model(cfg_att, env.device, env.dtype)
S_star = analysis.attention_linear_crossover(cfg_att)
positions = np.geomspace(n_max / 64, n_max, 7).astype(int)  # prefix lengths / keys attended
naive_step = np.array([forward_seconds(model_att, B_att, int(n), repeats=env.size(cpu=5, gpu=3), calls=env.size(cpu=2, gpu=1))
                       for n in tqdm(positions, desc="naive steps")])
cached_step = np.array([decode_step_seconds(model_att, B_att, int(n), repeats=10)
                        for n in tqdm(positions, desc="cached steps")])
del model_att
first = int(positions[0])  # a prompt of this many tokens, then T new ones
T_att = np.unique(np.geomspace((n_max - first) / 8, n_max - first, 6).astype(int))
total_naive = latency.summed_steps(positions, naive_step, first, T_att)
total_cached = latency.summed_steps(positions, cached_step, first, T_att)
f_naive = np.array([analysis.generation_flops_naive(cfg_att, first, int(t), B=B_att) for t in T_att], float)
f_cached = np.array([analysis.generation_flops_cached(cfg_att, first, int(t), B=B_att) for t in T_att], float)
print(f"{cfg_att.name}: L={cfg_att.L} D={cfg_att.D} N={cfg_att.N} K={cfg_att.K} H={cfg_att.H} F={cfg_att.F} "
      f"V={cfg_att.V}, B={B_att}; S* = {S_star:,.0f}; steps measured at n = {[int(n) for n in positions]}")
for n, a, b in zip(positions, naive_step, cached_step):
    print(f"n={n:>6}: naive step {a * 1e3:9.3f} ms   cached step {b * 1e3:7.3f} ms")

fig, ax = plt.subplots()
s_naive = plot_loglog_fit(ax, T_att, rel(total_naive), "naive, summed steps", COLORS["naive"])
s_cached = plot_loglog_fit(ax, T_att, rel(total_cached), "cached, summed steps", COLORS["cached"])
fs_naive = plot_loglog_fit(ax, T_att, rel(f_naive), "naive, FLOPs", COLORS["theory"], marker="s")
fs_cached = plot_loglog_fit(ax, T_att, rel(f_cached), "cached, FLOPs", COLORS["theory"], marker="^")
ax.set(xlabel=f"tokens generated T (after a {first}-token prompt)", ylabel=f"total, relative to T = {T_att[0]}",
       title=f"Attention-dominated: {cfg_att.name} model, T up to {T_att[-1] / S_star:.0f} S*")
label_log_axis(ax.xaxis)
ax.legend(loc="upper left")
plt.show()
print(f"fitted slopes, time:  naive {s_naive:.2f}, cached {s_cached:.2f}")
print(f"fitted slopes, FLOPs: naive {fs_naive:.2f}, cached {fs_cached:.2f}")

# the naive step's time as fixed + linear + quadratic in its prefix n, t(n) ≈ c + a·n + b·n²,
# each measured step weighted by its own size (a relative fit: short and long steps count alike)
n_f = positions.astype(float)
(c_fit, a_fit, b_fit), *_ = np.linalg.lstsq(np.stack([n_f ** 0, n_f, n_f ** 2], 1) / naive_step[:, None],
                                            np.ones(len(n_f)), rcond=None)
n_cross = a_fit / b_fit  # where the n² term (attention) overtakes the n-linear one, in time
print(f"naive step fitted as {c_fit:.3g} s + {a_fit:.3g} s·n + {b_fit:.3g} s·n²: "
      f"in time, the n² term overtakes the linear one at n ≈ {n_cross:,.0f}; in FLOPs at S* = {S_star:,.0f}")

# %%
assert fs_naive > 2.5 and fs_cached > 1.6, "this range should be attention-dominated in FLOPs"
# faster than T^2 (the MLP regime's slope) on every device, towards T^3
assert s_naive > env.size(cpu=2.0, gpu=2.3), "measured naive total should grow faster than T^2 here, towards T^3"
# at least half a power of T apart (the FLOPs are a whole power apart; the cached step's fixed
# cost holds its measured slope below its FLOP slope)
assert s_naive > s_cached + 0.5, "naive total should grow much faster than cached"
# the linear work costs more time per FLOP than attention does, so time's crossover comes later
assert n_cross > S_star, "the measured crossover should lie beyond the FLOP crossover S*"

# %% [markdown]
# The naive total now grows with a slope well above the MLP regime's 2, towards 3: each naive step
# is a forward over the whole prefix whose attention costs n², and summing n² over T steps gives
# T³. Its measured slope stays below the FLOP slope, and the fit above says why: a step's time
# has an n-linear part far larger than its linear FLOPs suggest. The FLOP count is matmuls only;
# the step also streams every token's activations through memory many times (norms, rotary
# embedding, residual adds, casts between kernels), work that grows with n, runs at the memory
# bandwidth, and does no counted FLOPs. So in time the n² term wins only at the printed n, well
# beyond S*, and the slope approaches 3 more slowly than the FLOPs do. The cached total's FLOP
# slope approaches 2, but its measured slope stays lower: a cached step's attention is a read of
# the KV cache (B·n·2·L·K·H numbers), small here next to the step's fixed cost (its weights and
# a few hundred small kernels), so the measured curve only bends up towards T² where that read
# dominates (a CPU's step, eager, has the largest fixed cost).
#
# **Takeaway:** T³ versus T² is the asymptote; it appears once T is several times S* ≈ 6·D,
# which for real models (S* printed above) means tens of thousands of tokens.

# %% [markdown]
# ## 5. How big is the KV cache?
#
# The lecture: for every sequence (B), token (S), layer (L) and KV head (K) the cache stores an
# H-dimensional key and an H-dimensional value, so
#
# $$\text{KV bytes} = B \cdot S \cdot L \cdot K \cdot H \cdot 2 \,(\text{K and V}) \cdot \text{bytes per value}.$$
#
# The library's cache allocates exactly that, once, at the maximum length:

# %%
# NBVAL_IGNORE_OUTPUT
for B_kv, S_kv in [(1, 256), (4, 1024), (16, cfg.S_max)]:  # B itself stays the decode batch
    cache = KVCache.for_model(model, B_kv, S_kv)
    formula = analysis.kv_cache_bytes(cfg, B_kv, S_kv, bytes_per_value=cache.k.element_size())
    assert cache.nbytes == formula
    print(f"B={B_kv:>2} S={S_kv:>5}: formula {human_bytes(formula):>10}, allocated {human_bytes(cache.nbytes):>10}")
    del cache

# %% [markdown]
# The same formula for the real models (bf16, one sequence at each model's full context):

# %%
# NBVAL_CHECK_OUTPUT
for name in ["llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "mistral-7b"]:
    c = get_config(name)
    per_token = analysis.kv_bytes_per_token(c)
    print(f"{name:>11}: {per_token:>9,.0f} B/token; {c.S_max:>5} tokens -> "
          f"{analysis.kv_cache_bytes(c, 1, c.S_max) / 2**30:.2f} GiB per sequence "
          f"(weights {analysis.num_params(c) * 2 / 1e9:.1f} GB)")

# %% [markdown]
# Llama 2 13B (K = N = 40, no GQA) keeps 800 KiB per token: a 4096-token conversation holds
# 3.1 GiB, and about eight of them weigh as much as the model itself. That is why batch size, and
# with it throughput, is limited by the KV cache (notebook 05).
#
# **Takeaway:** the cache trades memory for FLOPs, and at long contexts the memory rivals the
# weights.

# %% [markdown]
# ## 6. Prefill and decode are two regimes
#
# **Prefill** runs the whole prompt through the model at once: T tokens share every weight read,
# so the matmuls have arithmetic intensity about B·T and the work is parallel. **Decode** processes
# one token per step: intensity about B. Below we time a prefill of P tokens (one sequence,
# `timing.forward_seconds`) and a decode step of B sequences (`timing.decode_step_seconds`),
# both as CUDA-graph replays on a GPU and eager on a CPU, against the compute ceiling: a forward
# that ran at the matmul peak would process peak FLOP/s ÷ FLOPs per token tokens a second.

# %%
# NBVAL_IGNORE_OUTPUT
how = "CUDA graph" if env.on_gpu else "eager"
peak_measured = ceilings.measure_matmul_flops(env.device, env.dtype, seconds=0.5)
peak_datasheet = env.info.spec.flops_for(env.dtype) if env.info.spec else None  # lecture_lib.hardware
prompt_lengths = [int(p) for p in np.unique(np.geomspace(8, env.size(cpu=512, gpu=4096), 7).astype(int))]
prefill_tps = np.array([p / forward_seconds(model, 1, p, repeats=env.size(cpu=3, gpu=10), calls=2)
                        for p in tqdm(prompt_lengths, desc="prefill")])
flops_per_token = np.array([analysis.forward_flops(cfg, p) / p for p in prompt_lengths], float)
ceiling_measured = peak_measured / flops_per_token  # tokens/s at the measured matmul peak
decode_tps = B / decode_step_seconds(model, B, P + T_max // 2)  # B tokens per step, mid-generation

fig, ax = plt.subplots()
ax.loglog(prompt_lengths, prefill_tps, "o-", color=COLORS["measured"], label=f"prefill, one sequence ({how})")
ax.loglog(prompt_lengths, ceiling_measured, "--", color=COLORS["theory"],
          label=f"compute-bound: measured matmul peak ({peak_measured / 1e12:,.3g} TFLOP/s)")
if peak_datasheet:
    ax.loglog(prompt_lengths, peak_datasheet / flops_per_token, ":", color=COLORS["roofline"],
              label=f"compute-bound: datasheet ({peak_datasheet / 1e12:,.0f} TFLOP/s)")
ax.axhline(decode_tps, color=COLORS["cached"], ls="-.", label=f"decode step, B={B} ({how})")
ax.set(xlabel="prompt length P", ylabel="tokens per second", title="Prefill is parallel, decode is sequential")
label_log_axis(ax.xaxis)
ax.legend(loc="best")
plt.show()
for p, tps, c in zip(prompt_lengths, prefill_tps, ceiling_measured):
    print(f"prefill P={p:>5}: {tps:>12,.0f} tokens/s = {tps / c:4.0%} of the compute ceiling  "
          f"(MLP intensity B·T = {analysis.mlp_intensity(1, p, cfg.D, cfg.F):7.1f})")
print(f"decode, B={B}, one token/step each: {decode_tps:>8,.0f} tokens/s  "
      f"(MLP intensity ~B = {analysis.mlp_intensity(B, 1, cfg.D, cfg.F):.2f})")

# %%
assert prefill_tps.max() > 3 * decode_tps, "prefill should process tokens much faster than decode"
# no forward outruns the compute ceiling (10% slack: the measured peak is itself a measurement)
assert np.all(prefill_tps < 1.1 * ceiling_measured), "prefill faster than the matmul peak allows?"
assert prefill_tps[-1] > 2 * prefill_tps[0], "longer prompts should use the device better"
if env.on_gpu:
    # on the graph path a long prefill is big matmuls: a real share of the compute ceiling
    assert prefill_tps[-1] > 0.2 * ceiling_measured[-1], "long prefill should approach the compute ceiling"
    assert np.all(prefill_tps < peak_datasheet / flops_per_token), "prefill faster than the datasheet peak?"
else:
    print("check skipped on CPU: the share of the compute ceiling a long prefill reaches (a CPU's "
          "efficiency on these small matmuls varies between CPUs)")

# %% [markdown]
# Short prompts sit far below the compute ceiling: a prefill of a few tokens is a weight read plus
# fixed costs, like a decode step. As P grows the matmuls get tall enough to use the device, and
# the measured rate climbs towards the ceiling (its percentage is printed); what it does not reach
# is the price of real kernels (norms, softmax, the logits of every position). Decode stays
# where it is: one token per sequence per step, whatever the device could compute.
#
# **Takeaway:** TTFT is a prefill problem (compute-bound on long prompts), throughput a decode
# problem (memory-bound, fixed by batching).

# %% [markdown]
# ## Summary
# - The KV cache gives **identical** tokens and turns each step from "process the whole prefix"
#   into "process one token".
# - Where the MLPs dominate (T well below S* ≈ 6·D) the total cost drops from ~T² to ~T; where
#   attention dominates (T several times S*) from ~T³ to ~T², the lecture's asymptotes, shown
#   here with the library's FLOP counts and measured on a narrow model.
# - At tiny sizes a step costs its operators more than its FLOPs: the cached step's bookkeeping
#   can make its first steps slower than naive ones where the steps are launch-bound.
# - The cache costs memory: 2·B·S·L·K·H values, exactly what the library allocates. For real
#   models at long contexts it rivals the weights, which is what GQA, MLA and quantization attack.
# - Prefill is parallel (intensity B·T, approaching the compute ceiling on long prompts); decode
#   is sequential (intensity B, memory- or overhead-bound).

# %% [markdown]
# ## Exercises
# 1. Rerun section 2 with a longer prompt (P = 128). Which curve moves, and why?
# 2. With `analysis.attention_linear_crossover`, find S* for Llama 2 13B and Llama 3 70B. How long
#    must a generation be before naive decoding of them is attention-dominated?
# 3. Change the model to K = 1 (`cfg.replace(K=1)`): how much smaller is the cache? Does the time
#    per step change on your device?
