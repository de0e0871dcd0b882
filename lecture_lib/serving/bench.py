"""Continuous batching vs one request at a time, on this device:

    python -m lecture_lib.serving.bench [--requests 16] [--new 64] [--checkpoint target]

Random prompts of 16-63 tokens (seeded) for a trained checkpoint; prints output tokens per second
of sequential KV-cached decoding (``decode.generate_cached``, one request after the other) and of
the engine with every request admitted at once, and their ratio.
"""
from __future__ import annotations

import argparse
import random
import time

import torch

from ..checkpoints import load_checkpoint
from ..decode import generate_cached
from .engine import Engine


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="target")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--new", type=int, default=64)
    r = run(**vars(ap.parse_args(argv)))
    print(f"{r['requests']} requests x {r['new']} new tokens, checkpoint {r['checkpoint']!r}: sequential cached "
          f"{r['sequential_tok_per_s']:,.0f} tok/s, engine {r['engine_tok_per_s']:,.0f} tok/s ({r['speedup']:.2f}x)")
    return r


if __name__ == "__main__":
    main()
