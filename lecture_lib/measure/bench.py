"""Decode benchmark: from naive decoding to the memory-bandwidth roofline, measured in one process.

    python -m lecture_lib.bench decode --preset llama3.2-1b-like --batch 1 --prompt 16 --new 256 \\
        --dtype bf16 --rungs naive,cached,static,compiled,int8 --hf --json out.json
    python -m lecture_lib.bench        # naive vs cached at a preset that suits the device

It measures the device's copy bandwidth, builds the model with random (seeded) weights, then for
each rung times batch-B decoding (after a warm-up run; compile time is reported separately):

    naive     generate_naive: every step recomputes the whole sequence
    cached    generate_cached: KV cache, eager, a host sync per token
    static    FastGenerator(compile=False): static cache, fused QKV, no host sync per token
    compiled  FastGenerator(compile=True): the step compiled, CUDA graphs on a GPU
    int8      every linear layer int8 weight-only (per-channel scales), then the compiled path;
              on a CUDA GPU its matrix-vector products run the Triton kernel of ``int8_gemv``
    int8_inductor  the same, with Inductor's own fused dequantize + GEMV instead (for comparison)
    int4      every linear layer int4 (groups of 128, or the largest of 64/32 that fits), then
              the compiled path
              (on a CPU without --compile-cpu, int8 and int4 run eager with PyTorch's packed CPU
              kernels, aten._weight_int8pack_mm / _weight_int4pack_mm_for_cpu, bf16 activations)
    HF eager / HF static   transformers' LlamaForCausalLM.generate on the same shape (--hf)

``--model smollm2-135m-instruct`` runs the real weights (lecture_lib.pretrained) instead of a
random model, and the HF rows load the same weights.

For each: decode tokens/s, ms per step, the bytes a step must read (every weight matrix once, B
embedding rows, the KV cache so far: ``analysis.decode_bytes_per_step`` at the mean position),
the achieved GB/s (bytes/step x steps/s), its percent of the measured copy bandwidth, and the
percent of the roofline (B x bandwidth / bytes) of the unquantized model.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass

import torch

from .. import analysis, devices, hardware, hf
from ..config import ModelConfig, get_config
from ..decode.fast import FastGenerator, fuse_projections_
from ..decode.plain import generate_cached, generate_naive
from ..devices import synchronize
from ..model import Transformer
from .ceilings import measure_copy_bandwidth
from .oom import free_memory, is_oom, oom_note
from .references import SHAPE_FIELDS

RUNGS = ("naive", "cached", "static", "compiled", "int8", "int8_inductor", "int4")


# Where progress lines go: stderr for the command line; ``run_decode(progress=...)`` can send them
# to stdout (a notebook's stored output shows no red stderr boxes) or silence them (None).
_progress = "stderr"


def log(msg: str) -> None:
    if _progress is not None:
        print(msg, file=sys.stdout if _progress == "stdout" else sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------------


def parse_shape(text: str) -> ModelConfig:
    """``"L=16,D=2048,N=32,K=8,H=64,F=8192,V=128256"`` -> ModelConfig (missing fields: defaults)."""
    fields = {}
    for part in filter(None, text.replace(" ", "").split(",")):
        key, _, value = part.partition("=")
        if key not in (*SHAPE_FIELDS, "S_max") or not value.isdigit():
            raise ValueError(f"bad --shape item {part!r}: use KEY=INT with KEY in {SHAPE_FIELDS}, "
                             f"e.g. L=16,D=2048,N=32,K=8,H=64,F=8192,V=128256.")
        fields[key] = int(value)
    return ModelConfig(**fields, name="shape " + text)


def build_model(cfg: ModelConfig, device, dtype, seed: int = 0) -> Transformer:
    """Random weights (seeded), built directly on the device, then cast to ``dtype``."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = Transformer(cfg)
    return model.to(dtype).eval()


# --------------------------------------------------------------------------------------------
# One rung each. Each returns a dict of what it measured (tok_per_s, ttft_s, ...).
# --------------------------------------------------------------------------------------------


def _median_of(runs, key):
    return statistics.median(key(r) for r in runs)


