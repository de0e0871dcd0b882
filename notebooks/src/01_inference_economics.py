# %% [markdown]
# # 01 · Inference economics
#
# *Follows CS336 Lecture 10, "Landscape": why efficiency matters (Spring 2025 and 2026), and
# "Throughput and latency" for the cost model.*
#
# Training is a one-time cost; inference is paid again for every token anyone ever asks for. This
# notebook puts numbers on that, with every fact's source and date kept in `data/economics.json`:
#
# 1. the lecture's claim that OpenAI processes more tokens **in under four days** than DeepSeek-V4
#    was trained on, and how the answer changes when we count **FLOPs** (and GPU time) instead,
# 2. why **agents** change the picture: no human reading speed caps their demand,
# 3. what a million generated tokens **costs**, from a GPU's price per hour and the lecture's
#    memory-bound throughput model, and why it falls with batch size until the KV cache dominates,
# 4. an interactive **calculator**: model, GPU, batch, context, price → cost, speed, memory.
#
# Nothing here is measured: it is arithmetic on sourced facts and datasheet figures, so it runs in
# a second on any machine. Notebook 02 measures the speeds that this model predicts.
#
# *On a projector:* set `LECTURE_PRESENTATION=1` before starting Jupyter, or call
# `setup(presentation=True)` in the first code cell, for larger fonts in every figure.

# %%
# NBVAL_IGNORE_OUTPUT
import dataclasses

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np

from lecture_lib import analysis, economics, get_config, widgets
from lecture_lib.axes import label_log_axis
from lecture_lib.hardware import get_spec, load_specs
from lecture_lib.notebook import setup
from lecture_lib.plotting import COLORS

env = setup(seed=0)

# %% [markdown]
# ## The facts, with their sources
#
# Every number below is what its source says, not something we measured. The `note` says what
# each one counts: these are not all the same kind of token.

# %%
# NBVAL_CHECK_OUTPUT
facts = economics.load_facts()
for f in facts.values():
    print(f"{f.key:<30} {f.value:>9.3g} {f.unit:<28} {f.date:<10} {f.url}")
    print(f"{'':<30} {f.claim}.")

# %% [markdown]
# ## 1. "In under four days"
#
# The 2026 lecture: OpenAI processes about 8.6 trillion tokens a day; DeepSeek-V4 was trained on
# 32 trillion. Days for the first to catch up with the second:
#
# $$\text{days} = \frac{32 \times 10^{12}\ \text{training tokens}}{8.6 \times 10^{12}\ \text{tokens/day}}$$

# %%
# NBVAL_CHECK_OUTPUT
served_per_day = facts["openai_tokens_per_day"].value
train_tokens = facts["deepseek_v4_training_tokens"].value
days_tokens = economics.days_to_match(train_tokens, served_per_day)
print(f"{train_tokens:.3g} / {served_per_day:.3g} per day = {days_tokens:.2f} days")
print(f"in a year, OpenAI processes {365 / days_tokens:.0f}x the tokens of DeepSeek-V4's training set")
assert 3.5 < days_tokens < 4, "the lecture's 'under four days'"

# %% [markdown]
# ### The same comparison in FLOPs
#
# Tokens are not the unit of cost; FLOPs are closer. For a model with N parameters (the
# *activated* ones for a mixture of experts like DeepSeek-V4):
#
# - a **training** token costs about **6·N** FLOPs: the forward pass (2N: a multiply and an add per
#   weight) and the backward pass (about twice the forward);
# - an **inference** token costs about **2·N**: the forward pass only. This holds for prompt
#   tokens (prefill) and generated tokens alike, which matters because the 8.6T counts both.
#
# For the same N, inference needs three times as many tokens to spend what training spent:
#
# $$\text{days} = \frac{6N \cdot 32\text{T}}{2N \cdot 8.6\text{T/day}} = 3 \times 3.72$$

# %%
# NBVAL_CHECK_OUTPUT
days_flops = economics.days_to_match_flops(train_tokens, served_per_day)
n_active = facts["deepseek_v4_pro_active_params"].value
train_flops = economics.TRAINING_FLOPS_PER_PARAM * n_active * train_tokens
serve_flops_per_day = economics.INFERENCE_FLOPS_PER_PARAM * n_active * served_per_day
print(f"in FLOPs (same N): {days_flops:.2f} days = 3 x {days_tokens:.2f}")
print(f"e.g. N = {n_active:.3g} (DeepSeek-V4-Pro's activated parameters): training 6·N·32T = "
      f"{train_flops:.2e} FLOPs, serving 2·N·8.6T = {serve_flops_per_day:.2e} FLOPs/day")
