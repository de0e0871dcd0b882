"""A small continuous-batching engine (Orca's iteration-level scheduling on a paged KV cache).

Every ``step``: decode one token for every running sequence, continue prompts being prefilled
and admit waiting requests (FCFS) while blocks and the token budget allow (chunked prefill:
a prompt longer than what is left of the budget is split over several steps), run the model
**once** on the ragged batch (prefill chunks and decodes mixed), sample where a sequence's
prompt is complete, and retire finished sequences. When the pool runs out of blocks a decode needs, the most recently admitted
sequence is preempted by recompute: its blocks freed, the request back at the front of the queue.
The model runs through a ``ModelRunner``: the readable padded path (any device) or the packed
path with PagedAttention in place and CUDA graphs for decode steps (the default on a GPU).

``policy="static"`` is the baseline continuous batching replaces: a batch is admitted together
and nothing new joins until every member has finished (a finished member leaves, so its slot
idles, the ragged picture of static batching).

Every request records when it arrived, when each of its tokens was sampled and when it ended
(``clock``: ``time.perf_counter`` by default; the simulator passes its virtual clock).
"""
from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from ..decode.sampling import check_sampling, sample
from ..model import Transformer
from .block_manager import BlockManager, NoFreeBlocks, Sequence
from .paged_cache import PagedKVCache
from .runner import ModelRunner


@dataclass(eq=False)  # a request is itself: identity, not field-by-field equality (fast `in` and `remove`)
class Request:
    prompt: list[int]
    max_tokens: int
    temperature: float = 0.0
    eos_id: int | None = None
    output: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    seq: Sequence | None = None
    request_id: int = 0
    num_computed: int = 0      # tokens of seq whose keys and values are in the pool
    needs_slot: bool = False   # a token was sampled and its slot is not allocated yet
    top_k: int | None = None
    stop: frozenset = frozenset()  # more token ids that end the request (kept, like EOS)
    n: int = 1                     # parallel samples: forked from this request when its prompt is done
    samples: list["Request"] = field(default_factory=list)  # the n requests (this one first), once forked
    arrival_time: float = 0.0
    token_times: list[float] = field(default_factory=list)  # when each output token was sampled
    finish_time: float | None = None

    @property
    def ttft(self) -> float | None:
        """Time to first token: arrival to the first sampled token (includes queueing and prefill)."""
        return self.token_times[0] - self.arrival_time if self.token_times else None

    def ends_with_stop(self, token: int) -> bool:
        return token == self.eos_id or token in self.stop


@dataclass
class StepRecord:
    """What one step did, for plots and tests: when, which requests with how many tokens (a
    prefill chunk or 1 for a decode), and the pool afterwards."""
    start: float
    end: float
    batch: list[tuple[int, int]]  # (request_id, tokens fed)
    free_blocks: int
    preempted: list[int]          # request ids preempted while scheduling this step


