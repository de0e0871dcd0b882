"""Speculative sampling on the fast path: static caches, one CUDA graph per round, no host sync
per round.

``speculative`` is the readable version (Python lists, one model call at a time, the accept/reject
decision on the host). This one runs the same algorithm at batch 1 with every piece on the device:

- both models keep a ``StaticKVCache``; rolling a cache back to the accepted prefix is nothing but
  moving the position (slots past it are masked, and overwritten by the next round);
- a whole round is one function of fixed shapes, captured once as a CUDA graph and replayed:
  the draft's k steps, the target's forward over the k + 1 tokens [cur, d_1 .. d_k], the
  accept/reject decision, the residual or bonus draw, writing the round's tokens to an output
  buffer and advancing the state (position, current token). The host only replays it;
- the draft's first step of a round feeds two tokens, [prev, cur] at positions P - 1, P, so that
  the one token a round may leave out of the draft's cache (d_k, when all k were accepted and the
  target's bonus came after it) is written without a branch. When it was already there, its keys
  and values are written again, the same up to rounding;
- the host reads the output length only every few rounds: it knows a round yields at most k + 1
  tokens, so it replays ceil(remaining / (k + 1)) rounds before it looks again, and never runs a
  round past the limit's.

    spec = FastSpeculativeGenerator(target, draft, k=4, S_max=prompt_len + new_tokens + 64)
    out = spec.generate(prompt, new_tokens)          # a SpeculativeGeneration
    out.tokens, out.acceptance_rate, out.tokens_per_call, out.generation.decode_tokens_per_s

``draft``: a ``Transformer`` with the target's vocabulary (a smaller model, or
``layer_skip_draft(target, n)``). (Prompt lookup, ``NGramDraft``, proposes on the host from the
token history, so it needs the tokens on the host every round: it stays on the readable path.)
Greedy at temperature 0, else sampled (temperature, top-k); both are fixed per generator, since
the graph is recorded for one of them. On a CPU the same round function runs eagerly (tests).

``compile``: the two models' forwards through ``torch.compile`` (projections fused, no CUDA
graphs of its own) before the round is captured, so that the graph replays Inductor's fused
kernels instead of the dozens of small kernels an eager layer launches: on a GPU those cost
tens of microseconds a layer even inside a graph, which makes a small draft cost far more than
its bytes. The draft is compiled for its two shapes ([1 2] and [1 1]), the target with a dynamic
token count, so ``set_k`` changes k without compiling the target again. A string names the
backend (``"aot_eager"``: the tests' quick check that the forwards trace whole).

``simulate_alpha`` (benchmarks only): accept each drafted token with probability alpha instead of
comparing the two models (flags drawn on the host from the seed before each generation), for random-weight models of real shapes whose own acceptance means
nothing; the round still does all its work (draft steps, verification, the draws), so its time
is real, but the tokens are then not the target's. Never use it for output.
"""
from __future__ import annotations

import contextlib
import math
import time

import torch

from ..cache.static import StaticKVCache
from ..devices import synchronize
from ..model import Transformer
from .fast import fuse_projections_
from .plain import check_ids
from .result import Generation
from .sampling import check_sampling, top_k_filter
from .speculative import SpeculativeGeneration


def _draw(probs: torch.Tensor) -> torch.Tensor:
    """One token per row from probs [.. V], on the device and without a host sync: the argmax of
    probs / Exponential(1) noise is distributed as probs (the exponential-race trick)."""
    return (probs / torch.empty_like(probs).exponential_()).argmax(-1)