print(f"in a year, serving spends {365 / days_flops:.0f}x the training run's FLOPs")
# the library's shortcut agrees with the FLOP counts printed above, and the answer is "under two weeks"
assert abs(days_flops - train_flops / serve_flops_per_day) < 1e-9 * days_flops
assert days_tokens < days_flops < 14, "in FLOPs, serving still overtakes training within two weeks"

# %% [markdown]
# So the answer moves from "under four days" to **about 11 days**: still under two weeks, and over
# a year serving still spends some thirty training runs' worth of compute. Two caveats push the
# number either way:
#
# - **Different models.** OpenAI's served models are not DeepSeek-V4; for different sizes the days
#   scale by N_train / N_serve (`days_to_match_flops(..., n_train=, n_serve=)`).
# - **Attention FLOPs** grow with the context (4·L·N·H per token per key, notebook 04) and are left
#   out of 2N and 6N alike; long agent contexts make inference relatively more expensive.

# %% [markdown]
# ### FLOPs are not GPU time
#
# Training runs at a high fraction of peak FLOP/s (we assume 40% MFU, a typical value). Prefill
# can too, but **decode is memory-bound**, so a GPU-hour of decoding buys far fewer FLOPs:
#
# $$\text{GPU-days} = \text{FLOP-days} \times \frac{\text{decode MFU}}{\text{training MFU}}.$$
#
# Neither the prompt/output split of the 8.6T nor the served models' decode MFU is published, so we
# can only bracket the answer. For scale, one decode MFU we *can* compute: a dense model, Llama 2
# 13B, at the largest batch that fits an H100 (B = 64, section 3), in the lecture's memory-bound model.

# %%
# NBVAL_CHECK_OUTPUT
train_mfu = 0.40  # an assumption: a typical model FLOP utilisation of a large training run
decode = economics.serving_estimate(get_config("llama2-13b"), "H100 SXM", B=64, S=1024)
days_gpu_decode = days_flops * decode.mfu / train_mfu
print(f"decode MFU of a dense model, Llama 2 13B, B=64, S=1024, H100 (memory-bound model): {decode.mfu:.1%}")
print("days of serving to match training in GPU-hours:")
print(f"  every token prefilled at {train_mfu:.0%} MFU (like training):        {days_flops:5.2f} days")
print(f"  every token decoded at {decode.mfu:.1%} MFU (the dense example): {days_gpu_decode:5.2f} days")
assert decode.mfu < 0.1, "a memory-bound decode step uses only a few percent of the peak FLOP/s"

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(7.5, 2.6))
labels = ["tokens", "FLOPs (same N)", "GPU time, all decode\n(dense 13B example)", "GPU time, all prefill"]
values = [days_tokens, days_flops, days_gpu_decode, days_flops]
ax.barh(labels, values, color=[COLORS["theory"], COLORS["cached"], COLORS["measured"], COLORS["reference"]])
for y, v in enumerate(values):
    ax.text(v + 0.1, y, f"{v:.1f} days", va="center")
ax.invert_yaxis()
ax.set(xlabel="days of OpenAI's traffic to match DeepSeek-V4's pre-training", xlim=(0, 1.25 * max(values)),
       title="The answer depends on the unit")
plt.show()

# %% [markdown]
# The bracket is wide. An MoE such as DeepSeek-V4 makes the decode end lower still: a batch reads
# the weights of every expert its tokens are routed to, but computes only with the 49B activated
# parameters per token, so at the same batch its decode MFU is lower than that of a dense model
# as large as its activated part (unless the batch is spread over many GPUs, expert parallelism,
# so that each expert sees many tokens).
#
# **Takeaway:** three units, three answers: 3.7 days in tokens, 11 in FLOPs, and in GPU time
# fewer than 11 (if prefill runs as efficiently as training), how many fewer depending on how much
# of the traffic is decode and at what MFU. In every unit, serving overtakes training within two weeks.