def _time_generate(fn, model, prompt, new, repeats):
    """Warm-up run (short), then ``repeats`` timed runs: the median decode tokens/s."""
    fn(model, prompt, min(new, 8))
    runs = [fn(model, prompt, new) for _ in range(repeats)]
    return {"tok_per_s": _median_of(runs, lambda g: g.decode_tokens_per_s),
            "ttft_s": _median_of(runs, lambda g: g.ttft), "tokens": runs[-1].tokens}


def _time_fast(model, prompt, new, repeats, compile, ctx):
    gen = FastGenerator(model, prompt.shape[0], prompt.shape[1] + new, compile=compile,
                        fuse=ctx["fuse"], sdpa_backend=ctx["sdpa"])
    log(f"    warm-up{' (compiling)' if compile else ''} ...")
    compile_s = gen.warmup(prompt.shape[1])
    runs = [gen.generate(prompt, new) for _ in range(repeats)]
    return {"tok_per_s": _median_of(runs, lambda g: g.decode_tokens_per_s),
            "ttft_s": _median_of(runs, lambda g: g.ttft), "compile_s": compile_s,
            "tokens": runs[-1].tokens}


def rung_naive(model, prompt, new, ctx):
    n = ctx["naive_new"]
    out = _time_generate(generate_naive, model, prompt, n, ctx["repeats"])
    if n < new:
        out["note"] = f"capped at {n} new tokens (naive is slow at this size): shorter sequences"
    return out | {"new_tokens": n}


def rung_cached(model, prompt, new, ctx):
    return _time_generate(generate_cached, model, prompt, new, ctx["repeats"])


def rung_static(model, prompt, new, ctx):
    return _time_fast(model, prompt, new, ctx["repeats"], False, ctx) | {
        "note": "static cache" + (", fused QKV and gate/up" if ctx["fuse"] else "") + ", eager"}


def rung_compiled(model, prompt, new, ctx):
    if not ctx["can_compile"]:
        return {"status": "skipped", "note": "not compiled on a CPU by default (--compile-cpu: Inductor)"}
    how = "CUDA graphs" if ctx["device"].type == "cuda" else "Inductor, no CUDA graphs"
    return _time_fast(model, prompt, new, ctx["repeats"], True, ctx) | {"note": f"torch.compile, {how}"}


def _quantized(model, prompt, new, ctx, bits, int8_kernel="auto"):
    from .. import quant
    from ..quant import int8_gemv

    qmodel = copy.deepcopy(model)  # keep the float model for the other rungs (and HF rows)
    if ctx["fuse"]:
        fuse_projections_(qmodel)  # fuse first: wqkv and w_gate_up are then quantized as one layer each
    group = _int4_group(qmodel) if bits == 4 else 128
    quant.quantize_model_(qmodel, bits=bits, group_size=group, skip=())  # every linear, lm_head included
    for m in qmodel.modules():
        if isinstance(m, quant.Int8Linear):
            m.kernel = int8_kernel
    compile = ctx["can_compile"]
    cpu_kernels = ctx["device"].type == "cpu" and not compile and int8_kernel == "auto"
    if cpu_kernels:  # eager on a CPU: PyTorch's packed kernels read the codes directly
        quant.use_cpu_kernels_(qmodel)
    out = _time_fast(qmodel, prompt, new, ctx["repeats"], compile, ctx)
    cfg = model.cfg
    # Bytes: the float model's, with its linear layers replaced by what they now store.
    float_linear_bytes = analysis.linear_params(cfg) * ctx["wbytes"]
    out["weight_bytes_delta"] = quant.weight_bytes(qmodel, linear_only=True) - float_linear_bytes
    how = "compiled" if compile else "eager"
    if bits == 4:
        how += f", groups of {group}" + (", aten._weight_int4pack_mm_for_cpu (bf16 activations)" if cpu_kernels else "")
    elif cpu_kernels:
        how += ", aten._weight_int8pack_mm (bf16 activations)"
    elif bits == 8:
        triton_gemv = int8_kernel == "auto" and ctx["device"].type == "cuda" and int8_gemv.HAS_TRITON
        how += (", Triton int8 GEMV (int8_gemv)" if triton_gemv else
                ", Inductor's fused dequantize + GEMV" if compile else
                ", writes a dequantized copy of each weight every step")  # faster or slower: see the table
    out["note"] = f"all linear layers incl. lm_head; {how}"
    del qmodel
    return out


