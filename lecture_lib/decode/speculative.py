"""Speculative sampling: a cheap draft proposes k tokens, the target checks them in one forward.

Leviathan et al. (2211.17192, Algorithm 1) and Chen et al. (2302.01318, Algorithm 2). One round:

1. the draft proposes d_1 .. d_k autoregressively, each from its distribution p_i;
2. the target scores [cur, d_1 .. d_k] in **one** forward: k + 1 distributions q_1 .. q_{k+1}.
   In the memory-bound regime that costs about one decode step, whatever k (the weights are
   read once for all k + 1 tokens);
3. ``verify``: d_i is accepted with probability min(1, q_i(d_i) / p_i(d_i)); at the first
   rejection the round ends with a token from normalize(max(q_i - p_i, 0)); if all k are
   accepted, a bonus token comes from q_{k+1}.

Every output token is then distributed exactly as the target alone would sample it (the proof:
P(x) = min(p(x), q(x)) + (1 - sum_y min(p(y), q(y))) * max(q(x) - p(x), 0) / Z = q(x), since
Z = sum_y max(q(y) - p(y), 0) = 1 - sum_y min(p(y), q(y))). Greedy decoding (temperature 0) is the
special case of one-hot distributions: a draft token is kept iff it is the target's argmax, and
the output equals the target's own greedy tokens.

This module is the readable version, batch 1, on the plain KV cache: rolling a cache back is
nothing but writing the next tokens at the right positions, since a cache read returns the
prefix up to the positions written (``cache_protocol``). Each model keeps a list of the tokens
whose keys its cache holds, and a round feeds it only what differs from that list.

Drafts: any ``Transformer`` with the target's vocabulary (``ModelDraft``: a smaller model of the
family, or ``layer_skip_draft``: the target's own first layers with its final norm and head), or
n-gram prompt lookup (``NGramDraft``: proposes what followed the last n tokens earlier in the
text, with no model at all).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..cache.plain import KVCache
from ..model import Transformer
from .result import Generation
from .sampling import check_sampling, top_k_filter
from .stopping import check_token_id


# ---------------------------------------------------------------------------------------------
# Distributions and the one random decision


def distribution(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None) -> torch.Tensor:
    """Next-token probabilities [... V] (float64) from logits: softmax(logits / temperature)
    over the top_k best, or one-hot on the argmax for temperature 0 (greedy)."""
    logits = logits.double()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).double()
    return torch.softmax(top_k_filter(logits / temperature, top_k), dim=-1)


def sampler(generator: torch.Generator | None = None) -> Callable[[torch.Tensor], int]:
    """``choose(probs [V]) -> token``: a draw from ``probs``. Every random decision of speculative
    sampling goes through one such function (drafting, accept/reject, the residual, the bonus),
    so that a test can replace it and walk every branch exactly."""
    def choose(probs: torch.Tensor) -> int:
        return int(torch.multinomial(probs.float().cpu(), 1, generator=generator))
    return choose


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """normalize(max(q - p, 0)): where the target wants more probability than the draft gave."""
    r = (q - p).clamp(min=0)
    total = r.sum()
    # total == 0 only when q == p, and then a rejection has probability 0: any distribution will do
    return r / total if total > 0 else q


def verify(drafted: list[int], p: torch.Tensor, q: torch.Tensor, choose) -> tuple[int, int, list[float]]:
    """The accept/reject step of one round.

    drafted: d_1 .. d_k; p: [k V] the draft's distributions they were drawn from; q: [k+1 V] the
    target's at the same positions plus one. Returns (accepted a in 0..k, the next token: the
    residual's draw at the first rejection, or the bonus from q_{k+1}, and for each position
    checked the probability 1 - TV(p_i, q_i) that it is accepted, for the identity test).
    """
    accept_probs = []
    for i, d in enumerate(drafted):
        accept_probs.append(float(torch.minimum(p[i], q[i]).sum()))
        ratio = float(q[i, d] / p[i, d]) if p[i, d] > 0 else 1.0
        keep = 1 if ratio >= 1 else choose(torch.tensor([1 - ratio, ratio], dtype=torch.float64))
        if not keep:
            return i, choose(residual(p[i], q[i])), accept_probs
    return len(drafted), choose(q[len(drafted)]), accept_probs


class _Fork(BaseException):  # BaseException: no ``except Exception`` on the way may swallow it
    def __init__(self, options):
        self.options = options


def enumerate_outcomes(run: Callable[[Callable[[torch.Tensor], int]], object]) -> dict:
    """Every outcome of ``run(choose)`` with its exact probability: ``run`` makes all its random
    decisions through ``choose(probs)``, and each branch of each decision is replayed from the
    start (so ``run`` must be deterministic given its choices). For proving exactness on tiny
    examples: the probabilities are products of the ``probs`` values, in float64."""
    leaves: dict = {}

    def explore(path):
        state = {"i": 0, "prob": 1.0}

        def choose(probs):
            i = state["i"]
            if i == len(path):
                raise _Fork([c for c in range(len(probs)) if probs[c] > 0])
            state["i"], state["prob"] = i + 1, state["prob"] * float(probs[path[i]])
            return path[i]

        try:
            outcome = run(choose)
        except _Fork as fork:
            for c in fork.options:
                explore(path + [c])
            return
        leaves[outcome] = leaves.get(outcome, 0.0) + state["prob"]

    explore([])
    return leaves


# ---------------------------------------------------------------------------------------------
# Models with a cache that rolls back


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class CachedModel:
    """A Transformer, its KV cache, and the tokens the cache holds. ``logits(seq)`` returns the
    logits for the positions of ``seq`` not already cached (it feeds only those): after a
    rejection the cache's tail is simply overwritten by the next call."""

    def __init__(self, model: Transformer, S: int):
        self.model, self.cache, self.cached = model, KVCache.for_model(model, 1, S), []
        self.calls = 0

    def logits(self, seq: list[int]) -> torch.Tensor:
        n = min(_common_prefix(self.cached, seq), len(seq) - 1)  # always feed at least one token
        device = self.model.tok_emb.weight.device
        x = torch.tensor([seq[n:]], device=device)
        with torch.inference_mode():
            out = self.model(x, self.cache, n)[0]  # [len(seq) - n, V]
        self.cached = list(seq)
        self.calls += 1
        return out