# %% [markdown]
# ## 2. Agents: no human at the end of the pipe
#
# A chatbot's output is read by a person, and people read slowly: about 238 words a minute
# (Brysbaert 2019), which at 0.75 words a token is a few tokens a second. The 8.6T tokens a day
# of section 1 cannot be turned into readers (it counts prompt tokens, which nobody reads, with
# the generated ones); the 2024 figure of words *generated* a day can:

# %%
# NBVAL_CHECK_OUTPUT
reading = economics.reading_tokens_per_second()
wpm, wpt = facts["reading_words_per_minute"].value, facts["words_per_token"].value
print(f"{wpm:g} words/min / 60 / {wpt:g} words/token = {reading:.2f} tokens/s per reader")
words_read_per_day = wpm * 60 * 8  # one person reading 8 hours a day
print(f"one person reading 8 hours a day: {words_read_per_day:,.0f} words = {reading * 8 * 3600:,.0f} tokens")
generated = facts["openai_words_per_day_2024"]
print(f"OpenAI's {generated.value:.3g} generated words a day ({generated.date}) = "
      f"{generated.value / words_read_per_day / 1e6:.2f} million people reading 8 hours a day")

# %% [markdown]
# Human demand is capped: a streamed answer only has to come faster than ~5 tokens/s, and a user
# reads at most about 150,000 tokens a day. An **agent** reads its own output: a loop of
# model call → tool call → model call consumes tokens as fast as the server produces them, and every
# turn re-reads the growing context (prompt, its own earlier reasoning, tool results). Without
# **prefix caching** (keeping the KV cache of the shared prefix between turns) the tokens processed
# grow quadratically with the number of turns:

# %%
# NBVAL_CHECK_OUTPUT
per_turn = 2_000  # tokens added to the context each turn: output plus tool results (an example)
print(f"{'turns':>6} {'context':>9} {'processed, prefix cache':>24} {'processed, no cache':>20}")
for turns in [1, 10, 50, 100]:
    print(f"{turns:>6} {turns * per_turn:>9,} "
          f"{economics.agent_tokens_processed(turns, per_turn, prefix_caching=True):>24,.0f} "
          f"{economics.agent_tokens_processed(turns, per_turn, prefix_caching=False):>20,.0f}")
agent_day = 100 * economics.SECONDS_PER_DAY
print(f"one agent decoding non-stop at 100 tokens/s: {agent_day:,} tokens/day "
      f"= {agent_day / (reading * 8 * 3600):.0f} people's daily reading")

# %% [markdown]
# **Takeaway:** chat traffic grows with the number of people; agent traffic grows with the number
# of loops anyone cares to run, and each loop's context grows as it goes. "Tokens generated =
# compute spent" (2026 lecture), so the cost per token, next, is what decides what is affordable.

# %% [markdown]
# ## 3. What does a million tokens cost?
#
# Renting a GPU costs dollars per hour; it makes tokens at some rate. So
#
# $$\$\text{ per million tokens} = \frac{\$/\text{hour}}{3600} \cdot \frac{10^6}{\text{tokens/s}}.$$
#
# For the rate we use the lecture's memory-bound model (§1.5): each decode step reads all the
# weights and all B sequences' KV caches at the GPU's memory bandwidth, and produces B tokens.
#
# $$\text{latency} = \frac{\text{param bytes} + B \cdot \text{KV bytes per sequence}}{\text{bandwidth}},\qquad
#   \text{throughput} = \frac{B}{\text{latency}}$$
#
# The lecture's example: Llama 2 13B, context S = 1024, on an H100 (3.35 TB/s, 80 GB), priced at
# the scaling book's Google Cloud figure of $10.8 per H100-hour (February 2025):

# %%
# NBVAL_CHECK_OUTPUT
llama2 = get_config("llama2-13b")
price = economics.gpu_price("H100 SXM")
print(price.describe())
lecture = {B: economics.serving_estimate(llama2, "H100 SXM", B=B, S=1024) for B in [1, 64, 256]}
for e in lecture.values():
    print(e.describe())
print(f"per token, B = 64 is {lecture[1].cost_per_million / lecture[64].cost_per_million:.1f}x cheaper than B = 1")
assert lecture[256].memory > 80e9, "the lecture's 2026 assert: B = 256 does not fit in an H100"