def _int4_group(model) -> int:
    """The largest int4 group size of the fast kernels (128, 64, 32) that divides every input dim."""
    import math
    from ..quant import linear_layers
    g = math.gcd(*(m.in_features for _, m in linear_layers(model)))
    return next((size for size in (128, 64, 32) if g % size == 0), g)


def rung_int8(model, prompt, new, ctx):
    return _quantized(model, prompt, new, ctx, 8)


def rung_int8_inductor(model, prompt, new, ctx):
    if not ctx["can_compile"]:
        return {"status": "skipped", "note": "Inductor's int8 kernel needs compile (--compile-cpu)"}
    return _quantized(model, prompt, new, ctx, 8, int8_kernel="torch")


def rung_int4(model, prompt, new, ctx):
    return _quantized(model, prompt, new, ctx, 4)


# --------------------------------------------------------------------------------------------
# Hugging Face transformers on the same shape
# --------------------------------------------------------------------------------------------


def build_hf_model(cfg: ModelConfig, device, dtype, seed: int = 0, folder=None):
    """transformers' ``LlamaForCausalLM`` of the same shape, random (seeded) weights, no EOS (so it
    always generates the tokens asked for); or the real weights of a Hugging Face ``folder``."""
    import transformers

    if folder is not None:
        model = transformers.LlamaForCausalLM.from_pretrained(str(folder), dtype=dtype).to(device).eval()
        model.generation_config.eos_token_id = None  # generate every token asked for, as the other rungs do
        return model

    hf_cfg = transformers.LlamaConfig(**hf.config_to_hf(cfg), bos_token_id=None, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(seed)
    with torch.device(device):
        model = transformers.LlamaForCausalLM._from_config(hf_cfg, dtype=dtype)
    return model.to(device).eval()


def _time_hf(hf, prompt, new, repeats, **gen_kwargs):
    """Warm-up, then timed ``generate`` runs. The first token's time is taken by a stopping
    criterion (HF calls it once per new token, the first time right after the prefill), so
    decode tokens/s counts the same steps as the other rungs: every token after the first."""
    import transformers

    class FirstTokenClock(transformers.StoppingCriteria):
        t = None

        def __call__(self, input_ids, scores, **kwargs):
            if self.t is None:
                synchronize(input_ids.device)
                self.t = time.perf_counter()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def once():
        clock = FirstTokenClock()
        synchronize(prompt.device)
        t0 = time.perf_counter()
        out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                          min_new_tokens=new, do_sample=False,
                          stopping_criteria=transformers.StoppingCriteriaList([clock]), **gen_kwargs)
        synchronize(prompt.device)
        t_end = time.perf_counter()
        assert out.shape[1] == prompt.shape[1] + new, "HF stopped early"
        return {"tok_per_s": prompt.shape[0] * (new - 1) / (t_end - clock.t), "ttft_s": clock.t - t0,
                "tokens": out[:, prompt.shape[1]:].cpu(), "total": t_end - t0}

    with torch.no_grad():
        warm = once()  # compiles, for the static cache on CUDA
        runs = [once() for _ in range(repeats)]
    return {"tok_per_s": _median_of(runs, lambda r: r["tok_per_s"]),
            "ttft_s": _median_of(runs, lambda r: r["ttft_s"]), "tokens": runs[-1]["tokens"],
            "compile_s": warm["total"]}


