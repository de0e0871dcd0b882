"""Running tensor-parallel decode: W CPU processes over gloo (tests, the notebook's functional
demo), or one process per GPU under ``torchrun`` (the benchmark).

    # the benchmark, on a machine with 2 GPUs (NCCL):
    python -m torch.distributed.run --nproc-per-node 2 -m lecture_lib.parallel.run \\
        --config llama3-8b --tokens 128 --json tp_2.json
    # a Llama-3-70B shape with 8 sequences of 32k context (too big for one H200):
    python -m torch.distributed.run --nproc-per-node 2 -m lecture_lib.parallel.run \\
        --config llama3-70b --batch 8 --context 32768 --tokens 64 --json tp70_2.json

Every rank builds the same model and keeps its slice (``tp.shard_``). A benchmark model of a real
shape gets random bf16 weights, made directly as this rank's slice (a 70B shape never exists
whole on one GPU): fine for timing, meaningless as text.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import time
import traceback

import torch
import torch.distributed as dist

from ..model import Transformer, rope_tables
from . import tp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args, results) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # W processes share the machine's cores
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        buffer = io.BytesIO()  # tensors as bytes: a queue would share their memory with a process about to exit
        torch.save(fn(rank, world, *args), buffer)
        results.put((rank, buffer.getvalue(), None))
    except BaseException:
        results.put((rank, None, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(fn, world: int, *args, timeout: float = 300.0) -> list:
    """``fn(rank, world, *args)`` in ``world`` fresh CPU processes joined by a gloo group on
    127.0.0.1; returns their results in rank order. ``fn`` must be importable (a module-level
    function of a module, not of a notebook). A failing rank raises here with its traceback."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(r, world, port, fn, args, results), daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    out, errors = {}, []
    try:
        for _ in range(world):
            rank, value, error = results.get(timeout=timeout)
            if error:
                errors.append(f"rank {rank}:\n{error}")
            out[rank] = None if value is None else torch.load(io.BytesIO(value), weights_only=False)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    if errors:
        raise RuntimeError("A tensor-parallel rank failed:\n" + "\n".join(errors))
    return [out[r] for r in range(world)]


@torch.no_grad()
def decode_on_ranks(rank: int, world: int, checkpoint: str, prompt: list[int], new_tokens: int,
                    dtype: str = "float32") -> dict:
    """The functional demo and the tests' worker: a trained checkpoint (float32, or ``dtype``), sharded over
    the group, then (1) the prompt's logits in one forward, (2) greedy decoding with the plain
    cached loop and (3) with ``FastGenerator`` (static cache, uncompiled on a CPU), and the
    all-reduces one decode step makes. Returns what this rank saw."""
    from ..checkpoints import load_checkpoint
    from ..decode import generate_cached
    from ..decode.fast import FastGenerator
    from ..cache.static import StaticKVCache
    model = load_checkpoint(checkpoint).to(getattr(torch, dtype))
    full = model.cfg
    hook = tp.shard_(model) if world > 1 else None
    x = torch.tensor([prompt])
    logits = model(x)[0]
    t0 = time.perf_counter()
    tokens = generate_cached(model, x, new_tokens).tokens[0].tolist()
    seconds = time.perf_counter() - t0
    fast = FastGenerator(model, B=1, S_max=len(prompt) + new_tokens + 1, compile=False)
    fast_tokens = fast.generate(x, new_tokens).tokens[0].tolist()
    calls = None
    if hook is not None:  # all-reduces in one decode step: prefill the prompt, then count one token
        cache = StaticKVCache(model.cfg, 1, len(prompt) + 1, dtype=model.norm.weight.dtype)
        model(x, cache, 0)
        hook.calls = 0
        model(x[:, -1:], cache, len(prompt))
        calls = hook.calls
    params = sum(p.numel() for p in model.parameters())
    return {"rank": rank, "world": world, "logits": logits, "tokens": tokens, "fast_tokens": fast_tokens,
            "allreduces_per_step": calls, "L": full.L, "params": params, "K_local": model.cfg.K,
            "N_local": model.cfg.N, "F_local": model.cfg.F, "decode_seconds": seconds}