# %% [markdown]
# Batch 64 is far cheaper per token than batch 1 (the ratio is printed above); batch 256 would be
# cheaper still but does not fit. Where does the saving come from? Per token, the cost is
#
# $$\text{price} \cdot \frac{\text{param bytes}/B + \text{KV bytes per sequence}}{\text{bandwidth}}:$$
#
# the weight read is shared by the batch and falls as 1/B, but every sequence reads its own KV
# cache. Batching pays until the two are equal, at B* = param bytes / KV bytes per sequence; beyond
# it the cost is within 2x of its floor and stops improving. Llama 3 8B uses grouped-query attention
# (K = 8 KV heads for N = 32 query heads), so it stores a quarter of the KV cache it would with MHA;
# being smaller than Llama 2 13B as well (fewer, narrower layers), it stores less still per token
# than Llama 2 13B (both ratios printed below). So B* is larger and more of it fits.

# %%
# NBVAL_CHECK_OUTPUT
S = 1024
batches = [2**i for i in range(11)]  # 1 ... 1024
models = {name: get_config(name) for name in ["llama2-13b", "llama3-8b"]}
kv = {name: analysis.kv_bytes_per_token(cfg) for name, cfg in models.items()}
l3 = models["llama3-8b"]
kv_l3_mha = analysis.kv_bytes_per_token(dataclasses.replace(l3, K=l3.N))  # the same model with MHA
print(f"KV bytes per token: llama2-13b {kv['llama2-13b']:,.0f} (MHA), llama3-8b {kv['llama3-8b']:,.0f} "
      f"(GQA, K = {l3.K} of N = {l3.N}); llama3-8b with MHA would store {kv_l3_mha:,.0f}")
print(f"  GQA's saving: {kv_l3_mha / kv['llama3-8b']:.2f}x (N/K); llama3-8b vs llama2-13b: "
      f"{kv['llama2-13b'] / kv['llama3-8b']:.2f}x (GQA and the smaller model together)")
curves = {}
for name, cfg in models.items():
    est = [economics.serving_estimate(cfg, "H100 SXM", B=B, S=S) for B in batches]
    curves[name] = est
    b_star = economics.kv_equals_weights_batch(cfg, S)
    print(f"{name}: B* = {b_star:.0f}, largest batch that fits in 80 GB = "
          f"{analysis.max_batch_that_fits(cfg, S)}, cost floor ${economics.cost_floor_per_million(cfg, S=S):.3f}/M")
    print(f"  {'B':>5} {'ms/token':>9} {'tokens/s':>9} {'memory GB':>10} {'KV share':>9} {'$/M tokens':>11}")
    for e in est:
        print(f"  {e.B:>5} {e.latency * 1e3:>9.2f} {e.throughput:>9,.0f} {e.memory / 1e9:>10.1f} "
              f"{e.kv_fraction:>9.0%} {e.cost_per_million:>11.3f}{'' if e.fits else '  does not fit'}")

# %% [markdown]
# The claim "cost per token falls with batch until the KV cache dominates", checked on both models:
# the cost falls at every doubling; while B ≤ B*/4 each doubling saves more than a third; past
# 4·B* each doubling saves less than 12%, because over 80% of the bytes read are KV cache.

# %%
for name, est in curves.items():
    b_star = economics.kv_equals_weights_batch(models[name], S)
    cost = {e.B: e.cost_per_million for e in est}
    assert all(a.cost_per_million > b.cost_per_million for a, b in zip(est, est[1:])), name
    for e in est[:-1]:
        saving = 1 - cost[2 * e.B] / cost[e.B]
        if e.B <= b_star / 4:
            assert saving > 1 / 3, (name, e.B, saving)
        if e.B >= 4 * b_star:
            assert saving < 0.12 and e.kv_fraction > 0.8, (name, e.B, saving)
assert not curves["llama2-13b"][8].fits and curves["llama3-8b"][8].fits  # B = 256

# %% [markdown]
# The same numbers as a picture. Hollow markers are batches whose weights plus KV caches do not
# fit in 80 GB. The grey dashed lines are the scaling book's general step time, which adds the
# compute limit the memory-bound model ignores (`analysis.step_time`: the weight matmuls become
# compute-bound above B ≈ 295 on an H100): it only matters for batches that no longer fit anyway.

