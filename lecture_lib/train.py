"""Train the small byte-level decoders in data/checkpoints on the CPU, in minutes.

    python -m lecture_lib.train                  # every recipe, one after another
    python -m lecture_lib.train --jobs 2         # two at a time, one thread each (see below)
    python -m lecture_lib.train --only draft --steps 100 --out /tmp/ckpt   # a quick try

Recipes: "target" (the model the notebooks measure), "draft" (a much smaller model for
speculative sampling), and "gqa-k8" / "gqa-k1", which share the target's architecture, data
order and training budget but have K = N = 8 (MHA) and K = 1 (MQA) KV heads. The target itself
has K = N/4 = 2 and is the GQA family's middle member ("gqa-k2" is its alias).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import corpus
from .checkpoints import (EVAL_B, EVAL_T, EVAL_WINDOWS, STORE_DTYPE, checkpoint_dir, perplexity,
                          round_weights_, save_checkpoint, unigram_perplexity)
from .config import ModelConfig
from .model import Transformer


@dataclass(frozen=True)
class Recipe:
    name: str
    cfg: ModelConfig
    steps: int
    B: int = 16  # windows per step
    T: int = 256  # bytes per window
    lr: float = 3e-3  # peak; small models tolerate (and, in a few hundred steps, need) a high rate
    warmup: int = 50
    min_lr_frac: float = 0.1  # cosine decays to 10% of the peak
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0  # same seed: same initial draw of shared shapes and the same batches
    aliases: tuple[str, ...] = ()
    purpose: str = ""


# Sizes for a fixed CPU budget: a pilot at equal CPU time gave held-out ppl 3.4 for this
# 0.76M-parameter model (750 steps) against 4.6 for the 2.9M "small" preset (300 steps): at a few
# million training tokens the smaller model that sees more text wins (as scaling laws predict).
TARGET = ModelConfig(L=4, D=128, N=8, K=2, H=16, F=344, V=256, S_max=1024, name="target",
                     source="Trained by lecture_lib.train on data/corpus (Python docs, bytes).")
GQA_STEPS = 800
RECIPES = {
    r.name: r for r in [
        Recipe("target", TARGET, GQA_STEPS, aliases=("gqa-k2",),
               purpose="The model the notebooks measure; also the GQA family's K = N/4 member."),
        Recipe("gqa-k8", TARGET.replace(K=8, name="gqa-k8"), GQA_STEPS,
               purpose="GQA family: K = N = 8, plain multi-head attention."),
        Recipe("gqa-k1", TARGET.replace(K=1, name="gqa-k1"), GQA_STEPS,
               purpose="GQA family: K = 1, multi-query attention."),
        # One layer: on a CPU, decode time per token grows with the layer count, so a 1-layer
        # draft is about 4x cheaper per token than the 4-layer target (and 10x smaller).
        Recipe("draft", ModelConfig(L=1, D=64, N=4, K=1, H=16, F=176, V=256, S_max=1024,
                                    name="draft", source=TARGET.source), 2000,
               purpose="Draft for speculative sampling: 1 layer, about 10x fewer parameters than the target."),
    ]
}


def lr_at(step: int, r: Recipe) -> float:
    """Linear warm-up, then cosine decay from r.lr to r.min_lr_frac * r.lr."""
    if step < r.warmup:
        return r.lr * (step + 1) / r.warmup
    progress = (step - r.warmup) / max(1, r.steps - r.warmup)
    return r.lr * (r.min_lr_frac + (1 - r.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch thread(s)"


def train_one(r: Recipe, out_dir: Path, threads: int | None = None, progress: bool = True) -> dict:
    if threads:
        torch.set_num_threads(threads)
    train, held = corpus.train_tokens(), corpus.heldout_tokens()
    torch.manual_seed(r.seed)
    model = Transformer(r.cfg)
    # No weight decay on norm gains (1-D): decaying them towards 0 only fights the normalisation.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": r.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=r.lr, betas=(0.9, 0.95))
    batches = torch.Generator().manual_seed(r.seed + 1)  # data order independent of the model shape
    losses, start, cpu_start = [], time.perf_counter(), time.process_time()
    bar = tqdm(range(r.steps), desc=r.name, disable=not progress, mininterval=2)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, r)
        x, y = corpus.random_batch(train, r.B, r.T, batches)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    train_seconds = time.perf_counter() - start
    # CPU seconds too: wall time depends on what else the machine runs, CPU time much less so.
    cpu_seconds = time.process_time() - cpu_start

    # Evaluate what will be stored: round the weights to fp16 (fp16 -> fp32 is exact, so the
    # loaded checkpoint is bit-identical to this model) and compute in fp32.
    round_weights_(model, STORE_DTYPE).eval()
    meta = {
        "purpose": r.purpose,
        "aliases": list(r.aliases),
        "heldout_ppl": perplexity(model, held),
        "eval_protocol": {"T": EVAL_T, "B": EVAL_B, "max_windows": EVAL_WINDOWS,
                          "tokens": "corpus.heldout_tokens()", "dtype": "float32", "device": "cpu"},
        "heldout_ppl_full": perplexity(model, held, max_windows=None),
        "train_ppl": perplexity(model, train),  # same protocol on training text: overfitting check
        "unigram_ppl": unigram_perplexity(train, held),
        "final_train_loss_avg50": sum(losses[-50:]) / len(losses[-50:]),
        "training": {**{k: v for k, v in asdict(r).items()
                        if k not in ("name", "cfg", "aliases", "purpose")},
                     "optimizer": "AdamW(betas=(0.9, 0.95)), no decay on norms",
                     "schedule": "warmup + cosine", "tokens_seen": r.steps * r.B * r.T,
                     "dtype": "float32"},
        "corpus": {"file": "/".join(corpus.SNAPSHOT), "sha256": corpus.corpus_sha256(),
                   "train_bytes": len(train), "heldout_bytes": len(held),
                   "split": f"every {corpus.HELDOUT_EVERY}th block of {corpus.BLOCK} bytes held out"},
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "hardware": hardware(),
        "torch": torch.__version__,
        "loss_curve_every_50": [round(sum(losses[i:i + 50]) / len(losses[i:i + 50]), 4)
                                for i in range(0, len(losses), 50)],
    }
    save_checkpoint(model, out_dir / r.name, meta)
    print(f"{r.name}: held-out ppl {meta['heldout_ppl']:.3f} (full {meta['heldout_ppl_full']:.3f}, "
          f"train {meta['train_ppl']:.3f}, unigram {meta['unigram_ppl']:.2f}) in {train_seconds:.0f} s",
          flush=True)
    return meta


def write_readme(out_dir: Path, total_seconds: float | None = None) -> None:
    """data/checkpoints/README.md from the cards (so the table always matches the files)."""
    cards = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    order = {name: i for i, name in enumerate(RECIPES)}
    cards.sort(key=lambda c: order.get(c["name"], 99))
    rows = []
    for c in cards:
        cfg, t = c["config"], c["training"]
        rows.append(
            f"| {c['name']}{' (= ' + ', '.join(c['aliases']) + ')' if c['aliases'] else ''} "
            f"| L={cfg['L']} D={cfg['D']} N={cfg['N']} K={cfg['K']} H={cfg['H']} F={cfg['F']} "
            f"| {c['num_params'] / 1e6:.2f}M | {c['file_bytes'] / 1e6:.1f} MB "
            f"| {t['steps']} x {t['B']}x{t['T']} = {t['tokens_seen'] / 1e6:.2f}M "
            f"| {c['train_seconds'] / 60:.1f} min ({c['train_cpu_seconds'] / 60:.1f} CPU) "
            f"| **{c['heldout_ppl']:.3f}** | {c['heldout_ppl_full']:.3f} "
            f"| {c['train_ppl']:.3f} | {c['unigram_ppl']:.2f} |")
    total = sum(c["file_bytes"] for c in cards)
    cpu = sum(c["train_cpu_seconds"] for c in cards)
    when = (f"The whole run (`{RUN_COMMAND}`, evaluation included) took {total_seconds / 60:.0f}\n"
            f"minutes of wall time, which grows with whatever else the machine runs; training used "
            f"{cpu / 60:.0f} CPU-minutes\nin all, about {cpu / 120:.0f} minutes on two otherwise idle cores. "
            if total_seconds else "")
    hw = cards[0]["hardware"] if cards else "?"
    text = README_TEMPLATE.format(rows="\n".join(rows), total_mb=total / 1e6, when=when, hw=hw,
                                  torch=cards[0]["torch"] if cards else "?",
                                  windows=EVAL_WINDOWS, T=EVAL_T)
    (out_dir / "README.md").write_text(text)


RUN_COMMAND = "python -m lecture_lib.train --jobs 2 --threads 1"
README_TEMPLATE = """# Trained checkpoints

