"""Benchmarks of the engine.

    python -m lecture_lib.serving.bench [--requests 16] [--new 64] [--checkpoint target]
    python -m lecture_lib.serving.bench --offline [--config llama3.2-1b-like] [--hf] [--json out.json]

The first (any device): random prompts of 16-63 tokens (seeded) for a trained checkpoint; output
tokens per second of sequential KV-cached decoding (``decode.generate_cached``, one request after
the other) and of the engine with every request admitted at once, and their ratio.

``--offline`` (a GPU): nano-vllm's offline benchmark (``simulator.nanovllm_workload``: 256
requests, prompts and outputs of 100-1024 tokens, EOS ignored, temperature 0.6 as theirs),
random bf16 weights of the given shape; output tok/s over one timed ``generate`` after a
warm-up, for the engine (continuous batching), the engine at a smaller batch limit continuous
and static, the simulator's bound for the same scheduler (``StepCost`` on this GPU's datasheet
figures), and with ``--hf`` transformers' ``generate_batch`` (its continuous batching, default
settings; one length for all, ``--hf-new`` tokens each, as it takes one max_new_tokens).
"""
from __future__ import annotations

import argparse
import random
import time

import torch

from ..checkpoints import load_checkpoint
from ..config import get_config
from ..decode import generate_cached
from .engine import Engine
from .simulator import SimulatedEngine, StepCost, nanovllm_workload, summarize


def run(checkpoint: str = "target", requests: int = 16, new: int = 64, seed: int = 0) -> dict:
    model = load_checkpoint(checkpoint)
    rng = random.Random(seed)
    prompts = [[rng.randrange(model.cfg.V) for _ in range(rng.randrange(16, 64))] for _ in range(requests)]
    generate_cached(model, torch.tensor([prompts[0]]), 4)  # warm-up
    start = time.perf_counter()
    for p in prompts:
        generate_cached(model, torch.tensor([p]), new)
    sequential = time.perf_counter() - start
    engine = Engine(model, num_blocks=requests * 8, block_size=16, max_num_seqs=requests)
    engine.generate(prompts[:2], 4)  # warm-up
    start = time.perf_counter()
    engine.generate(prompts, new)
    batched = time.perf_counter() - start
    tokens = requests * new
    return {"sequential_tok_per_s": tokens / sequential, "engine_tok_per_s": tokens / batched,
            "speedup": sequential / batched, "requests": requests, "new": new, "checkpoint": checkpoint}