def hf_rows(cfg, prompt, new, ctx) -> list[dict]:
    try:
        import transformers
    except ImportError:
        return [{"rung": "HF", "status": "skipped", "note": "transformers is not installed"}]
    device, dtype = ctx["device"], ctx["dtype"]
    rows = []
    # HF compiles with Inductor's defaults: undo the flags the fast path set for itself.
    import torch._inductor.config as inductor_config

    inductor_config.coordinate_descent_tuning = ctx["inductor_defaults"]["coordinate_descent_tuning"]
    log(f"[HF] building LlamaForCausalLM (transformers {transformers.__version__}) ...")
    try:
        hf = build_hf_model(cfg, device, dtype, ctx["seed"], ctx.get("hf_folder"))
    except Exception as e:
        if not is_oom(e):
            raise
        free_memory(device)
        return [{"rung": "HF eager", "status": "oom", "note": oom_note(e)},
                {"rung": "HF static", "status": "oom", "note": oom_note(e)}]
    compiles = device.type == "cuda"
    for name, kwargs, note in [
        ("HF eager", {}, "generate(), dynamic cache"),
        ("HF static", {"cache_implementation": "static"},
         "generate(cache_implementation='static')" + (", auto-compiled (reduce-overhead)" if compiles
                                                      else "; HF compiles on GPUs only")),
    ]:
        row = _run_rung(name, lambda: _time_hf(hf, prompt, new, ctx["repeats"], **kwargs), ctx)
        row["note"] = note if row["status"] == "ok" else f"{note}: {row.get('note', '')}"
        rows.append(row)
    del hf
    free_memory(device)
    return rows


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    rung: str
    status: str = "ok"  # ok | oom | skipped | error
    new_tokens: int | None = None
    tok_per_s: float | None = None
    ms_per_step: float | None = None
    bytes_per_step: float | None = None
    gb_per_s: float | None = None
    pct_bandwidth: float | None = None
    roofline_tok_per_s: float | None = None
    pct_roofline: float | None = None  # of the unquantized model's roofline
    compile_s: float | None = None
    ttft_s: float | None = None
    note: str = ""


def _run_rung(name, fn, ctx) -> dict:
    log(f"[{name}] ...")
    t = time.perf_counter()
    try:
        out = fn()
        out.setdefault("status", "ok")
    except Exception as e:  # one broken rung must not lose the others' numbers
        if is_oom(e):
            out = {"status": "oom", "note": oom_note(e)}
            free_memory(ctx["device"])
            log(f"[{name}] oom ({time.perf_counter() - t:.1f} s)")
            return {"rung": name, **out}
        traceback.print_exc(file=sys.stderr)
        first_line = str(e).splitlines()[0][:160] if str(e) else ""
        out = {"status": "error", "note": f"{type(e).__name__}: {first_line}"}
    free_memory(ctx["device"])
    log(f"[{name}] {out['status']}" + (f", {out['tok_per_s']:,.1f} tok/s" if out.get("tok_per_s") else "")
        + f" ({time.perf_counter() - t:.1f} s)")
    return {"rung": name, **out}


def _inductor_flags() -> dict:
    import torch._inductor.config as inductor_config

    return {"coordinate_descent_tuning": inductor_config.coordinate_descent_tuning}


def _finish_row(raw: dict, cfg, B, T0, new, ctx) -> Row:
    """Turn a rung's raw measurement into the table's figures."""
    row = Row(rung=raw["rung"], status=raw.get("status", "ok"), note=raw.get("note", ""),
              compile_s=raw.get("compile_s"), ttft_s=raw.get("ttft_s"))
    if row.status != "ok":
        return row
    n = raw.get("new_tokens", new)
    S_mean = T0 + n / 2  # decode step i (1 .. n-1) attends to T0 + i keys
    ref = analysis.decode_bytes_per_step(cfg, B, S_mean, ctx["wbytes"], ctx["wbytes"])
    nbytes = ref + raw.get("weight_bytes_delta", 0)
    bw, tps = ctx["bandwidth"], raw["tok_per_s"]
    row.new_tokens, row.tok_per_s = n, tps
    row.ms_per_step = 1e3 * B / tps
    row.bytes_per_step = nbytes
    row.gb_per_s = nbytes * tps / B / 1e9
    row.pct_bandwidth = 100 * nbytes * tps / B / bw
    row.roofline_tok_per_s = B * bw / nbytes
    row.pct_roofline = 100 * tps / (B * bw / ref)
    return row