class ModelDraft:
    """A draft model: proposes k tokens, one forward each (the first also feeds what its cache lacks)."""

    def __init__(self, model: Transformer):
        self.model = model
        self.runner: CachedModel | None = None

    @property
    def V(self) -> int:
        return self.model.cfg.V

    def start(self, S: int) -> None:
        self.runner = CachedModel(self.model, S)

    def propose(self, history: list[int], k: int, temperature, top_k, choose) -> tuple[list[int], torch.Tensor]:
        tokens, probs, seq = [], [], list(history)
        for _ in range(k):
            p = distribution(self.runner.logits(seq)[-1], temperature, top_k)
            d = choose(p)
            tokens.append(d), probs.append(p), seq.append(d)
        return tokens, torch.stack(probs)

    @property
    def calls(self) -> int:
        return self.runner.calls if self.runner else 0


class NGramDraft:
    """Prompt lookup: find the latest earlier occurrence of the last ``n`` tokens (n from ``max_n``
    down to 1) and propose the k tokens that followed it, with probability 1 (a one-hot p). Costs
    no model call; works where the output repeats its input (code edits, summaries, retrieval).
    Where nothing matches it proposes the last token again, which the target will mostly reject."""

    def __init__(self, V: int, max_n: int = 3):
        self.V, self.max_n, self.calls = V, max_n, 0

    def start(self, S: int) -> None:
        pass

    def propose(self, history: list[int], k: int, temperature, top_k, choose) -> tuple[list[int], torch.Tensor]:
        tokens = None
        for n in range(min(self.max_n, len(history) - 1), 0, -1):
            tail = history[-n:]
            for start in range(len(history) - n - 1, -1, -1):
                if history[start:start + n] == tail:
                    tokens = history[start + n:start + n + k]
                    break
            if tokens:
                break
        tokens = (tokens or []) + [history[-1]] * k
        tokens = tokens[:k]
        return tokens, torch.nn.functional.one_hot(torch.tensor(tokens), self.V).double()


def layer_skip_draft(target: Transformer, n_layers: int) -> Transformer:
    """The target's first ``n_layers`` layers, then its final norm and output layer, as a model of
    its own that shares the target's weights (self-speculative decoding: no second model to train
    or store; the draft's quality is how well the early layers already predict the next token)."""
    if not 1 <= n_layers < target.cfg.L:
        raise ValueError(f"n_layers must be in 1 .. L-1 = {target.cfg.L - 1}, got {n_layers}.")
    with torch.device("meta"):
        draft = Transformer(target.cfg.replace(L=n_layers, name=f"{target.cfg.name}-first{n_layers}"))
    draft.tok_emb, draft.norm, draft.lm_head = target.tok_emb, target.norm, target.lm_head
    draft.layers = nn.ModuleList(target.layers[:n_layers])
    draft.rope_cos, draft.rope_sin = target.rope_cos, target.rope_sin
    return draft.eval()


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class SpeculativeGeneration:
    """A ``Generation`` plus what speculation did: per round, how many drafts were accepted."""

    generation: Generation
    k: int
    accepted: list[int] = field(default_factory=list)         # per round (target call), 0..k
    accept_probs: list[float] = field(default_factory=list)   # 1 - TV(p, q) of every checked position
    accept_flags: list[int] = field(default_factory=list)     # 1 if that position was accepted
    target_calls: int = 0   # verification forwards (the prefill not counted)
    draft_calls: int = 0    # draft forwards

    @property
    def tokens(self) -> torch.Tensor:
        return self.generation.tokens

    @property
    def acceptance_rate(self) -> float:
        """alpha: the fraction of checked draft tokens that were accepted (a rejection ends a round,
        so the positions after it are never checked and do not count)."""
        return sum(self.accept_flags) / max(len(self.accept_flags), 1)

    @property
    def tokens_per_call(self) -> float:
        """New tokens per verification forward: the measured E = (1 - alpha^(k+1)) / (1 - alpha)."""
        return sum(a + 1 for a in self.accepted) / max(len(self.accepted), 1)