# %%
# NBVAL_IGNORE_OUTPUT
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
for (name, est), color in zip(curves.items(), [COLORS["naive"], COLORS["cached"]]):
    cfg = models[name]
    Bs = np.array([e.B for e in est])
    cost = np.array([e.cost_per_million for e in est])
    fits = np.array([e.fits for e in est])
    ax1.loglog(Bs, cost, "-", color=color, alpha=0.6)
    ax1.loglog(Bs[fits], cost[fits], "o", color=color, label=f"{name} (fits in 80 GB)")
    ax1.loglog(Bs[~fits], cost[~fits], "o", mfc="none", color=color, label=f"{name} (does not fit)")
    general = [price.dollars_per_hour / 3600 / (B / analysis.step_time(cfg, B, S)) * 1e6 for B in Bs]
    ax1.loglog(Bs, general, "--", color=COLORS["theory"], lw=1)
    ax1.axhline(economics.cost_floor_per_million(cfg, S=S), color=color, ls=":", lw=1)
    ax1.axvline(economics.kv_equals_weights_batch(cfg, S), color=color, ls=":", lw=1)
    ax2.semilogx(Bs, [e.kv_fraction for e in est], "o-", color=color, label=name)
ax1.set(xlabel="batch size B", ylabel=r"\$ per million tokens (H100 at \$10.8/h)",
        title=f"Cost per token vs batch (S = {S}); dotted: B* and the KV floor")
ax1.legend()
label_log_axis(ax1.yaxis)
ax2.axhline(0.5, color=COLORS["theory"], ls=":")
ax2.set(xlabel="batch size B", ylabel="share of bytes read per step", ylim=(0, 1),
        title="How much of each step is KV cache")
ax2.legend()
plt.show()

# %% [markdown]
# **Takeaway:** the cheapest tokens come from the biggest batch that fits. For an MHA model like
# Llama 2 13B memory runs out at 64 sequences of 1024 tokens, about 2·B*, so KV-cache size is what
# limits cost; GQA (notebook 05) and KV quantization (notebook 06) attack exactly that. Two more
# levers are visible in the formula: a cheaper GPU-hour, and fewer bytes per weight.
#
# These are ideal numbers: a real server reads memory below the datasheet bandwidth (notebook 03
# measures how far below), has to leave room for activations, and cannot always find 64
# concurrent requests. Notebook 02 measures how far a real implementation is from the model.

# %% [markdown]
# ## 4. A calculator
#
# Pick a model, a GPU (from `data/hardware.json`), the batch, the context length, the number of
# GPUs (treated as ideal model parallelism: bandwidth, memory and price add up, communication is
# free), the bytes per weight, and a price. Only the H100 SXM price is quoted from a source; the
# others are **example prices**, so set your provider's. The figure is drawn by formulas only.

# %%
real_models = ["llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "mistral-7b",
               "llama3.2-1b-like"]
weight_bytes = {"bf16": 2, "int8": 1, "int4": 0.5}
batch_options = [2**i for i in range(11)]
context_options = [2**i for i in range(7, 18)]  # 128 ... 131072


def calculator(model="llama2-13b", gpu="H100 SXM", batch=64, context=1024, gpus=1, weights="bf16",
               listed_price=True, price=10.8):
    cfg = get_config(model)
    spec = get_spec(gpu)
    listed = economics.gpu_price(spec)
    per_gpu = listed.dollars_per_hour if listed_price else price
    kw = dict(S=context, dollars_per_hour=per_gpu, n_gpus=gpus, bytes_per_param=weight_bytes[weights])
    e = economics.serving_estimate(cfg, spec, B=batch, **kw)
    curve = [economics.serving_estimate(cfg, spec, B=B, **kw) for B in batch_options]
    where = (listed.describe() if listed_price else f"your price ${price:g}/hour per GPU")
    print(f"{model}, {weights} weights, on {gpus} x {spec.key}, batch {batch}, context {context}")
    print(f"  price            {where}")
    print(f"  cost             ${e.cost_per_million:,.3f} per million tokens")
    print(f"  throughput       {e.throughput:,.0f} tokens/s  ({e.tokens_per_second_per_user:,.1f} tokens/s per user, "
          f"reading speed is {economics.reading_tokens_per_second():.1f})")
    print(f"  latency          {e.latency * 1e3:,.2f} ms per token")
    print(f"  memory           {e.memory / 1e9:,.1f} GB of {e.capacity / 1e9:,.0f} GB: "
          f"weights {e.parameter_bytes / 1e9:,.1f} GB + KV {e.kv_bytes / 1e9:,.1f} GB "
          f"-> {'fits' if e.fits else 'DOES NOT FIT'}")
    print(f"  MFU              {e.mfu:.1%} of peak FLOP/s (the memory-bound model ignores compute)")

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    Bs = np.array(batch_options)
    cost = np.array([c.cost_per_million for c in curve])
    fits = np.array([c.fits for c in curve])
    ax.loglog(Bs, cost, "-", color=COLORS["theory"], alpha=0.5)
    ax.loglog(Bs[fits], cost[fits], "o", color=COLORS["cached"], label="fits in memory")
    ax.loglog(Bs[~fits], cost[~fits], "o", mfc="none", color=COLORS["cached"], label="does not fit")
    ax.loglog([batch], [e.cost_per_million], "*", ms=16, color=COLORS["measured"],
              label=f"B={batch}: \\${e.cost_per_million:,.3f}/M")
    ax.set(xlabel="batch size B", ylabel=r"\$ per million tokens",
           title=f"{model} on {gpus}x {spec.key}, S={context}")
    label_log_axis(ax.yaxis)
    ax.legend()
    plt.show()