class Engine:
    def __init__(self, model: Transformer, num_blocks: int = 256, block_size: int = 16, max_num_seqs: int = 32,
                 max_tokens_per_step: int = 2048, enable_prefix_caching: bool = True, *, policy: str = "continuous",
                 packed: bool | None = None, cuda_graphs: bool | None = None, compile: bool = False,
                 clock=time.perf_counter, log_steps: int | None = None, keep_finished: bool = True):
        """``packed``/``cuda_graphs``: the fast path (default: on a CUDA device); ``log_steps``: keep
        only the last records in ``log``, and ``keep_finished=False``: keep no list of finished
        requests (a server runs for days and its callers hold their own requests); ``compile``: its
        decode step also through ``torch.compile`` (``ModelRunner``); ``policy``:
        "continuous" (iteration-level) or "static" (a batch runs to its end before the next)."""
        if policy not in ("continuous", "static"):
            raise ValueError(f"policy must be 'continuous' or 'static', got {policy!r}.")
        self.model, self.policy, self.clock = model, policy, clock
        self.blocks = BlockManager(num_blocks, block_size, enable_prefix_caching)
        self.max_num_seqs, self.max_tokens_per_step = max_num_seqs, max_tokens_per_step
        if model is not None:  # the simulator has no model
            self.cache = PagedKVCache.for_model(model, num_blocks, block_size)
            on_gpu = self.cache.k.device.type == "cuda"
            packed = on_gpu if packed is None else packed
            self.runner = ModelRunner(model, self.cache, packed=packed, max_num_seqs=max_num_seqs,
                                      cuda_graphs=packed and on_gpu if cuda_graphs is None else cuda_graphs,
                                      compile=compile, max_tokens_per_step=max_tokens_per_step)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.finished: list[Request] = []
        self.keep_finished = keep_finished
        self.preemptions, self.copies = 0, 0  # preempted requests; copy-on-write block copies
        self.prompt_tokens = self.prefix_hit_tokens = 0  # admitted prompt tokens; those found in the prefix cache
        self.last_step_tokens = 0
        self._next_id = 0
        self._batch_open = True  # static policy: may the current batch still take requests?
        # one record per step that ran; a long-running server keeps only the last log_steps
        self.log: list[StepRecord] | deque[StepRecord] = [] if log_steps is None else deque(maxlen=log_steps)
        self.steps = 0
        self._preempted_now: list[int] = []

    @property
    def cfg(self):
        return self.model.cfg

    def add_request(self, prompt: list[int], max_tokens: int, temperature: float = 0.0,
                    eos_id: int | None = None, *, top_k: int | None = None, stop=(), n: int = 1,
                    ignore_eos: bool = False, arrival_time: float | None = None) -> Request:
        """Queue a request. ``n`` > 1: n samples of the same prompt, which share the prompt's blocks
        (copy-on-write when they diverge); ``stop``: token ids that end it besides ``eos_id``;
        ``ignore_eos``: generate ``max_tokens`` whatever is sampled."""
        if not prompt:
            raise ValueError("A request needs at least one prompt token.")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}.")
        check_sampling(temperature, top_k)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n (samples per prompt) must be a positive integer, got {n!r}.")
        V = self.cfg.V
        bad = [t for t in [*stop, *([] if eos_id is None else [eos_id])] if not isinstance(t, int) or not 0 <= t < V]
        if bad:
            raise ValueError(f"Stop/EOS token ids must lie in [0, {V}), got {bad}.")
        if len(prompt) + max_tokens > self.cfg.S_max:
            raise ValueError(f"prompt ({len(prompt)}) + max_tokens ({max_tokens}) exceed the model's "
                             f"S_max = {self.cfg.S_max}.")
        if self.blocks.blocks_needed(len(prompt) + max_tokens) > len(self.blocks.blocks):
            raise ValueError(f"This request needs {self.blocks.blocks_needed(len(prompt) + max_tokens)} blocks "
                             f"at its longest; the pool has {len(self.blocks.blocks)}. It could never finish.")
        if not isinstance(self.max_tokens_per_step, int) or self.max_tokens_per_step < 1:
            raise ValueError(f"max_tokens_per_step must be a positive integer, got {self.max_tokens_per_step!r}.")
        req = Request(list(prompt), max_tokens, temperature, None if ignore_eos else eos_id, request_id=self._next_id,
                      top_k=top_k, stop=frozenset() if ignore_eos else frozenset(stop), n=n,
                      arrival_time=self.clock() if arrival_time is None else arrival_time)
        self._next_id += 1
        self.waiting.append(req)
        return req

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _preempt(self, victim: Request) -> None:
        self.blocks.free(victim.seq)
        victim.seq, victim.num_computed, victim.needs_slot = None, 0, False  # recompute: its prompt and output so far are prefilled again later
        self.running.remove(victim)
        self.waiting.appendleft(victim)
        self.preemptions += 1
        self._preempted_now.append(victim.request_id)

    def _schedule(self) -> list[tuple[Request, list[int], int]]:
        """(request, tokens to feed, position of the first) for this step, within the token budget.

        Running requests first, in admission order: a decode costs one token (its last sampled
        token, whose slot is made now: ``blocks.append``, preempting the most recent request if
        the pool is out of blocks); a prompt still being prefilled gets the next chunk that fits
        the budget (chunked prefill: long prompts share steps with decodes instead of stalling
        them). Then waiting requests are admitted (FCFS) while blocks, sequences and budget allow."""
        batch, budget = [], self.max_tokens_per_step
        for req in list(self.running):
            if req not in self.running:
                continue  # preempted below to make room for an earlier one
            if req.needs_slot:
                while True:
                    try:
                        copy = self.blocks.append(req.seq)  # room for the token sampled last step
                        if copy:
                            self.cache.copy_block(*copy)
                            self.copies += 1
                        req.needs_slot = False
                        break
                    except NoFreeBlocks:
                        victim = self.running[-1]
                        self._preempt(victim)
                        if victim is req:
                            break
            if req not in self.running or budget == 0:
                continue
            todo = req.seq.token_ids[req.num_computed:][:budget]
            batch.append((req, todo, req.num_computed))
            budget -= len(todo)
        if self.policy == "static":
            if not self.running:
                self._batch_open = True  # the last batch is over: form the next one
            if not self._batch_open:
                return batch  # static batching: the batch has formed; newcomers wait for its end
        out_of_budget = False
        while self.waiting and len(self.running) < self.max_num_seqs:
            if budget == 0:
                out_of_budget = True  # (a static batch keeps forming next step)
                break
            req = self.waiting[0]
            seq = Sequence(req.prompt + req.output)
            if not self.blocks.can_allocate(seq):
                break
            self.blocks.allocate(seq)  # blocks for the whole prompt now: later chunks never wait for memory
            self.prompt_tokens += len(seq)
            self.prefix_hit_tokens += seq.num_cached_tokens
            self.waiting.popleft()
            req.seq, req.num_computed, req.needs_slot = seq, seq.num_cached_tokens, False
            self.running.append(req)
            todo = seq.token_ids[req.num_computed:][:budget]
            batch.append((req, todo, req.num_computed))
            budget -= len(todo)
        if self.policy == "static" and not out_of_budget:
            self._batch_open = False  # full, out of blocks, or nobody else waiting: closed
        return batch

    def _fork(self, req: Request) -> list[Request]:
        """n samples of one prompt: n - 1 children share every block of the parent (``fork``), so
        the prompt is prefilled and stored once; each then samples its own tokens, and the first
        write into the shared last block copies it (copy-on-write)."""
        children = []
        for _ in range(req.n - 1):
            child = Request(req.prompt, req.max_tokens, req.temperature, req.eos_id, request_id=self._next_id,
                            top_k=req.top_k, stop=req.stop, num_computed=req.num_computed,
                            arrival_time=req.arrival_time)
            self._next_id += 1
            child.seq = Sequence(list(req.seq.token_ids))
            self.blocks.fork(req.seq, child.seq)
            self.running.insert(self.running.index(req) + 1, child)
            children.append(child)
        req.n, req.samples = 1, [req] + children  # forked once: a preempted sample resumes on its own
        return req.samples

    def _step_made_progress(self) -> bool:
        self.step()
        return self.last_step_tokens > 0

    def _forward(self, batch) -> torch.Tensor | None:
        return self.runner.forward(batch)

    def _sample(self, logits: torch.Tensor, rows: list[tuple[int, Request]]) -> list[int]:
        """One token per (logits row, request): the rows with the same settings in one call, and
        one device-to-host copy for the whole step."""
        groups: dict[tuple, list[int]] = {}
        for j, (_, r) in enumerate(rows):
            groups.setdefault((r.temperature, r.top_k), []).append(j)
        tokens = torch.empty(len(rows), dtype=torch.long, device=logits.device)
        for (temperature, top_k), js in groups.items():
            picked = logits[torch.tensor([rows[j][0] for j in js], device=logits.device)]
            tokens[torch.tensor(js, device=logits.device)] = sample(picked, temperature, top_k)
        return tokens.tolist()

    def _finish(self, req: Request, reason: str) -> None:
        req.finish_reason, req.finish_time = reason, self.clock()
        if req.seq is not None:
            self.blocks.free(req.seq)
            req.seq = None
        if hasattr(self, "runner"):
            self.runner.forget(req.request_id)
        if self.keep_finished:
            self.finished.append(req)

    def abort(self, req: Request) -> None:
        """Stop a request now (a client went away): its blocks go back to the pool at once.
        Its samples too, if it was forked (n > 1). Finished requests are left alone."""
        for r in req.samples or [req]:
            if r.finish_reason is not None:
                continue
            if r in self.waiting:
                self.waiting.remove(r)
            if r in self.running:
                self.running.remove(r)
            self._finish(r, "abort")

    @torch.inference_mode()
    def step(self) -> list[Request]:
        """One iteration; returns the requests that finished in it."""
        start, self._preempted_now = self.clock(), []
        batch = self._schedule()
        self.last_step_tokens = sum(len(tokens) for _, tokens, _ in batch)  # tokens processed
        if not batch:
            return []
        logits = self._forward(batch)
        rows = []  # (logits row, request) for every sequence whose prompt is complete
        for i, (req, tokens, first) in enumerate(batch):
            req.num_computed = first + len(tokens)
            self.blocks.commit(req.seq, req.num_computed)
            if req.num_computed < len(req.seq):
                continue  # a prefill chunk: the prompt is not finished, nothing to sample yet
            rows += [(i, r) for r in (self._fork(req) if req.n > 1 else [req])]
        done = []
        if rows:
            tokens = self._sample(logits, rows)
            now = self.clock()
            for (_, r), token in zip(rows, tokens):
                r.output.append(token)
                r.token_times.append(now)
                r.seq.token_ids.append(token)
                r.needs_slot = True
                if len(r.output) >= r.max_tokens or r.ends_with_stop(token):
                    self.running.remove(r)
                    self._finish(r, "stop" if r.ends_with_stop(token) else "length")
                    done.append(r)
        self.steps += 1
        self.log.append(StepRecord(start, self.clock(), [(r.request_id, len(t)) for r, t, _ in batch],
                                   self.blocks.num_free_blocks, self._preempted_now))
        return done

    def step_summary(self) -> dict:
        """The logged steps in two kinds: ``decode`` (one token per sequence: a CUDA graph on a
        GPU) and ``prefill`` (some prompt chunk in the step, mixed with any decodes): for each,
        the count, median duration in ms and mean tokens fed."""
        kinds: dict[str, list[tuple[float, int]]] = {"decode": [], "prefill": []}
        for rec in list(self.log):  # a copy: a server's engine thread appends while this reads
            kind = "decode" if all(n == 1 for _, n in rec.batch) else "prefill"
            kinds[kind].append(((rec.end - rec.start) * 1e3, sum(n for _, n in rec.batch)))
        out = {}
        for kind, rows in kinds.items():
            out[kind] = {"steps": len(rows), "median_ms": statistics.median(d for d, _ in rows) if rows else None,
                         "mean_tokens": sum(t for _, t in rows) / len(rows) if rows else None}
        return out

    def generate(self, prompts: list[list[int]], max_tokens, temperature: float = 0.0, n: int = 1, **params):
        """Offline: all requests at once; returns each one's output tokens, in order (for n > 1,
        a list of the n samples' outputs per prompt). ``params``: as ``add_request``."""
        limits = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
        reqs = [self.add_request(p, m, temperature, n=n, **params) for p, m in zip(prompts, limits)]
        while self.has_work:
            if not self._step_made_progress():
                raise RuntimeError("No request could be scheduled (not enough free blocks for any waiting prompt).")
        return [r.output for r in reqs] if n == 1 else [[s.output for s in r.samples] for r in reqs]