def run_decode(cfg: ModelConfig, *, batch: int = 1, prompt_len: int = 16, new: int = 256,
               dtype=None, rungs=("naive", "cached", "static", "compiled", "int8"), hf: bool = False,
               device=None, repeats: int = 3, seed: int = 0, compile_cpu: bool = False,
               naive_new: int | None = None, fuse: bool = True, sdpa: str | None = "math",
               check_tokens: bool = True, bandwidth: float | None = None, pretrained: str | None = None,
               progress: str | None = "stderr") -> dict:
    """Run the benchmark; returns a JSON-ready dict (``format_table`` prints it).
    ``bandwidth`` (bytes/s): use this instead of measuring the copy bandwidth (tests).
    ``pretrained``: a model name of ``lecture_lib.pretrained`` (real weights; ``cfg`` is then
    ignored, and the HF rows load the same weights).
    ``progress``: where the progress lines go: "stderr" (the command line), "stdout" (a
    notebook), or None (silent). A failing rung's traceback still goes to stderr."""
    if progress not in ("stderr", "stdout", None):
        raise ValueError(f"progress must be 'stderr', 'stdout' or None, got {progress!r}.")
    global _progress
    before, _progress = _progress, progress
    try:
        return _run_decode(cfg, batch=batch, prompt_len=prompt_len, new=new, dtype=dtype, rungs=rungs, hf=hf,
                           device=device, repeats=repeats, seed=seed, compile_cpu=compile_cpu,
                           naive_new=naive_new, fuse=fuse, sdpa=sdpa, check_tokens=check_tokens,
                           bandwidth=bandwidth, pretrained=pretrained)
    finally:
        _progress = before