calculator()  # the static figure (what a reader without a widget frontend sees)

# %%
# NBVAL_IGNORE_OUTPUT
_ = widgets.interact(
    calculator,
    model=w.Dropdown(options=real_models, value="llama2-13b", description="model"),
    gpu=w.Dropdown(options=list(load_specs()), value="H100 SXM", description="GPU"),
    batch=w.SelectionSlider(options=batch_options, value=64, description="batch B"),
    context=w.SelectionSlider(options=context_options, value=1024, description="context S"),
    gpus=w.IntSlider(value=1, min=1, max=8, description="GPUs"),
    weights=w.Dropdown(options=list(weight_bytes), value="bf16", description="weights"),
    listed_price=w.Checkbox(value=True, description="use the listed price"),
    price=w.FloatText(value=10.8, description="$/GPU-hour"),
)

# %% [markdown]
# Things to try: Llama 2 70B needs two H100s just for its weights; Llama 3 8B at context 131072
# fits only a handful of sequences; int8 weights free memory for more KV cache; an L4 at an
# example $0.70/h has about a tenth of an H100's bandwidth: is it cheaper per token?
#
# **Takeaway:** every knob moves one of three numbers: the price per second, the bytes read per
# token, or the bandwidth, and memory capacity caps the batch that shares the weight read.

# %% [markdown]
# ## Summary
# - By tokens, OpenAI's traffic matches DeepSeek-V4's 32T-token pre-training in **3.7 days**; by
#   FLOPs (2N per served token vs 6N per training token) in **11.2 days**, three times as long; in
#   GPU time in fewer days than that, because memory-bound decode leaves most of a GPU's FLOPs
#   unused (how many fewer depends on the unpublished decode share and MFU). Any way you count,
#   serving overtakes training within two weeks.
# - Chat demand is capped by reading speed (~5 tokens/s a person); agent demand is not, and an
#   agent's context (re-read every turn) grows as it works.
# - Cost per million tokens = price per second / tokens per second. In the memory-bound model the
#   weight read is shared by the batch, the KV read is not, so cost falls as ~1/B until
#   B* = param bytes / KV bytes per sequence and then flattens; memory usually runs out first.

# %% [markdown]
# ## Exercises
# 1. If all 8.6T daily tokens were decoded like Llama 2 13B at B = 64 on H100s, how many H100s would
#    that take, and what would a day cost at $10.8/h? Why is this an overestimate for prompt tokens?
# 2. With `economics.serving_estimate(..., bytes_per_param=1)` (int8 weights), how do B*, the largest
#    batch that fits and the cheapest cost change for Llama 2 13B? Why does the floor not move?
# 3. Redo section 1 for a served model a tenth the size of DeepSeek-V4-Pro's activated parameters
#    (`days_to_match_flops(..., n_train=49e9, n_serve=4.9e9)`). What does the comparison then mean?
# 4. Use `analysis.step_time` instead of the memory-bound model for Llama 3 8B at B = 256 and 512:
#    at what batch does compute, not memory, start to set the cost?
