"""The int8 matrix-vector kernel against bf16 (cuBLAS) and Inductor's int8 kernel, in GB/s, at a
model's decode shapes, each call timed as a CUDA-graph replay with its weights in memory:

    python -m lecture_lib.measure.gemv_bench --preset llama3-8b [--rows M] [--sweep] [--csv out.csv]

``--sweep`` also times many tile configurations of the kernel by themselves (the candidates the
autotuner of ``lecture_lib.quant.int8_gemv`` picks from came from such a sweep on an H100).
"""
from __future__ import annotations

import torch

from ..config import get_config
from ..quant import int8_gemv as kernel  # its Triton parts exist only where Triton does
from .ceilings import measure_copy_bandwidth
from .timing import graph_seconds




def decode_shapes(cfg) -> dict[str, tuple[int, int]]:
    """(N, K) of every distinct weight matrix of one fast decode step (Q/K/V and gate/up fused)."""
    return {"wqkv": ((cfg.N + 2 * cfg.K) * cfg.H, cfg.D), "wo": (cfg.D, cfg.N * cfg.H),
            "w_gate_up": (2 * cfg.F, cfg.D), "w_down": (cfg.D, cfg.F), "lm_head": (cfg.V, cfg.D)}


def _time_in_graph(call, mats, repeats: int = 20) -> float:
    """Seconds per ``call(W)``: one call per matrix in ``mats`` captured in one CUDA graph, timed
    by ``measure.timing.graph_seconds`` (no host launch overhead, as in the decode step). With the
    matrices together several times the L2, each call reads its W from memory."""
    return graph_seconds(lambda: [call(w) for w in mats][-1], calls=1, repeats=repeats) / len(mats)


def _sweep_configs():
    return [kernel.triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
            for bn in (1, 2, 4, 8, 16) for bk in (512, 1024, 2048, 4096) for w in (4, 8, 16)
            for st in (1, 3) if bn * bk <= 16384 and bn * bk >= 32 * w]


def _main(argv=None) -> None:  # pragma: no cover - needs a CUDA GPU
    import argparse

    p = argparse.ArgumentParser(prog="python -m lecture_lib.measure.gemv_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="llama3-8b")
    p.add_argument("--rows", type=int, default=1, help="activation rows M (the batch)")
    p.add_argument("--sweep", action="store_true",
                   help="also time each of many tile configs by itself (prints the best 5 per matrix)")
    p.add_argument("--csv", help="write every timing to this CSV file")
    args = p.parse_args(argv)
    if not kernel.available():
        raise SystemExit("python -m lecture_lib.quant.int8_gemv needs a CUDA GPU and Triton.")
    import torch._inductor.config as inductor_config

    inductor_config.coordinate_descent_tuning = True
    dev, dt = torch.device("cuda"), torch.bfloat16
    bw = measure_copy_bandwidth(dev)
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bw / 1e9:.0f} GB/s, M = {args.rows}, "
          f"torch {torch.__version__}, triton {kernel.triton.__version__}; timed as CUDA-graph replays")
    inductor = torch.compile(lambda x, w, s: torch.nn.functional.linear(x, w.to(x.dtype)) * s,
                             dynamic=False)
    rows = []
    for name, (N, K) in decode_shapes(get_config(args.preset)).items():
        # Enough copies of W that one pass over them is several times the 50 MB L2.
        copies = max(2, int(4 * 50e6 // (N * K)) + 1)
        ws = [torch.randint(-127, 128, (N, K), dtype=torch.int8, device=dev) for _ in range(copies)]
        wb = [torch.randn(N, K, dtype=dt, device=dev) for _ in range(max(2, copies // 2))]
        s = torch.rand(N, dtype=dt, device=dev) / 100
        x = torch.randn(args.rows, K, dtype=dt, device=dev)
        ref = (x.double() @ (ws[0].double() * s.double()[:, None]).T)
        got = kernel.int8_linear(x, ws[0], s)
        err = ((got.double() - ref).norm() / ref.norm()).item()
        assert err < 1e-2, f"{name}: relative error {err:.2e}"
        y = torch.empty(args.rows, N, dtype=dt, device=dev)
        variants = [("bf16 F.linear (cuBLAS)", lambda w: torch.nn.functional.linear(x, w), wb, 2),
                    ("int8 Inductor (compiled)", lambda w: inductor(x, w, s), ws, 1),
                    ("int8 Triton (autotuned)", lambda w: kernel.int8_linear(x, w, s), ws, 1)]
        if args.sweep:
            for cfg in _sweep_configs():
                meta = dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
                variants.append((f"  {meta}", lambda w, meta=meta: kernel._launch(
                    kernel._int8_gemv_kernel, x, w, s, y, **meta), ws, 1))
        timed = []
        for vname, call, mats, bytes_per_weight in variants:
            sec = _time_in_graph(call, mats)
            gbs = N * K * bytes_per_weight / sec / 1e9
            timed.append((name, f"{N}x{K}", vname, sec * 1e6, gbs, 100 * gbs * 1e9 / bw))
        rows += timed[:3] + sorted(timed[3:], key=lambda r: r[3])
        print(f"{name}: relative error vs float64 {err:.1e}", flush=True)
        del ws, wb
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as f:
            csv.writer(f).writerows([("matrix", "NxK", "kernel", "us", "GB/s", "% copy")] + rows)
    print(f"\n{'matrix':<12} {'N x K':<12} {'kernel':<64} {'us':>7} {'GB/s':>6} {'% copy':>6}")
    shown = {}
    for r in rows:
        shown[r[0]] = shown.get(r[0], 0) + 1
        if shown[r[0]] <= 8:  # the 3 fixed rows and the 5 fastest configs
            print(f"{r[0]:<12} {r[1]:<12} {r[2]:<64} {r[3]:>7.1f} {r[4]:>6.0f} {r[5]:>6.1f}")


if __name__ == "__main__":  # pragma: no cover
    _main()
