"""The highest request rate a server sustains within latency SLOs (a GPU benchmark).

    python -m lecture_lib.serving.slo [--config llama3.2-1b-like] [--systems continuous,static,transformers]
                                      [--tpot-ms 50] [--ttft-ms 500] [--json out.json]

Three servers of the same random-weight bf16 model, one after the other on the same GPU, each
driven by the load generator (``loadgen``, vLLM's metric definitions) at rising request rates:

- ``continuous``: this library's server (``python -m lecture_lib.serve``), continuous batching;
- ``static``: the same server with ``--policy static`` (a batch is admitted only once the last
  one has finished);
- ``transformers``: ``transformers serve --continuous-batching`` (its paged-attention continuous
  batching) on a Hugging Face ``LlamaForCausalLM`` of the same shape and random weights, saved
  to a folder with a placeholder word-level tokenizer (token i is the word ``t<i>``), so that a
  prompt of n words is n tokens, as the token-id prompts sent to the library's server are;
- ``transformers-graphs``: the same with ``--cb-use-cuda-graph`` (off unless asked for).

Every request: ``--input-len`` random prompt tokens, ``--output-len`` output tokens (EOS never
comes: the model has none). A rate runs ``clamp(rate * --seconds, --min-prompts, --max-prompts)``
requests; a system's sweep stops after two rates in a row miss the SLO. Two criteria per rate:

- p99 TPOT <= ``--tpot-ms`` (the issue's SLO). Static batching never misses it by itself: a
  request that has started decodes undisturbed in its batch, and the overload shows up as
  waiting, i.e. in TTFT, which TPOT excludes;
- p99 TPOT <= ``--tpot-ms`` and p99 TTFT <= ``--ttft-ms``: the SLO that also sees the queue.

The highest rate meeting each is reported per system, and the ratios between systems.
Client and servers share the machine's CPU cores (loadgen parses every server-sent event in
Python), which is part of what is measured.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

from . import loadgen

SYSTEMS = ("continuous", "static", "transformers", "transformers-graphs")
RATES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def save_hf_folder(preset: str, folder: str, seed: int = 0) -> str:
    """A Hugging Face folder with a random-weight ``LlamaForCausalLM`` of the preset's shape and a
    word-level tokenizer whose token i is ``t<i>`` (no EOS, no BOS, a plain chat template)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    from ..config import get_config
    from ..measure.bench import build_hf_model
    cfg = get_config(preset)
    build_hf_model(cfg, "cpu", torch.bfloat16, seed).save_pretrained(folder)
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(cfg.V)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", pad_token="t0")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    fast.save_pretrained(folder)
    return folder


class TransformersServer:
    """``transformers serve <folder> --continuous-batching`` as a child process."""

    def __init__(self, folder: str, port: int, device: str = "cuda:0", extra: list[str] | None = None,
                 timeout: float = 600.0):
        import httpx
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="transformers_serve_", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", folder, "--continuous-batching",
               "--host", "127.0.0.1", "--port", str(port), "--device", device, "--dtype", "bfloat16",
               *(extra or [])]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True, env=env)
        start = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with code {self.proc.returncode}:\n"
                                   f"{self.output()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - start > timeout:
                self.stop()
                raise TimeoutError(f"transformers serve did not answer /health within {timeout:.0f} s.")
            time.sleep(0.5)

    def output(self) -> str:
        with open(self.log.name) as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def requests_for(system: str, n: int, input_len: int, output_len: int, seed: int, V: int = 10_000) -> list[tuple[dict, int]]:
    """The same random prompts for every system: token ids for the library's server, the words
    ``t<id>`` for transformers serve (whose completions endpoint takes text only)."""
    data = loadgen.random_dataset(n, input_len, output_len, vocab=min(10_000, V), seed=seed)
    out = []
    for body, n_tokens in data:
        body = {**body, "temperature": 0, "ignore_eos": True}
        if system.startswith("transformers"):
            body["prompt"] = " ".join(f"t{i}" for i in body["prompt"])
            body.pop("ignore_eos")  # not a parameter it knows; the model has no EOS anyway
        out.append((body, n_tokens))
    return out


def meets(r: dict, tpot_ms: float, ttft_ms: float | None) -> bool:
    if r["failed"] or not r["completed"] or "p99_tpot_ms" not in r:
        return False
    return r["p99_tpot_ms"] <= tpot_ms and (ttft_ms is None or r["p99_ttft_ms"] <= ttft_ms)