# ---- the GPU benchmark, under torchrun --------------------------------------------------------------


@torch.no_grad()
def build_sharded(cfg, rank: int, world: int, device, dtype, seed: int = 0) -> Transformer:
    """A random-weight model of ``cfg``'s shape, only this rank's slice ever allocated: built on
    the meta device, sharded, then materialised and initialised (N(0, 0.02), norms 1)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    if world > 1:
        tp.shard_(model, rank, world)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed * 1000 + rank)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        else:
            p.normal_(0.0, 0.02, generator=gen)
    cos, sin = rope_tables(cfg.S_max, cfg.H, cfg.rope_theta, cfg.rope_scaling)
    model.rope_cos, model.rope_sin = cos.to(device), sin.to(device)
    return model.to(dtype).eval()


def allreduce_seconds(D: int, L: int, B: int, device, dtype) -> float:
    """The 2·L all-reduces of one decode step alone ([B 1 D] each), captured in a CUDA graph as
    the compiled step runs them: seconds per step."""
    from ..measure.timing import graph_seconds
    x = torch.randn(B, 1, D, device=device, dtype=dtype)

    def step():
        for _ in range(2 * L):
            dist.all_reduce(x)
        return x
    return graph_seconds(step, calls=1)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m torch.distributed.run --nproc-per-node W -m lecture_lib.parallel.run",
                                 description="Tensor-parallel decode benchmark (one process per GPU).")
    ap.add_argument("--config", default="llama3-8b")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--context", type=int, default=None, help="S_max of the cache (default: prompt + tokens)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from ..config import get_config
    from ..decode.fast import FastGenerator, fuse_projections_
    rank, world = tp.init()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    S_max = args.context or args.prompt_len + args.tokens + 8
    cfg = get_config(args.config)
    cfg = cfg.replace(S_max=max(cfg.S_max, S_max))  # a long context needs a longer RoPE table
    tp.check_divisible(cfg, world)
    result = {"config": args.config, "world": world, "batch": args.batch, "S_max": S_max, "device":
              torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "dtype": str(dtype)}
    try:
        model = build_sharded(cfg, rank, world, device, dtype)
        fuse_projections_(model)
        gen = FastGenerator(model, B=args.batch, S_max=S_max, compile=not args.no_compile)
        prompt = torch.zeros(args.batch, args.prompt_len, dtype=torch.long, device=device)
        t0 = time.perf_counter()
        gen.warmup(args.prompt_len)
        compile_s = time.perf_counter() - t0
        runs, steps = [], []
        for _ in range(3):
            out = gen.generate(prompt, args.tokens)
            runs.append(out.decode_tokens_per_s)
            steps.append(out.seconds_per_step)
        comm = allreduce_seconds(cfg.D, cfg.L, args.batch, device, dtype) if world > 1 and device.type == "cuda" else 0.0
        result.update({"status": "ok", "tok_per_s": sorted(runs)[1], "runs_tok_per_s": runs,
                       "step_ms": sorted(steps)[1] * 1e3, "allreduce_ms_per_step": comm * 1e3, "compile_s": compile_s})
    except torch.cuda.OutOfMemoryError as e:  # recorded, not raised: "does not fit on W GPUs" is a result
        result.update({"status": "out of memory", "error": str(e).split("\n")[0]})
    result["max_memory_bytes_per_rank"] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    gathered = [None] * world
    dist.all_gather_object(gathered, result)
    if rank == 0:
        print(json.dumps(gathered[0], indent=1))
        if any(r["status"] != "ok" for r in gathered):
            print(f"out of memory on {sum(r['status'] != 'ok' for r in gathered)} of {world} ranks")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"ranks": gathered, **gathered[0]}, f, indent=1)
    dist.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
