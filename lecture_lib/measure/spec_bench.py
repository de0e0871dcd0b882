"""Speculative sampling on a GPU: the cost side at real shapes, and measured speed-up against the
formula S = E / (k c + 1) (a benchmark that prints figures; no pass/fail).

    python -m lecture_lib.measure.spec_bench [--target llama3-8b] [--draft llama3.2-1b-like]
        [--draft-layers 16 4] [--compile] [--alpha A --skip-trained] [--json out.json]

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
   With ``--compile`` the round's forwards are compiled too, and the unit is a token of the
   compiled decoder: c = draft step / that token, the verification curve in those tokens, and
   the speed-up over it; one generator serves every draft (``set_draft``) and k (``set_k``).
   ``--draft-layers 16 4`` runs the draft preset at each depth against the same target (a draft
   that is cheap in time as well as in bytes, like the lecture's 4B draft for a 70B target).
   The JSON lists them under ``pairs``.
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


def compiled_costs(spec: FastSpeculativeGenerator, Ts=(2, 3, 4, 5, 6, 8, 9, 12, 16)) -> tuple[dict, float]:
    """The compiled forwards a round replays, each timed alone in a CUDA graph: the target over
    T tokens (cache filled to S_max - T - 1) and one draft step. Returns ({T: s}, draft s).
    (No T = 1: a round never runs it, and Dynamo would compile that size separately.)"""
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
        for _ in range(repeats):  # one seed: the same draws, so the best run is the least noisy, not the luckiest
            out = spec.generate(prompt, new, seed=0)
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
    ap.add_argument("--draft-layers", type=int, nargs="+", default=None,
                    help="draft depths to run (the draft preset with L changed), e.g. 16 4; default: the preset's")
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

    # 1 + 3. Real shapes, random weights: one target, one or more draft depths.
    tcfg = get_config(args.target)
    target = build_model(tcfg, "cuda", torch.bfloat16, seed=0)
    fuse_projections_(target)
    rand_prompt = torch.randint(0, tcfg.V, (1, args.prompt_len), device="cuda")
    if args.compile or not args.no_compiled:
        out["compiled_decode"] = compiled_decode(target, rand_prompt, args.new, S_max)
        _dump(out, args.json)
    out["pairs"], spec = [], None
    for layers in args.draft_layers or [None]:
        dcfg = get_config(args.draft, **({} if layers is None else {"L": layers}))
        label = args.draft if layers is None else f"{args.draft}, L = {dcfg.L}"
        draft = build_model(dcfg, "cuda", torch.bfloat16, seed=1)
        fuse_projections_(draft)
        if args.compile:  # one generator: the target compiled once, each draft compiled in turn
            t0 = time.perf_counter()
            if spec is None:
                spec = FastSpeculativeGenerator(target, draft, k=KS[0], S_max=S_max, simulate_alpha=alpha, compile=True)
            else:
                spec.set_draft(draft)
            pair = compiled_pair(spec, rand_prompt, args.new, S_max, out["compiled_decode"], alpha, t0)
        else:
            pair = graph_pair(target, draft, rand_prompt, args.new, S_max, alpha)
        pair.update(target=args.target, draft=label, draft_L=dcfg.L)
        if "compiled_decode" in out:
            best = max(pair["rows"], key=lambda r: r["tok_per_s"])
            pair.update(compiled_tok_per_s=out["compiled_decode"]["tok_per_s"])
            print(f"  best speculative k = {best['k']}: {best['tok_per_s']:.1f} tok/s = "
                  f"{best['tok_per_s'] / out['compiled_decode']['tok_per_s']:.2f}x the compiled decode "
                  f"({out['compiled_decode']['tok_per_s']:.1f} tok/s)")
        out["pairs"].append(pair)
        del draft
        torch.cuda.empty_cache()
        _dump(out, args.json)
    _dump(out, args.json)
    return out


def _dump(out: dict, path: str | None):
    """Write what has been measured so far (a long run cut short still leaves its figures)."""
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)


def compiled_decode(target, prompt, new: int, S_max: int) -> dict:
    """The library's compiled decoder (``FastGenerator``: torch.compile, CUDA graphs) on the same
    prompt: the best of three generations, and the time a token takes."""
    t0 = time.perf_counter()
    gen = FastGenerator(target, B=1, S_max=S_max)
    gen.warmup(prompt.shape[1])
    compile_s = time.perf_counter() - t0
    runs = [gen.generate(prompt, new).decode_tokens_per_s for _ in range(3)]
    print(f"compiled decode (FastGenerator, {compile_s:.0f} s to compile): {max(runs):.1f} tok/s")
    del gen
    torch.cuda.empty_cache()
    return {"tok_per_s": max(runs), "runs": runs, "compile_s": compile_s, "step_s": 1 / max(runs)}


def _finish_pair(rows_args, verify: dict, t_step: float, t_draft: float, alpha: float, **extra) -> dict:
    c = t_draft / t_step
    print(f"\ntarget step {t_step * 1e3:.2f} ms, draft step {t_draft * 1e3:.2f} ms: c = {c:.3f}")
    print("verification, T tokens in one forward, in target steps: "
          + ", ".join(f"T={T}: {s / t_step:.2f}" for T, s in verify.items()))
    rows = speculative_rows(*rows_args, t_step, c, alpha=alpha, spec=extra.pop("spec", None))
    for r in rows:  # the refined prediction: the measured verification time instead of one step
        k = r["k"]
        r["S_measured_costs"] = r["E_measured"] * t_step / (k * t_draft + verify.get(k + 1, verify[max(verify)]))
    print_rows(rows, f"acceptance drawn at alpha = {alpha:.3f} (random weights): speed-up over one target step per token")
    return dict(extra, target_step_s=t_step, draft_step_s=t_draft, c=c, verify_s=verify, alpha_given=alpha, rows=rows)


def compiled_pair(spec, prompt, new: int, S_max: int, baseline: dict, alpha: float, t0: float) -> dict:
    """The round's forwards compiled: c and the verification curve from those forwards (each
    timed alone in a CUDA graph), relative to a token of the compiled decoder (the baseline the
    speed-up is measured against), then k = 1..8 with one generator (``set_k``)."""
    verify, t_draft = compiled_costs(spec)
    compile_s = time.perf_counter() - t0
    print(f"compiled the round's forwards and timed them: {compile_s:.0f} s")
    return _finish_pair((spec.target, spec.draft, prompt, new, S_max), verify, baseline["step_s"], t_draft, alpha,
                        spec=spec, compiled_round=True, spec_compile_s=compile_s,
                        baseline="a token of the compiled decoder (FastGenerator)")


def graph_pair(target, draft, prompt, new: int, S_max: int, alpha: float) -> dict:
    """The round's forwards uncompiled: one target graph step is the unit."""
    verify = verification_curve(target, S_max)
    t_draft = decode_step_seconds(draft, S=S_max - 1, repeats=30)
    return _finish_pair((target, draft, prompt, new, S_max), verify, verify[1], t_draft, alpha,
                        compiled_round=False, baseline="one target decode step, a CUDA-graph replay")


if __name__ == "__main__":
    main()
