"""Facts about a real model, measured and recorded in ``data/reference/pretrained.json``:
held-out perplexity (per token and per byte) and a greedy chat reply.

    python -m lecture_lib.measure.pretrained_facts [--model smollm2-135m-instruct]

The held-out text is the byte-level checkpoints' held-out split (``corpus.heldout_text``), so the
per-byte perplexity sets beside theirs. It is held out from *our* training only: SmolLM2's
pretraining data may well include Python's documentation.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform

import torch

from .. import corpus, pretrained
from ..paths import data_path
from .quality import text_perplexity

PROTOCOL = {"T": 256, "B": 8, "windows": 32}  # 8,192 predicted tokens: about 15 s on a 2-core CPU
CHAT_PROMPT = "What is the capital of France? Answer in one sentence."


def measure(name: str) -> dict:
    p = pretrained.load(name, device="cpu", dtype=torch.float32)
    tokens = torch.tensor(p.tokenizer.encode(corpus.heldout_text()))
    heldout = text_perplexity(p.model, tokens, p.tokenizer.decode, T=PROTOCOL["T"], B=PROTOCOL["B"],
                              max_windows=PROTOCOL["windows"])
    source = pretrained.sources.origin(p.folder).get("source", "local")
    return {"origin": p.origin, "source": source,
            "heldout": {**PROTOCOL, **heldout, "text_tokens": len(tokens)},
            "chat": {"prompt": CHAT_PROMPT, "greedy_reply": p.chat(CHAT_PROMPT, max_new_tokens=40)},
            "measured": {"date": datetime.date.today().isoformat(), "machine": platform.machine(),
                         "torch": torch.__version__, "dtype": "float32"}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args(argv)
    path = data_path("reference", "pretrained.json")
    record = json.loads(path.read_text()) if path.exists() else {}
    record[args.model] = measure(args.model)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record[args.model], indent=2))


if __name__ == "__main__":
    main()
