"""Speculative sampling on a GPU: the cost side at real shapes, and measured speed-up against the
formula S = E / (k c + 1) (a benchmark that prints figures; no pass/fail).

    python -m lecture_lib.measure.spec_bench [--target llama3-8b] [--draft llama3.2-1b-like] [--json out.json]

1. **Cost** (random bf16 weights of the two shapes): a target forward over T = 1..16 new tokens
   at batch 1 (CUDA graph, ``timing.decode_step_seconds``), flat while the weight read dominates;
   a draft step; c = draft step / target step.
2. **A real pair, real alpha**: the series' trained byte-level target and draft
   (``data/checkpoints``), greedy on held-out text, k = 1..8 on the fast path
   (``FastSpeculativeGenerator``): alpha, E measured and by formula, the speed-up over the same
   target decoding one token per graph replay, against S(alpha, k, c) with alpha and c measured
   here. These models are tiny, so their steps are launch- and latency-bound, not memory-bound.
3. **Real shapes, alpha given**: the 8B-shape target with the 1B-shape draft, k = 1..8, acceptance
   drawn with probability ``--alpha`` (default: the trained pair's alpha at k = 4 from part 2,
   measured in this run), since random weights make their own alpha meaningless
   (``simulate_alpha``). Every other cost of a round is real. Speed-up over (a) the target
   decoding one token per CUDA-graph replay (the same mechanism) and (b) the library's compiled
   decoder (``FastGenerator``, torch.compile with CUDA graphs), both measured in this process.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from ..checkpoints import load_checkpoint
from ..config import get_config
from ..corpus import heldout_tokens
from ..decode.fast import FastGenerator, fuse_projections_
from ..decode.speculative import expected_speedup, expected_tokens_per_call
from ..decode.speculative_fast import FastSpeculativeGenerator
from .bench import build_model
from .timing import decode_step_seconds

KS = (1, 2, 3, 4, 5, 6, 8)


def verification_curve(model, S_max: int, Ts=(1, 2, 3, 4, 5, 6, 8, 9, 12, 16)) -> dict:
    """Seconds of a forward over T new tokens with the cache filled to S_max - T."""
    return {T: decode_step_seconds(model, S=S_max - T, T=T, repeats=30) for T in Ts}


def compiled_costs(spec: FastSpeculativeGenerator, Ts=(1, 2, 3, 4, 5, 6, 8, 9, 12, 16)) -> tuple[dict, float]:
    """The compiled forwards a round replays, each timed alone in a CUDA graph: the target over
    T tokens (cache filled to S_max - T - 1) and one draft step. Returns ({T: s}, draft s)."""
    from .timing import graph_seconds
    S = spec.S_max
    with torch.no_grad(), spec._attention_context():
        verify = {T: graph_seconds(spec._target_fwd, torch.zeros(1, T, dtype=torch.long, device="cuda"),
                                   torch.arange(S - T - 1, S - 1, device="cuda")) for T in Ts}
        draft = graph_seconds(spec._draft_fwd, torch.zeros(1, 1, dtype=torch.long, device="cuda"),
                              torch.tensor([S - 2], device="cuda"))
    return verify, draft


def speculative_rows(target, draft, prompt, new: int, S_max: int, t_step: float, c: float,
                     alpha: float | None = None, ks=KS, repeats: int = 3, spec=None) -> list[dict]:
    """For each k: the best of ``repeats`` generations on the fast path; alpha, E, the speed-up
    over one target step per token, and the formula's prediction. ``spec``: one generator to
    reuse for every k (``set_k``: its compiled forwards are kept)."""
    rows, reuse = [], spec is not None
    for k in ks:
        if spec is not None:
            spec.set_k(k)
        else:
            spec = FastSpeculativeGenerator(target, draft, k=k, S_max=S_max, simulate_alpha=alpha)
        spec.generate(prompt, 16, seed=0)  # capture + warm-up
        best = None
        for r in range(repeats):
            out = spec.generate(prompt, new, seed=r)
            if best is None or out.generation.decode_seconds < best.generation.decode_seconds:
                best = out
        a = best.acceptance_rate
        tok_s = (new - 1) / best.generation.decode_seconds
        speedup = tok_s * t_step
        rows.append({"k": k, "alpha": a, "E_measured": best.tokens_per_call,
                     "E_formula": expected_tokens_per_call(a, k), "tok_per_s": tok_s, "speedup": speedup,
                     "S_formula": expected_speedup(a, k, c),
                     "error": speedup / expected_speedup(a, k, c) - 1, "rounds": best.target_calls,
                     "capture_s": spec.capture_seconds, "tokens": best.tokens[0, :32].tolist()})
        if not reuse:
            spec = None
            torch.cuda.empty_cache()
    return rows


def print_rows(rows, title):
    print(f"\n{title}")
    print(f"{'k':>3} {'alpha':>6} {'E meas':>7} {'E form':>7} {'tok/s':>8} {'speed-up':>9} {'S form':>7} {'error':>7}")
    for r in rows:
        print(f"{r['k']:>3} {r['alpha']:6.3f} {r['E_measured']:7.2f} {r['E_formula']:7.2f} {r['tok_per_s']:8.1f} "
              f"{r['speedup']:8.2f}x {r['S_formula']:6.2f}x {r['error']:+7.1%}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m lecture_lib.measure.spec_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="llama3-8b")
    ap.add_argument("--draft", default="llama3.2-1b-like")
    ap.add_argument("--alpha", type=float, default=None, help="acceptance at real shapes (default: the trained pair's)")
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--no-compiled", action="store_true", help="skip the compiled baseline (it compiles for ~1 min)")
    ap.add_argument("--compile", action="store_true",
                    help="real shapes: the round's forwards compiled too (FastSpeculativeGenerator(compile=True)); "
                         "c and the verification curve then come from those compiled forwards")
    ap.add_argument("--skip-trained", action="store_true", help="skip part 2 (then --alpha is required)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("spec_bench measures a GPU: no CUDA device here.")
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "settings": vars(args)}
    S_max = args.prompt_len + args.new + 16

    if args.skip_trained and args.alpha is None:
        raise SystemExit("--skip-trained needs --alpha: the acceptance rate to draw at real shapes.")
    # 2. The trained pair (real alpha), greedy, bf16.
    small_t = load_checkpoint("target", device="cuda").to(torch.bfloat16)
    small_d = load_checkpoint("draft", device="cuda").to(torch.bfloat16)
    fuse_projections_(small_t), fuse_projections_(small_d)
    prompt = heldout_tokens()[: args.prompt_len][None].cuda()
    t_small = decode_step_seconds(small_t, S=S_max - 1, repeats=30)
    c_small = decode_step_seconds(small_d, S=S_max - 1, repeats=30) / t_small
    if not args.skip_trained:
        rows = speculative_rows(small_t, small_d, prompt, args.new, S_max, t_small, c_small)
        out["trained_pair"] = {"target_step_s": t_small, "c": c_small, "rows": rows,
                               "verify_s": verification_curve(small_t, S_max)}
        print(f"trained pair (bf16, greedy): target step {t_small * 1e6:.0f} us, c = {c_small:.2f}")
        print_rows(rows, "trained pair: real alpha, speed-up over one target graph step per token")
    alpha = args.alpha if args.alpha is not None else next(r["alpha"] for r in rows if r["k"] == 4)
    del small_t, small_d

    # 1 + 3. Real shapes, random weights.
    tcfg, dcfg = get_config(args.target), get_config(args.draft)
    target = build_model(tcfg, "cuda", torch.bfloat16, seed=0)
    draft = build_model(dcfg, "cuda", torch.bfloat16, seed=1)
    fuse_projections_(target), fuse_projections_(draft)
    spec = None
    if args.compile:
        t0 = time.perf_counter()
        spec = FastSpeculativeGenerator(target, draft, k=KS[0], S_max=S_max, simulate_alpha=alpha, compile=True)
        verify, t_draft = compiled_costs(spec)
        out["spec_compile_s"] = time.perf_counter() - t0
        print(f"compiled the round's forwards and timed them: {out['spec_compile_s']:.0f} s")
    else:
        verify = verification_curve(target, S_max)
        t_draft = decode_step_seconds(draft, S=S_max - 1, repeats=30)
    t_step = verify[1]
    c = t_draft / t_step
    print(f"\n{args.target} target step {t_step * 1e3:.2f} ms, {args.draft} draft step {t_draft * 1e3:.2f} ms: "
          f"c = {c:.3f}")
    print("verification, T tokens in one forward: " + ", ".join(f"T={T}: {s / t_step:.2f}x" for T, s in verify.items()))
    rand_prompt = torch.randint(0, tcfg.V, (1, args.prompt_len), device="cuda")
    rows = speculative_rows(target, draft, rand_prompt, args.new, S_max, t_step, c, alpha=alpha, spec=spec)
    for r in rows:  # the refined prediction: the measured verification time instead of one step
        k = r["k"]
        r["S_measured_costs"] = r["E_measured"] * t_step / (k * t_draft + verify.get(k + 1, verify[max(verify)]))
    out["real_shapes"] = {"target": args.target, "draft": args.draft, "compiled_round": args.compile,
                          "target_step_s": t_step,
                          "draft_step_s": t_draft, "c": c, "verify_s": verify, "alpha_given": alpha, "rows": rows}
    print_rows(rows, f"{args.target} + {args.draft}, acceptance drawn at alpha = {alpha:.3f} (random weights), "
                     "speed-up over one target graph step per token")
    if not args.no_compiled:
        t0 = time.perf_counter()
        gen = FastGenerator(target, B=1, S_max=S_max)
        gen.warmup(args.prompt_len)
        compile_s = time.perf_counter() - t0
        runs = [gen.generate(rand_prompt, args.new).decode_tokens_per_s for _ in range(3)]
        compiled = max(runs)
        out["real_shapes"]["compiled_tok_per_s"] = compiled
        out["real_shapes"]["compiled_runs"] = runs
        out["real_shapes"]["compile_s"] = compile_s
        best = max(rows, key=lambda r: r["tok_per_s"])
        print(f"\ncompiled decode (FastGenerator, {compile_s:.0f} s to compile): {compiled:.1f} tok/s "
              f"(graph step: {1 / t_step:.1f} tok/s); best speculative k = {best['k']}: {best['tok_per_s']:.1f} tok/s "
              f"= {best['tok_per_s'] / compiled:.2f}x the compiled decode")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