Small Llama-style decoders (`lecture_lib.model.Transformer`) trained from scratch on the CPU by
`python -m lecture_lib.train`, for the notebooks' quality measurements (perplexity under
quantization, speculative-sampling acceptance, MHA vs GQA vs MQA). Byte-level tokens (V = 256,
`lecture_lib.corpus.encode`), so there is no tokenizer file.

**Corpus.** `data/corpus/python_docs.txt.gz`: English documentation that ships with CPython 3.11
(the language-reference topics of `pydoc_data.topics` and the standard library's docstrings of
200+ characters), frozen as a snapshot because that text changes between Python versions. Every
10th block of 4096 bytes is held out (10%, spread over the whole text); training never sees it.

**Files.** `<name>.safetensors` holds the weights in fp16 (the config JSON is in its metadata);
`<name>.json` is the card: config, training settings, loss curve, wall time, hardware and the
perplexities below. Load with `lecture_lib.checkpoints.load_checkpoint("target")`.
All checkpoints together: {total_mb:.1f} MB.

**Training.** AdamW (betas 0.9/0.95, weight decay 0.1, none on norms), linear warm-up then cosine
decay to 10% of the peak rate, gradient clipping at 1.0, batches of 16 random windows of 256 bytes,
fp32 on the CPU. The three GQA-family models (target = K 2, gqa-k8, gqa-k1) share the architecture
(L 4, D 128, N 8, H 16, F 344), the seed, the exact sequence of batches and the number of steps:
only K differs. {when}Hardware: {hw}; PyTorch {torch}.