def _timed_generate(engine: Engine, workload, temperature: float, repeats: int = 2) -> dict:
    """A warm-up, then ``repeats`` timed runs of the whole workload. Reported: the median run's
    time (of two: the slower one) and every run's rate, since two runs of the same thing show
    the noise (on an H200 the first timed run has been 15-20% slower than the second)."""
    prompts, limits = [p for p, _ in workload], [m for _, m in workload]
    engine.generate(prompts[:4], 8, temperature, ignore_eos=True)  # warm-up (kernels, allocator)
    runs = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = engine.generate(prompts, limits, temperature, ignore_eos=True)
        torch.cuda.synchronize()
        runs.append(time.perf_counter() - start)
        tokens = sum(len(o) for o in outputs)
        assert tokens == sum(limits), "every request must produce exactly max_tokens (EOS ignored)"
    seconds = sorted(runs)[len(runs) // 2]
    return {"output_tokens": tokens, "seconds": seconds, "tok_per_s": tokens / seconds,
            "all_tok_per_s": [tokens / t for t in runs], "preemptions": engine.preemptions}


def _hf_generate_batch(cfg, workload, new: int, seed: int = 0) -> dict:
    import transformers

    from ..measure.bench import build_hf_model
    hf_model = build_hf_model(cfg, "cuda", torch.bfloat16, seed)
    gen = transformers.GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
    prompts = [p for p, _ in workload]
    hf_model.generate_batch(inputs=prompts[:4], generation_config=transformers.GenerationConfig(
        max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0))  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    results = hf_model.generate_batch(inputs=prompts, generation_config=gen)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(len(r.generated_tokens) for r in results.values())
    return {"output_tokens": tokens, "seconds": seconds, "tok_per_s": tokens / seconds,
            "transformers": transformers.__version__, "new_tokens_each": new}


def offline(config: str = "llama3.2-1b-like", num_requests: int = 256, max_num_seqs: int = 256,
            small_batch: int = 64, max_tokens_per_step: int = 16384, block_size: int = 16,
            temperature: float = 0.6, hf_baseline: bool = False, hf_new: int = 512, seed: int = 0,
            compile: bool = True) -> dict:
    from ..hardware import match_spec
    from ..measure.bench import build_model
    if not torch.cuda.is_available():
        raise RuntimeError("The offline benchmark needs a CUDA GPU (the packed path with its Triton kernel "
                           "and CUDA graphs); on a CPU run `python -m lecture_lib.serving.bench`.")
    cfg = get_config(config)
    workload = nanovllm_workload(num_requests, seed)
    if max(len(p) + m for p, m in workload) > cfg.S_max:
        cfg = cfg.replace(S_max=max(len(p) + m for p, m in workload))
    num_blocks = sum(-(-(len(p) + m) // block_size) for p, m in workload)  # every request fits at once
    model = build_model(cfg, "cuda", torch.bfloat16, seed)
    name = torch.cuda.get_device_name()
    spec = match_spec(name)
    out = {"device": name, "torch": torch.__version__, "config": config, "requests": num_requests,
           "output_tokens": sum(m for _, m in workload), "prompt_tokens": sum(len(p) for p, _ in workload),
           "block_size": block_size, "max_tokens_per_step": max_tokens_per_step, "temperature": temperature}
    runs = {"continuous": (max_num_seqs, "continuous", False),
            f"continuous_{small_batch}": (small_batch, "continuous", False),
            f"static_{small_batch}": (small_batch, "static", False)}
    if compile:
        runs["continuous_compiled"] = (max_num_seqs, "continuous", True)
    for label, (seqs, policy, compiled) in runs.items():
        start = time.perf_counter()
        engine = Engine(model, num_blocks, block_size, seqs, max_tokens_per_step, policy=policy, compile=compiled)
        setup = time.perf_counter() - start
        r = _timed_generate(engine, workload, temperature)
        r |= {"max_num_seqs": seqs, "policy": policy, "compiled": compiled, "setup_s": setup}
        if spec is not None:
            sim = SimulatedEngine(cfg, StepCost.for_gpu(cfg, spec.key), num_blocks, block_size, seqs,
                                  max_tokens_per_step, policy=policy)
            bound = summarize(sim.run([(0.0, p, m) for p, m in workload]))["output_tok_per_s"]
            r |= {"simulated_bound_tok_per_s": bound, "fraction_of_bound": r["tok_per_s"] / bound,
                  "bound_gpu": spec.key}
        out[label] = r
        del engine
        torch.cuda.empty_cache()
    if hf_baseline:
        del model
        torch.cuda.empty_cache()
        try:
            out["transformers_generate_batch"] = _hf_generate_batch(cfg, workload, hf_new, seed)
        except Exception as e:  # a baseline that breaks is reported, not fatal
            out["transformers_generate_batch"] = {"error": f"{type(e).__name__}: {e}"}
    return out


def print_offline(r: dict) -> None:
    print(f"{r['device']}, {r['config']}, {r['requests']} requests, {r['output_tokens']:,} output tokens "
          f"({r['prompt_tokens']:,} prompt), block size {r['block_size']}, budget {r['max_tokens_per_step']}")
    for label, x in r.items():
        if isinstance(x, dict) and "tok_per_s" in x:
            bound = (f", {x['fraction_of_bound']:.0%} of the simulated bound {x['simulated_bound_tok_per_s']:,.0f}"
                     if "fraction_of_bound" in x else "")
            runs = ", ".join(f"{t:,.0f}" for t in x.get("all_tok_per_s", []))
            print(f"  {label:>28}: {x['tok_per_s']:>9,.0f} output tok/s ({x['output_tokens']:,} tokens in "
                  f"{x['seconds']:.2f} s{bound}; runs {runs})")
        elif isinstance(x, dict) and "error" in x:
            print(f"  {label:>28}: failed: {x['error']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="target")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--offline", action="store_true", help="nano-vllm's offline benchmark on a GPU")
    ap.add_argument("--config", default="llama3.2-1b-like")
    ap.add_argument("--num-prompts", type=int, default=256, help="with --offline")
    ap.add_argument("--hf", action="store_true", help="with --offline: also transformers' generate_batch")
    ap.add_argument("--hf-new", type=int, default=512)
    ap.add_argument("--no-compile", action="store_true", help="with --offline: skip the compiled engine run")
    ap.add_argument("--json", default=None, help="with --offline: write the results here")
    args = ap.parse_args(argv)
    if args.offline:
        r = offline(args.config, num_requests=args.num_prompts, hf_baseline=args.hf, hf_new=args.hf_new,
                    compile=not args.no_compile)
        print_offline(r)
        if args.json:
            import json
            with open(args.json, "w") as f:
                json.dump(r, f, indent=1)
        return r
    r = run(args.checkpoint, args.requests, args.new)
    print(f"{r['requests']} requests x {r['new']} new tokens, checkpoint {r['checkpoint']!r}: sequential cached "
          f"{r['sequential_tok_per_s']:,.0f} tok/s, engine {r['engine_tok_per_s']:,.0f} tok/s ({r['speedup']:.2f}x)")
    return r


if __name__ == "__main__":
    main()