def _run_decode(cfg, *, batch, prompt_len, new, dtype, rungs, hf, device, repeats, seed, compile_cpu,
                naive_new, fuse, sdpa, check_tokens, bandwidth, pretrained) -> dict:
    device, dtype = devices.resolve(device, dtype)
    unknown = [r for r in rungs if r not in RUNGS]
    if unknown:
        raise ValueError(f"unknown rungs {unknown}; choose from {RUNGS}.")
    for name, value in (("batch", batch), ("prompt_len", prompt_len), ("new", new), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if prompt_len + new > cfg.S_max:
        raise ValueError(
            f"prompt ({prompt_len}) + new ({new}) = {prompt_len + new} tokens exceed {cfg.name}'s longest "
            f"sequence, S_max = {cfg.S_max}. Shorten --prompt or --new, or give a shape with a longer "
            f"S_max (--shape ...,S_max={prompt_len + new}).")
    real = None
    if pretrained is not None:
        from .. import pretrained as pretrained_models
        real = pretrained_models.load(pretrained, device=device, dtype=dtype)
        cfg = real.model.cfg.replace(name=pretrained)
        real_origin = real.origin
        if prompt_len + new > cfg.S_max:
            raise ValueError(f"prompt + new = {prompt_len + new} exceed {pretrained}'s S_max = {cfg.S_max}.")
    info = hardware.detect(device)
    log(f"device: {info.describe()}")
    if bandwidth is None:
        log("measuring copy bandwidth ...")
        bw = measure_copy_bandwidth(device, seconds=1.0 if device.type == "cuda" else 0.5)
        log(f"copy bandwidth: {bw / 1e9:,.1f} GB/s")
    else:
        bw = bandwidth
    n_params = analysis.num_params_exact(cfg)
    model = None
    if real is not None:
        model = real.model
    elif rungs:
        log(f"building {cfg.name} ({n_params / 1e6:,.1f}M parameters, {devices.dtype_name(dtype)}) ...")
        model = build_model(cfg, device, dtype, seed)
    if naive_new is None:  # naive is O(T^2) work a token: keep it to a minute on a CPU
        naive_new = new if device.type == "cuda" or n_params < 5e7 else min(new, 32)
    ctx = {"device": device, "dtype": dtype, "wbytes": torch.finfo(dtype).bits // 8, "bandwidth": bw,
           "repeats": repeats, "seed": seed, "naive_new": min(naive_new, new), "fuse": fuse,
           "sdpa": sdpa, "can_compile": device.type == "cuda" or compile_cpu,
           "inductor_defaults": _inductor_flags(), "hf_folder": real.folder if real is not None else None}
    torch.manual_seed(seed + 1)
    prompt = torch.randint(0, cfg.V, (batch, prompt_len), device=device)

    raw = []
    for name in rungs:
        fn = globals()[f"rung_{name}"]
        raw.append(_run_rung(name, lambda: fn(model, prompt, new, ctx), ctx))
    del model, real  # make room for the HF model
    free_memory(device)
    if hf:
        raw += hf_rows(cfg, prompt, new, ctx)

    # Greedy tokens of the full-length exact rungs should agree (fp32: exactly; bf16: rounding
    # differences in a different kernel order can flip a near-tie and the sequences then diverge).
    agree = None
    if check_tokens:
        seqs = {r["rung"]: r["tokens"] for r in raw if r.get("status") == "ok" and "tokens" in r
                and r["rung"] in ("cached", "static", "compiled")}
        if len(seqs) > 1:
            first = next(iter(seqs.values()))
            agree = {k: bool(torch.equal(v.cpu(), first.cpu())) for k, v in seqs.items()}

    rows = [_finish_row(r, cfg, batch, prompt_len, new, ctx) for r in raw]
    import importlib.metadata as md

    try:
        tf_version = md.version("transformers")
    except md.PackageNotFoundError:
        tf_version = None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": info.describe(), "device_type": device.type, "device_name": info.name,
        "torch": torch.__version__, "transformers": tf_version,
        "model": {k: getattr(cfg, k) for k in (*SHAPE_FIELDS, "tie_embeddings")} | {"name": cfg.name},
        "weights": f"{pretrained}: {real_origin}" if pretrained else "random (seeded)",
        "params": n_params, "dtype": devices.dtype_name(dtype), "batch": batch, "prompt": prompt_len,
        "new": new, "repeats": repeats, "bandwidth_bytes_per_s": bw,
        "roofline_tok_per_s": batch * bw / analysis.decode_bytes_per_step(
            cfg, batch, prompt_len + new / 2, ctx["wbytes"], ctx["wbytes"]),
        "greedy_tokens_agree": agree,
        "settings": {"fuse": fuse, "sdpa_backend_decode": sdpa or "default",
                     "naive_new": ctx["naive_new"], "compile_on_cpu": compile_cpu,
                     "inductor_coordinate_descent_tuning_fast_path": device.type == "cuda"},
        "rows": [asdict(r) for r in rows],
    }


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def format_table(result: dict) -> str:
    r = result
    lines = [
        f"device: {r['device']}",
        f"model: {r['model']['name']} ({r['params'] / 1e6:,.1f}M params, {r['dtype']}), batch {r['batch']}, "
        f"prompt {r['prompt']}, {r['new']} new tokens, median of {r['repeats']}; torch {r['torch']}",
        f"weights: {r.get('weights', 'random (seeded)')}",
        f"measured copy bandwidth {r['bandwidth_bytes_per_s'] / 1e9:,.1f} GB/s -> roofline "
        f"{r['roofline_tok_per_s']:,.1f} tok/s",
        "",
        f"{'rung':<10} {'new':>4} {'tok/s':>10} {'ms/step':>9} {'MB/step':>9} {'GB/s':>8} "
        f"{'% BW':>6} {'% roofl':>7} {'warm-up s':>9}  note",
    ]
    for row in r["rows"]:
        if row["status"] != "ok":
            lines.append(f"{row['rung']:<10} {row['status'].upper():>4}  {row['note']}")
            continue
        lines.append(
            f"{row['rung']:<10} {row['new_tokens']:>4} {row['tok_per_s']:>10,.1f} {row['ms_per_step']:>9.3f} "
            f"{row['bytes_per_step'] / 1e6:>9,.1f} {row['gb_per_s']:>8,.1f} {row['pct_bandwidth']:>6.1f} "
            f"{row['pct_roofline']:>7.1f} {_fmt(row['compile_s'], '9.1f'):>9}  {row['note']}")
    lines += [
        "",
        "MB/step: bytes one decode step must read (weights once, B embedding rows, KV cache at the mean "
        "position); GB/s = MB/step x steps/s; % BW of the measured copy bandwidth; % roofl: tok/s over "
        "the unquantized model's roofline (int8/int4 can pass 100%). warm-up s: the untimed first run "
        "(compiling, for compiled rungs).",
    ]
    if r.get("greedy_tokens_agree"):
        lines.append(f"greedy tokens identical to the first exact rung: {r['greedy_tokens_agree']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    """argparse type: an integer of at least 1 (a batch, a length, a count)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lecture_lib.bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command")
    d = sub.add_parser("decode", help="decode tokens/s for each rung, against the roofline")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--preset", help="a model preset from data/models.json (e.g. llama3.2-1b-like, llama3-8b)")
    g.add_argument("--shape", help="L=..,D=..,N=..,K=..,H=..,F=..,V=.. (random weights)")
    g.add_argument("--model", help="real weights from lecture_lib.pretrained, e.g. smollm2-135m-instruct")
    d.add_argument("--batch", type=_positive, default=1)
    d.add_argument("--prompt", type=_positive, default=16)
    d.add_argument("--new", type=_positive, default=256)
    d.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="default: the device's (bf16 on "
                   "Ampere+, fp16 on older GPUs, fp32 on a CPU)")
    d.add_argument("--rungs", default=None, help=f"comma-separated, from {','.join(RUNGS)} "
                   "(default: naive,cached,static,compiled,int8; 'none' with --hf: HF rows only)")
    d.add_argument("--hf", action="store_true", help="also time transformers' LlamaForCausalLM.generate")
    d.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    d.add_argument("--device", help="default: cuda, then mps, then cpu")
    d.add_argument("--repeats", type=_positive, default=3, help="timed runs per rung (median)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--compile-cpu", action="store_true",
                   help="run compiled/int8 rungs with Inductor on a CPU")
    d.add_argument("--naive-new", type=int, help="new tokens for the naive rung (default: all on a GPU, "
                   "capped at 32 on a CPU for models over 50M parameters)")
    d.add_argument("--no-fuse", action="store_true",
                   help="keep separate Q, K, V (and gate, up) projections in the fast rungs")
    d.add_argument("--sdpa", default="math",
                   choices=["math", "default", "flash_attention", "efficient_attention"],
                   help="SDPA backend for fast-path decode steps on CUDA (default math)")
    return p


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("decode", "-h", "--help"):
        # Bare command (issue 2): naive vs cached at a preset that suits the device (on a CPU,
        # 64 new tokens: naive decoding of 256 would take minutes).
        short = [] if "--new" in argv or devices.pick_device().type != "cpu" else ["--new", "64"]
        argv = ["decode", "--rungs", "naive,cached", *short, *argv]
    args = _parser().parse_args(argv)
    device = torch.device(args.device) if args.device else devices.pick_device()
    if args.model:
        cfg = ModelConfig(S_max=args.prompt + args.new, name=args.model)  # replaced by the real model's
    elif args.shape:
        cfg = parse_shape(args.shape)
    else:
        cfg = get_config(args.preset or ("medium" if device.type == "cuda" else "small"))
    rungs = [r.strip() for r in (args.rungs or "naive,cached,static,compiled,int8").split(",")
             if r.strip() and r.strip() != "none"]  # "none": only the HF rows (with --hf)
    if args.prompt + args.new > cfg.S_max:
        _parser().error(f"--prompt {args.prompt} + --new {args.new} = {args.prompt + args.new} tokens exceed "
                        f"{cfg.name}'s S_max = {cfg.S_max}: shorten them, or use --shape ...,S_max=N.")
    result = run_decode(
        cfg, batch=args.batch, prompt_len=args.prompt, new=args.new,
        dtype=devices.as_torch_dtype(args.dtype) if args.dtype else None, rungs=rungs, hf=args.hf,
        device=device, repeats=args.repeats, seed=args.seed, compile_cpu=args.compile_cpu,
        naive_new=args.naive_new, fuse=not args.no_fuse,
        sdpa=None if args.sdpa == "default" else args.sdpa, pretrained=args.model)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        log(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
