"""Text <-> token ids for a real model, and its chat template, on the ``tokenizers`` package.

Two sources give the same tokenizer: a Hugging Face ``tokenizer.json`` (what the hub ships), or a
GGUF header's vocabulary and merges (what llama.cpp ships). For GGUF we rebuild the byte-level BPE
that the header describes: ``tokenizer.ggml.model = "gpt2"`` is GPT-2's byte-level BPE, and the
pre-tokenizer name (``tokenizer.ggml.pre``) says how text is split before merging, exactly as
llama.cpp's ``llama-vocab.cpp`` does for that name.
"""
from __future__ import annotations

import json
from pathlib import Path

# GGUF token types (llama.cpp's llama_token_type): 3 = control tokens such as <|im_end|>.
_CONTROL = 3
# Pre-tokenizers by GGUF name: "smollm" (also starcoder, refact, ...) splits every digit apart,
# then applies GPT-2's regex; "gpt2" applies the regex only.
_DIGITS_FIRST = ("smollm", "starcoder", "refact", "codeshell", "exaone", "minerva")
_GPT2_ONLY = ("gpt2", "default")


class Tokenizer:
    """encode / decode / chat for one model. ``eos_ids`` are the ids that end a reply."""

    def __init__(self, tok, chat_template: str | None, bos_id: int | None, eos_ids: list[int], source: str):
        self.tok, self.chat_template, self.bos_id, self.eos_ids, self.source = tok, chat_template, bos_id, eos_ids, source

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return self.tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def token(self, token_id: int) -> str:
        return self.tok.id_to_token(token_id)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for a conversation ([{"role": "user", "content": "..."}, ...]), rendered
        from the model's own Jinja template the way transformers renders it."""
        if not self.chat_template:
            raise ValueError(f"This tokenizer ({self.source}) has no chat template: it is a base model, "
                             "so prompt it with plain text through encode().")
        for m in messages:
            if not isinstance(m, dict) or not {"role", "content"} <= set(m):
                raise ValueError(f"Each message must be a dict with 'role' and 'content', got {m!r}.")
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        bos = self.token(self.bos_id) if self.bos_id is not None else ""
        return env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos,
            eos_token=self.token(self.eos_ids[0]) if self.eos_ids else "")

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation's prompt, ending where the assistant's reply begins."""
        return self.encode(self.apply_chat_template(messages, add_generation_prompt=True))

    def __repr__(self):
        return f"Tokenizer(V={self.vocab_size}, {self.source})"


def from_gguf_metadata(meta: dict) -> Tokenizer:
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer
    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise ValueError(f"GGUF tokenizer model {kind!r} is not supported (byte-level BPE, 'gpt2', is).")
    if pre not in _DIGITS_FIRST + _GPT2_ONLY:
        raise ValueError(f"GGUF pre-tokenizer {pre!r} is not implemented (known: "
                         f"{', '.join(_DIGITS_FIRST + _GPT2_ONLY)}): its text splitting would differ.")
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tok = HFTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                 fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=bool(meta.get("tokenizer.ggml.add_space_prefix")),
                                          use_regex=True)
    if pre in _DIGITS_FIRST:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(tokens, types) if k == _CONTROL])
    eos = meta.get("tokenizer.ggml.eos_token_id")
    return Tokenizer(tok, meta.get("tokenizer.chat_template"), meta.get("tokenizer.ggml.bos_token_id"),
                     [] if eos is None else [eos], source=f"GGUF vocabulary ({len(tokens)} tokens, pre={pre!r})")


def from_hf_folder(folder) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer
    folder = Path(folder)
    tok = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    config = json.loads((folder / "tokenizer_config.json").read_text()) if (folder / "tokenizer_config.json").exists() else {}
    template = config.get("chat_template")
    if template is None and (folder / "chat_template.jinja").exists():
        template = (folder / "chat_template.jinja").read_text()

    def token_id(name):
        value = config.get(name)
        value = value.get("content") if isinstance(value, dict) else value
        return None if value is None else tok.token_to_id(value)

    eos = token_id("eos_token")
    return Tokenizer(tok, template, token_id("bos_token"), [] if eos is None else [eos],
                     source=f"Hugging Face tokenizer.json ({folder.name})")


class ByteTokenizer:
    """The series' trained checkpoints are byte-level (V = 256: a token is a UTF-8 byte), so
    their tokenizer is UTF-8 itself. The same interface as ``Tokenizer``; no chat template and no
    end-of-sequence token (those models were trained on raw text)."""

    chat_template = None
    bos_id = None
    eos_ids: list[int] = []
    source = "UTF-8 bytes (the series' byte-level checkpoints)"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return bytes(ids).decode("utf-8", errors="replace")

    def encode_chat(self, messages: list[dict]) -> list[int]:
        raise ValueError("This model is a byte-level base model without a chat template: use /v1/completions "
                         "with a plain-text prompt, or serve a chat model (--model smollm2-135m-instruct).")


class IdTokenizer:
    """For random-weight models (benchmarks), which have no vocabulary: prompts are token ids,
    and each generated id reads back as a placeholder word " t<id>" so that a stream of text
    still carries one chunk per token."""

    chat_template = None
    bos_id = None
    eos_ids: list[int] = []

    def __init__(self, V: int):
        self.vocab_size = V
        self.source = f"token ids (a random-weight model, V = {V})"

    def encode(self, text: str) -> list[int]:
        raise ValueError("This random-weight model has no tokenizer: send the prompt as a list of token ids.")

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return "".join(f" t{i}" for i in ids)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        raise ValueError("This random-weight model has no chat template: use /v1/completions with token ids.")