| checkpoint | config | params | file | steps x batch = tokens | train time (CPU time) | held-out ppl | held-out ppl (all) | train ppl | unigram ppl |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

**Perplexity** is per byte: exp of the mean next-byte cross-entropy. "held-out ppl" is the recorded
protocol, `checkpoints.perplexity(model, corpus.heldout_tokens())`: {windows} non-overlapping windows of {T}
scored bytes, spread evenly over the held-out text, fp32 on the CPU, on the weights as stored (fp16
rounded). `tests/test_checkpoints.py` recomputes it from the files. "(all)" scores every held-out
window; "train ppl" uses the same protocol on training text (a gap to held-out means overfitting);
"unigram" is the perplexity of byte frequencies counted on the training text: the no-context
baseline. Quality past 256 positions is untested (the models never saw longer windows).
"""


def _run(args) -> dict:
    recipe, out_dir, threads = args
    return train_one(recipe, out_dir, threads)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=list(RECIPES), help="train only these recipes")
    ap.add_argument("--steps", type=int, help="override every recipe's number of steps (quick tries)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default data/checkpoints)")
    ap.add_argument("--jobs", type=int, default=1, help="recipes trained at once, in separate processes")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per job")
    args = ap.parse_args(argv)
    out_dir = args.out or checkpoint_dir()
    recipes = [RECIPES[n] for n in (args.only or RECIPES)]
    if args.steps:
        recipes = [replace(r, steps=args.steps, warmup=min(r.warmup, args.steps // 5)) for r in recipes]
    print(f"Corpus: {corpus.describe()}\nTraining {', '.join(r.name for r in recipes)} into {out_dir}")
    start = time.perf_counter()
    if args.jobs > 1:
        # On a small CPU, two one-thread processes beat one two-thread process: the threads of
        # one matmul wait for each other, and on a shared (virtual) CPU one of them is often late.
        # Longest first, so the short draft fills in beside a long one.
        recipes.sort(key=lambda r: -r.steps * sum(p.numel() for p in Transformer(r.cfg).parameters()))
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            list(pool.map(_run, [(r, out_dir, args.threads or 1) for r in recipes]))
    else:
        for r in recipes:
            train_one(r, out_dir, args.threads)
    total = time.perf_counter() - start
    print(f"Done in {total / 60:.1f} min.")
    if out_dir == checkpoint_dir() and not args.steps and not args.only:
        write_readme(out_dir, total)


if __name__ == "__main__":
    main()