def expected_tokens_per_call(alpha: float, k: int) -> float:
    """E = (1 - alpha^(k+1)) / (1 - alpha): the expected tokens a round yields when each draft token
    is accepted independently with probability alpha (Leviathan et al., eq. 1); k + 1 at alpha = 1."""
    return k + 1.0 if alpha >= 1 else (1 - alpha ** (k + 1)) / (1 - alpha)


def expected_speedup(alpha: float, k: int, c: float) -> float:
    """S = E / (k c + 1): tokens per round over the round's cost in target steps, where c is a
    draft step's time over a target step's (and verifying k + 1 tokens costs one target step)."""
    return expected_tokens_per_call(alpha, k) / (k * c + 1)


def check_pair(target: Transformer, draft, k: int, prompt: torch.Tensor, max_new_tokens: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k (tokens drafted per round) must be a positive integer, got {k!r}.")
    if draft.V != target.cfg.V:
        raise ValueError(f"The draft's vocabulary (V = {draft.V}) differs from the target's (V = {target.cfg.V}): "
                         "speculative sampling compares their distributions token by token, so both must use "
                         "the same tokenizer.")
    if isinstance(draft, ModelDraft):
        tw, dw = target.tok_emb.weight, draft.model.tok_emb.weight
        if tw.device != dw.device or tw.dtype != dw.dtype:
            raise ValueError(f"Target and draft must share device and dtype: target {tw.device}/{tw.dtype}, "
                             f"draft {dw.device}/{dw.dtype}. Move one with .to(...).")
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[0] != 1:
        shape = tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__
        raise ValueError(f"speculative_generate takes one prompt, a [1 T] tensor; got {shape}.")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}.")
    need = prompt.shape[1] + max_new_tokens + k + 1
    models = [target] + ([draft.model] if isinstance(draft, ModelDraft) else [])
    for m in models:
        if need > m.cfg.S_max:
            raise ValueError(f"The prompt ({prompt.shape[1]}) + max_new_tokens ({max_new_tokens}) + k + 1 "
                             f"({k + 1}, the drafted tokens the last round may check) need {need} positions, "
                             f"past {m.cfg.name}'s S_max = {m.cfg.S_max}. Shorten them, or lower k.")


def speculative_generate(target: Transformer, draft, prompt: torch.Tensor, max_new_tokens: int, *, k: int = 4,
                         temperature: float = 0.0, top_k: int | None = None,
                         generator: torch.Generator | None = None, eos_id: int | None = None,
                         choose: Callable[[torch.Tensor], int] | None = None) -> SpeculativeGeneration:
    """Speculative sampling of up to ``max_new_tokens`` tokens after ``prompt`` ([1 T]).

    ``draft``: a ``ModelDraft``, an ``NGramDraft``, or a ``Transformer`` (wrapped in a
    ``ModelDraft``). Greedy at temperature 0, else sampled at ``temperature`` over ``top_k``;
    every output token has the target's distribution. Stops after ``eos_id`` (kept) or at the
    limit; a round's tokens past either are dropped.
    """
    if isinstance(draft, Transformer):
        draft = ModelDraft(draft)
    check_pair(target, draft, k, prompt, max_new_tokens)
    check_sampling(temperature, top_k)
    check_token_id("eos_id", eos_id, target.cfg.V)
    choose = choose or sampler(generator)
    S = prompt.shape[1] + max_new_tokens + k + 1
    runner = CachedModel(target, S)
    draft.start(S)
    start = time.perf_counter()
    history = prompt[0].tolist()
    out = SpeculativeGeneration(Generation(torch.empty(1, 0, dtype=torch.long), prompt.shape[1]), k)
    new, times = [], []

    def emit(tokens):
        for t in tokens:
            if len(new) < max_new_tokens and not (new and new[-1] == eos_id):
                new.append(t)
                times.append(time.perf_counter() - start)

    emit([choose(distribution(runner.logits(history)[-1], temperature, top_k))])  # prefill: the first token
    history.append(new[-1])
    runner.calls = 0  # count verification forwards only
    while len(new) < max_new_tokens and new[-1] != eos_id:
        drafted, p = draft.propose(history, k, temperature, top_k, choose)
        q = distribution(runner.logits(history + drafted)[-(k + 1):], temperature, top_k)
        a, nxt, probs = verify(drafted, p.to(q.device), q, choose)
        out.accepted.append(a)
        out.accept_probs += probs
        out.accept_flags += [1] * a + ([0] if a < k else [])
        round_tokens = drafted[:a] + [nxt]
        emit(round_tokens)
        history += round_tokens
    out.target_calls, out.draft_calls = runner.calls, draft.calls
    finished = "stop" if eos_id is not None and new[-1] == eos_id else "length"
    out.generation = Generation(torch.tensor([new]), prompt.shape[1], times, lengths=[len(new)],
                                finish_reasons=[finished])
    return out