def sweep_system(system: str, url: str, model: str | None, args) -> list[dict]:
    """Rising rates until two in a row miss the TPOT + TTFT SLO. (TPOT alone may still be met
    then: a server that caps its batch queues the overload, which only TTFT sees.)"""
    warm = requests_for(system, 8, args.input_len, args.output_len, seed=99, V=args.V)
    loadgen.run(url, warm, rate=math.inf, model=model, progress=False)  # compile, graphs, allocator
    rows, misses = [], 0
    for rate in args.rates:
        n = int(min(args.max_prompts, max(args.min_prompts, rate * args.seconds)))
        t0 = time.perf_counter()
        r = loadgen.run(url, requests_for(system, n, args.input_len, args.output_len, seed=0, V=args.V), rate=rate,
                        model=model, slos_ms={"tpot": args.tpot_ms, "ttft": args.ttft_ms}, progress=False,
                        timeout=120.0)
        r.pop("results")
        r["system"], r["wall_s"] = system, time.perf_counter() - t0
        r["meets_tpot"] = meets(r, args.tpot_ms, None)
        r["meets_tpot_ttft"] = meets(r, args.tpot_ms, args.ttft_ms)
        rows.append(r)
        print(f"[{system}] ", end="")
        loadgen.print_result(r)
        print(f"    meets p99 TPOT <= {args.tpot_ms:g} ms: {r['meets_tpot']}; "
              f"and p99 TTFT <= {args.ttft_ms:g} ms: {r['meets_tpot_ttft']}", flush=True)
        misses = 0 if r["meets_tpot_ttft"] else misses + 1
        if misses >= 2:
            break
    return rows


def best_rate(rows: list[dict], key: str) -> dict:
    """The highest rate that met the SLO, and whether it was also the highest rate tried (then
    the true limit is higher: the sweep stopped for the other criterion)."""
    ok = [r["rate"] for r in rows if r[key]]
    return {"rate": max(ok) if ok else None, "open_ended": bool(ok) and max(ok) == rows[-1]["rate"]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m lecture_lib.serving.slo", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="llama3.2-1b-like")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--tpot-ms", type=float, default=50.0)
    ap.add_argument("--ttft-ms", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=8.0, help="each rate sends about this many seconds of requests")
    ap.add_argument("--min-prompts", type=int, default=32)
    ap.add_argument("--max-prompts", type=int, default=1024)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--rates", default=",".join(map(str, RATES)), help="comma-separated, rising")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    args.rates = [float(x) for x in args.rates.split(",")]
    from ..config import get_config
    args.V = get_config(args.config).V
    from .server import ServerProcess, free_port
    systems = args.systems.split(",")
    if unknown := set(systems) - set(SYSTEMS):
        raise SystemExit(f"--systems: unknown {sorted(unknown)}; choose from {', '.join(SYSTEMS)}.")
    out = {"config": args.config, "settings": vars(args), "systems": {}}
    for system in systems:
        t0 = time.perf_counter()
        if system.startswith("transformers"):
            folder = save_hf_folder(args.config, tempfile.mkdtemp(prefix="slo_hf_"))
            server = TransformersServer(folder, free_port(), "cuda:0" if args.device == "cuda" else args.device,
                                        ["--cb-use-cuda-graph"] if system == "transformers-graphs" else [])
            model = folder
        else:
            server = ServerProcess("--model", f"random:{args.config}", "--max-num-seqs", str(args.max_num_seqs),
                                   "--max-waiting", "100000", "--policy", system, "--device", args.device, timeout=600.0)
            model = None
        start_s = time.perf_counter() - t0
        try:
            rows = sweep_system(system, server.url, model, args)
        except Exception as e:  # record and go on with the other systems
            print(f"[{system}] failed: {type(e).__name__}: {e}\n{server.output()[-2000:]}", flush=True)
            rows = [{"system": system, "error": f"{type(e).__name__}: {e}"}]
        finally:
            server.stop()
        out["systems"][system] = {
            "startup_s": start_s, "runs": rows,
            "max_rate_tpot": best_rate(rows, "meets_tpot") if "error" not in rows[0] else None,
            "max_rate_tpot_ttft": best_rate(rows, "meets_tpot_ttft") if "error" not in rows[0] else None}
    print(f"\nhighest rate (req/s) with p99 TPOT <= {args.tpot_ms:g} ms [and p99 TTFT <= {args.ttft_ms:g} ms]:")
    def show(b):
        return "none" if not b or b["rate"] is None else f"{b['rate']:g}" + ("+" if b["open_ended"] else "")
    for system, s in out["systems"].items():
        print(f"  {system:13s} {show(s['max_rate_tpot']):>6s}  [{show(s['max_rate_tpot_ttft'])}]")
    print("  (+: still met at the highest rate tried)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