class FastSpeculativeGenerator:
    """Batch-1 speculative decoding of ``target`` with a model ``draft``, k tokens a round.

    ``S_max``: both static caches' length; it must hold the prompt, the new tokens and one round
    more (k + 1). ``graphs``: capture the round as a CUDA graph (default: on CUDA).
    ``temperature``/``top_k``: the sampling both models use (0: greedy).
    """

    def __init__(self, target: Transformer, draft: Transformer, k: int = 4, S_max: int | None = None, *,
                 temperature: float = 0.0, top_k: int | None = None, graphs: bool | None = None,
                 simulate_alpha: float | None = None, compile: bool | str = False):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k (tokens drafted per round) must be a positive integer, got {k!r}.")
        if not isinstance(draft, Transformer):
            raise TypeError(f"The fast path takes a Transformer as the draft (a smaller model, or "
                            f"layer_skip_draft(target, n)), got {type(draft).__name__}. Prompt lookup "
                            f"(NGramDraft) runs on the readable path: decode.speculative_generate.")
        if draft.cfg.V != target.cfg.V:
            raise ValueError(f"The draft's vocabulary (V = {draft.cfg.V}) differs from the target's "
                             f"(V = {target.cfg.V}): both must use the same tokenizer.")
        tw, dw = target.norm.weight, draft.norm.weight
        if tw.device != dw.device or tw.dtype != dw.dtype:
            raise ValueError(f"Target and draft must share device and dtype: target {tw.device}/{tw.dtype}, "
                             f"draft {dw.device}/{dw.dtype}. Move one with .to(...).")
        check_sampling(temperature, top_k)
        if simulate_alpha is not None and not 0 <= simulate_alpha <= 1:
            raise ValueError(f"simulate_alpha must be a probability in [0, 1], got {simulate_alpha}.")
        self.target, self.draft, self.k = target.eval(), draft.eval(), k
        self.temperature, self.top_k, self.simulate_alpha = temperature, top_k, simulate_alpha
        self.device = tw.device
        S_max = S_max or min(target.cfg.S_max, draft.cfg.S_max)
        self.t_cache = StaticKVCache(target.cfg, 1, S_max, device=self.device, dtype=tw.dtype)
        self.S_max = S_max
        dev, long = self.device, torch.long
        # The round's state, at fixed addresses: read and advanced by the round itself.
        self._prev = torch.zeros(1, dtype=long, device=dev)  # the token at position P - 1
        self._cur = torch.zeros(1, dtype=long, device=dev)   # the token at P, in neither cache yet
        self._P = torch.zeros(1, dtype=long, device=dev)
        self._out_len = torch.zeros(1, dtype=long, device=dev)
        self._round = torch.zeros(1, dtype=long, device=dev)
        self._accepted = torch.zeros(S_max + 1, dtype=long, device=dev)      # per round, 0..k
        self.graphs = (self.device.type == "cuda") if graphs is None else graphs
        self._graph = None
        self.capture_seconds: float | None = None
        self._target_fwd = self._target_forward
        self._backend = (compile if isinstance(compile, str) else "inductor") if compile else None
        if self._backend:
            fuse_projections_(self.target)
            if self._backend == "inductor" and self.device.type == "cuda":
                from .fast import _set_inductor_flags
                _set_inductor_flags()
            self._target_fwd = torch.compile(self._target_forward, fullgraph=True, dynamic=True, backend=self._backend)
        self.set_draft(draft)
        self.set_k(k)

    def set_draft(self, draft: Transformer) -> None:
        """Use another draft from now on (same vocabulary, device and dtype): a new draft cache,
        the draft's forward compiled again when compiling; the target's compiled forward is kept,
        so a benchmark can try several drafts against one compiled target."""
        if not isinstance(draft, Transformer):
            raise TypeError(f"The fast path takes a Transformer as the draft, got {type(draft).__name__}.")
        tw, dw = self.target.norm.weight, draft.norm.weight
        if draft.cfg.V != self.target.cfg.V:
            raise ValueError(f"The draft's vocabulary (V = {draft.cfg.V}) differs from the target's "
                             f"(V = {self.target.cfg.V}): both must use the same tokenizer.")
        if tw.device != dw.device or tw.dtype != dw.dtype:
            raise ValueError(f"Target and draft must share device and dtype: target {tw.device}/{tw.dtype}, "
                             f"draft {dw.device}/{dw.dtype}. Move one with .to(...).")
        self.draft = draft.eval()
        self.d_cache = StaticKVCache(draft.cfg, 1, self.S_max, device=self.device, dtype=dw.dtype)
        self._draft_fwd = self._draft_forward
        if self._backend:
            fuse_projections_(self.draft)
            self._draft_fwd = torch.compile(self._draft_forward, fullgraph=True, dynamic=False, backend=self._backend)
        self._graph = None

    def set_k(self, k: int) -> None:
        """Draft k tokens a round from now on (the caches and compiled forwards are kept; the
        round's graph is recorded again at the next ``generate``)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k (tokens drafted per round) must be a positive integer, got {k!r}.")
        dev = self.device
        self.k = k
        self._out = torch.zeros(self.S_max + k + 1, dtype=torch.long, device=dev)  # new tokens, k + 1 of slack
        self._overlap = torch.zeros(self.S_max + 1, k, dtype=torch.float32, device=dev)  # 1 - TV per position
        self._arange = torch.arange(k + 1, device=dev)
        # simulate_alpha: every round's k accept/reject flags, drawn on the host before a generation
        # (seeded, the same for every k's first k columns) and read by the round at a fixed address.
        self._sim_accept = torch.zeros(self.S_max + 1, k, dtype=torch.bool, device=dev)
        self._graph = None

    # -- the two models' forwards (compiled when asked) ----------------------------------------------

    def _draft_forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.draft(x, self.d_cache, pos)[0, -1]  # [V]: the logits after the last token

    def _target_forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.target(x, self.t_cache, pos)[0]  # [T V]

    # -- one round, all on the device ----------------------------------------------------------------

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(top_k_filter(logits.float() / self.temperature, self.top_k), dim=-1)

    @staticmethod
    def _residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """normalize(max(q - p, 0)) [V], without a host sync (``speculative.residual``'s twin)."""
        r = (q - p).clamp(min=0)
        total = r.sum()
        # total == 0 only when q == p, and then a rejection has probability 0: any distribution will do
        return torch.where(total > 0, r / total.clamp(min=1e-30), q)

    def _round_fn(self) -> None:
        k, P, greedy = self.k, self._P, self.temperature == 0
        # 1. The draft: k tokens, the first step feeding [prev, cur] at P - 1, P.
        x = torch.stack([self._prev, self._cur], dim=1)  # [1 2]
        pos = torch.cat([P - 1, P])
        drafts, p_rows = [], []
        for i in range(k):
            logits = self._draft_fwd(x, pos)  # [V]
            if greedy:
                d = logits.argmax(-1, keepdim=True)
            else:
                p = self._probs(logits)
                d = _draw(p).view(1)
                p_rows.append(p)
            drafts.append(d)
            x, pos = d.view(1, 1), P + (i + 1)
        d = torch.cat(drafts)  # [k]
        # 2. The target scores [cur, d_1 .. d_k] at P .. P + k in one forward.
        logits = self._target_fwd(torch.cat([self._cur, d]).view(1, k + 1), P + self._arange)  # [k+1 V]
        # 3. Accept or reject each d_i; n = the accepted prefix's length.
        if greedy:
            best = logits.argmax(-1)  # [k+1]
            accept = d == best[:k]
            overlap = accept.float()  # 1 - TV of two one-hot distributions
        else:
            q = self._probs(logits)   # [k+1 V]
            p = torch.stack(p_rows)   # [k V]
            pd, qd = p.gather(1, d[:, None])[:, 0], q[:k].gather(1, d[:, None])[:, 0]
            accept = torch.rand(k, device=d.device) * pd < qd  # with probability min(1, q/p)
            overlap = torch.minimum(p, q[:k]).sum(-1)
        if self.simulate_alpha is not None:
            accept = self._sim_accept.index_select(0, self._round)[0]  # [k], drawn in generate
        n = accept.long().cumprod(0).sum().view(1)  # [1]: 0..k
        # 4. The next token: the target's own at position n (greedy), or a draw from the residual
        #    normalize(max(q_n - p_n, 0)) after a rejection, or from q_k as the bonus (p_k := 0).
        if greedy:
            nxt = best.index_select(0, n)
        else:
            p_ext = torch.cat([p, torch.zeros_like(p[:1])])
            nxt = _draw(self._residual(p_ext.index_select(0, n)[0], q.index_select(0, n)[0])).view(1)
        # 5. The round's tokens d_1 .. d_n, next; written at the output's end; the state advanced.
        tokens = torch.where(self._arange < n, torch.cat([d, nxt]), nxt)  # [k+1], the first n + 1 valid
        self._out.index_copy_(0, self._out_len + self._arange, tokens)
        self._accepted.index_copy_(0, self._round, n)
        self._overlap.index_copy_(0, self._round, overlap.float().view(1, k))
        prev = torch.where(n > 0, tokens.index_select(0, (n - 1).clamp(min=0)), self._cur)
        self._prev.copy_(prev)
        self._cur.copy_(nxt)
        self._P.add_(n + 1)
        self._out_len.add_(n + 1)
        self._round.add_(1)

    def _capture(self) -> None:
        """Record the round as a CUDA graph (after two eager warm-up rounds on a side stream, as
        ``torch.cuda.graph`` asks). The warm-ups write garbage at positions 1.. of both caches and
        into the output; ``generate`` resets the state and its prefill overwrites the prompt's
        slots, and every later slot is written before it is first read."""
        t0 = time.perf_counter()
        self._reset(1)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(stream), self._attention_context():
            for _ in range(2):  # the first traces and compiles the forwards, when compiling
                self._round_fn()
        torch.cuda.current_stream().wait_stream(stream)
        self._reset(1)
        self._graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self._graph), self._attention_context():
            self._round_fn()
        torch.cuda.synchronize()
        self.capture_seconds = time.perf_counter() - t0

    def _attention_context(self):
        """Compiled on CUDA: SDPA's math backend at trace time, so that Inductor generates the
        attention of these few query tokens itself (as ``FastGenerator`` does for decode)."""
        if self._target_fwd is self._target_forward or self.device.type != "cuda":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(SDPBackend.MATH)

    def _reset(self, T0: int) -> None:
        self._P.fill_(T0)
        for t in (self._out_len, self._round, self._prev, self._cur):
            t.zero_()

    def _replay(self) -> None:
        if self._graph is not None:
            self._graph.replay()
        else:
            with torch.no_grad(), self._attention_context():
                self._round_fn()

    # -- generation ---------------------------------------------------------------------------------

    def generate(self, prompt: torch.Tensor, max_new_tokens: int, *, seed: int | None = None) -> SpeculativeGeneration:
        """Up to ``max_new_tokens`` tokens after ``prompt`` ([1 T0]); greedy or sampled as
        constructed. ``seed``: ``torch.manual_seed(seed)`` first (the draws use the global stream)."""
        if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[0] != 1:
            shape = tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__
            raise ValueError(f"The fast speculative path takes one prompt, a [1 T] tensor; got {shape}.")
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}.")
        check_ids(prompt, self.target.cfg.V)
        T0, k = prompt.shape[1], self.k
        need = T0 + max_new_tokens + k + 1
        if need > self.S_max:
            raise ValueError(f"The prompt ({T0}) + max_new_tokens ({max_new_tokens}) + k + 1 ({k + 1}, the "
                             f"tokens the last round may check) need {need} positions, past this generator's "
                             f"S_max = {self.S_max}. Build it with S_max >= {need}, or shorten them.")
        if self.graphs and self._graph is None:
            self._capture()
        if seed is not None:
            torch.manual_seed(seed)
        if self.simulate_alpha is not None:
            # Drawn here, not inside the graph: the flags depend only on the seed, so repeats with
            # one seed differ only in their timing.
            flags = torch.rand(self.S_max + 1, 8 if k <= 8 else k) < self.simulate_alpha
            self._sim_accept.copy_(flags[:, :k])
        prompt = prompt.to(self.device)
        synchronize(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = self.target(prompt, self.t_cache, 0)[0, -1]
            self.draft(prompt, self.d_cache, 0)
            first = logits.argmax(-1) if self.temperature == 0 else _draw(self._probs(logits))
        self._reset(T0)
        self._prev.copy_(prompt[0, -1:])
        self._cur.copy_(first.view(1))
        self._out[0] = first
        self._out_len.fill_(1)
        synchronize(self.device)
        t_first = time.perf_counter()
        have = 1
        while have < max_new_tokens:
            # A round yields at most k + 1 tokens: this many rounds cannot overshoot the limit.
            for _ in range(max(1, math.ceil((max_new_tokens - have) / (k + 1)))):
                self._replay()
            have = int(self._out_len.item())  # the one host sync, every few rounds
        tokens = self._out[:max_new_tokens].to("cpu", copy=True)[None]
        synchronize(self.device)
        t_end = time.perf_counter()
        rounds = int(self._round.item())
        accepted = self._accepted[:rounds].tolist()
        overlap = self._overlap[:rounds].cpu()
        out = SpeculativeGeneration(Generation(tokens, T0, ttft=t_first - t0, decode_seconds=t_end - t_first), k)
        out.accepted = accepted
        for a, row in zip(accepted, overlap):
            checked = min(a + 1, k)  # positions checked this round: the accepted ones and the first rejection
            out.accept_probs += row[:checked].tolist()
            out.accept_flags += [1] * a + ([0] if a < k else [])
        out.target_calls, out.draft_calls = rounds, rounds * k
        return out
