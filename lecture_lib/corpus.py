"""The training text, a byte-level tokenizer, and batches of random windows.

The text is English documentation that ships with CPython, so it needs no download: the language
reference topics behind ``help("assert")`` (``pydoc_data.topics``) and the longer docstrings of
the standard library. Both change between Python versions, so the text is built once and frozen
as a snapshot, ``data/corpus/python_docs.txt.gz``; training and every held-out perplexity read
that file, never the running Python, so the recorded numbers reproduce on any machine.

Tokens are UTF-8 bytes (V = 256): no tokenizer to download or train, and every string encodes.
"""
from __future__ import annotations

import ast
import gzip
import hashlib
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path

import torch

from .paths import data_path

V = 256  # byte vocabulary
SNAPSHOT = ("corpus", "python_docs.txt.gz")
BLOCK = 4096  # the split works on blocks of this many bytes...
HELDOUT_EVERY = 10  # ...and holds out every 10th one (10% of the text, spread over all of it)
MIN_DOCSTRING = 200  # shorter docstrings are mostly one-line summaries: little English in them

# Standard-library folders left out: tests and demos (code, not prose), vendored or generated code.
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip", "pydoc_data",
              "site-packages", "dist-packages", "encodings", "__pycache__"}


# ---------------------------------------------------------------------------------------------
# Tokenizer


def encode(text: str) -> torch.Tensor:
    """UTF-8 bytes of ``text`` as a LongTensor [T] of token ids in 0..255."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def decode(tokens) -> str:
    """The string that byte tokens spell; a multi-byte character cut in half becomes U+FFFD."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.flatten().tolist()
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# Building the snapshot (once, by the maintainer; the result is committed)


def _stdlib_docstrings() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if not set(p.relative_to(root).parts[:-1]) & _SKIP_DIRS
                   and not p.relative_to(root).parts[0].startswith("config-"))
    docs, seen = [], set()
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_DOCSTRING and doc not in seen:
                    seen.add(doc)
                    docs.append(doc.strip())
    return docs


def build_corpus_text() -> str:
    """The corpus as this Python would build it (differs between Python versions)."""
    from pydoc_data.topics import topics

    parts = [topics[key].strip() for key in sorted(topics)] + _stdlib_docstrings()
    return "\n\n".join(parts) + "\n"


def write_snapshot(path: Path | None = None) -> Path:
    """Freeze ``build_corpus_text()`` into the gzip snapshot (mtime 0: same bytes every time)."""
    path = Path(path) if path is not None else data_path(*SNAPSHOT)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                compresslevel=9) as f:
        f.write(build_corpus_text().encode("utf-8"))
    corpus_bytes.cache_clear()
    return path


# ---------------------------------------------------------------------------------------------
# Reading it


@lru_cache(maxsize=1)
def corpus_bytes() -> bytes:
    path = data_path(*SNAPSHOT)
    if not path.is_file():
        raise FileNotFoundError(
            f"The corpus snapshot {path} is missing. It is part of the repository; restore it "
            f"with git, or rebuild it (different text on another Python) with "
            f"`python -m lecture_lib.corpus --rebuild`."
        )
    with gzip.open(path, "rb") as f:
        return f.read()


def corpus_text() -> str:
    return corpus_bytes().decode("utf-8")


def corpus_sha256() -> str:
    """Fingerprint of the text, recorded beside every checkpoint."""
    return hashlib.sha256(corpus_bytes()).hexdigest()


@lru_cache(maxsize=1)
def _split() -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.frombuffer(bytearray(corpus_bytes()), dtype=torch.uint8).long()
    block = torch.arange(len(data)) // BLOCK
    held = block % HELDOUT_EVERY == HELDOUT_EVERY - 1
    return data[~held], data[held]


def train_tokens() -> torch.Tensor:
    """Bytes of the 9 blocks in 10 that training sees, concatenated: LongTensor [n]."""
    return _split()[0]


def heldout_tokens() -> torch.Tensor:
    """Bytes of every 10th block of 4096 bytes, concatenated: never trained on."""
    return _split()[1]


def heldout_text() -> str:
    """The held-out bytes as text, for models with their own tokenizer. A 4096-byte block boundary
    can split a multi-byte character; such bytes decode to U+FFFD (rare: the text is English)."""
    return bytes(heldout_tokens().to(torch.uint8).tolist()).decode("utf-8", errors="replace")


def random_batch(tokens: torch.Tensor, B: int, T: int, generator: torch.Generator | None = None):
    """B random windows of T + 1 tokens: inputs x [B T] and next-token targets y [B T]."""
    starts = torch.randint(0, len(tokens) - T - 1, (B,), generator=generator)
    windows = torch.stack([tokens[s:s + T + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def describe() -> str:
    train, held = _split()
    return (f"{len(corpus_bytes()):,} bytes ({len(train):,} train, {len(held):,} held out), "
            f"sha256 {corpus_sha256()[:16]}...")


if __name__ == "__main__":
    if "--rebuild" in sys.argv:
        print(f"Wrote {write_snapshot()} from Python {sys.version.split()[0]}.")
    print(describe())
