"""The model runner: one forward pass over a step's ragged batch, each sequence's last logits out.

A step is a list of (request, tokens to feed, position of the first). Two ways to run it:

- **padded** (the readable reference, any device): a [B T] batch, short rows padded with
  position -1; the paged cache gathers each sequence's blocks and the model's own attention
  masks by position. The decodes run as one [B 1] batch and each prompt chunk as its own, so
  that no decode is padded to a long chunk's length (one forward per group, not selective
  batching's single one).
- **packed** (the fast path, what vLLM and nano-vllm do): every token of the step in one row
  [1 T], no padding; each token carries its sequence's block table and PagedAttention reads
  the pool in place (``paged_attention``: Triton on a GPU). The LM head runs on the last token
  of each sequence only. On a GPU every step replays a **CUDA graph**: a decode-only step (one
  token per sequence) the graph of the next batch-size bucket up (1, 2, 4, 8, then steps of
  16), a step with prompt chunks (mixed with any decodes) the graph of the next token-count
  bucket up (64, 128, 256, ... to the step's token budget), its logits taken at up to
  ``max_num_seqs`` rows. The padding tokens point at the cache's null block. Graphs remove the
  launch overhead that would otherwise dominate a step (see notebook 07): an eager step of a
  Llama-3.2-1B-shape model took 14-24 ms on an H200 whether it fed 64 or 1,088 prompt tokens
  (in a graph: 4.5 and 16.5 ms), which hid everything a prefill saves (prefix caching) or
  spreads (chunked prefill). The price is the
  padding, at most twice the tokens of a mixed step, and a second or two of capture.
"""
from __future__ import annotations

import time

import torch
from torch.nn.utils.rnn import pad_sequence

from .paged_cache import PagedKVCache


def graph_buckets(max_num_seqs: int) -> list[int]:
    """Batch sizes that get a decode CUDA graph: 1, 2, 4, 8, 16, 32, 48, ... up to ``max_num_seqs``."""
    sizes = [b for b in (1, 2, 4, 8) if b < max_num_seqs] + list(range(16, max_num_seqs, 16))
    return sizes + [max_num_seqs]


def token_buckets(max_tokens_per_step: int, smallest: int = 64) -> list[int]:
    """Token counts that get a mixed-step CUDA graph: 64, 128, 256, ... doubling, the last one
    ``max_tokens_per_step`` (a step never feeds more)."""
    sizes, T = [], smallest
    while T < max_tokens_per_step:
        sizes.append(T)
        T *= 2
    return sizes + [max_tokens_per_step]


class ModelRunner:
    def __init__(self, model, cache: PagedKVCache, *, packed: bool, cuda_graphs: bool, max_num_seqs: int,
                 compile: bool = False, max_tokens_per_step: int | None = None):
        """``compile``: the step through ``torch.compile`` (dynamic shapes, so one compilation
        serves every bucket) before its graphs are captured: Inductor fuses the norms, RoPE and
        SwiGLU's elementwise work that eager runs as dozens of small kernels a layer. Costs a
        compilation (about a minute) when the engine is built. ``max_tokens_per_step``: the
        largest mixed step that gets a graph (none: mixed steps run eagerly)."""
        self.model, self.cache, self.packed = model, cache, packed
        self.compile_seconds = 0.0
        self.device = model.tok_emb.weight.device
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}         # decode: B -> graph
        self.mixed_graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}   # mixed: T -> graph
        self.max_num_seqs = max_num_seqs
        self.counts = {"decode graph": 0, "mixed graph": 0, "eager": 0}  # how the steps ran
        self._tables: dict[int, tuple[int, int, torch.Tensor]] = {}  # request id -> (len, last block, table)
        if cuda_graphs:
            if not packed or self.device.type != "cuda":
                raise ValueError("CUDA graphs need the packed path on a CUDA device.")
            self._decode = self._decode_step
            if compile:
                from ..decode.fast import fuse_projections_
                fuse_projections_(model)  # Q, K, V in one GEMM; gate and up in one
                self._decode = torch.compile(self._decode_step, dynamic=True)
            self._capture(max_num_seqs, max_tokens_per_step)
        elif compile:
            raise ValueError("compile applies to the CUDA-graph decode step: it needs cuda_graphs=True.")

    def forward(self, batch) -> torch.Tensor:
        """[len(batch) V] logits: for each (request, tokens, start), those after its last token."""
        if not self.packed:
            return self._forward_padded(batch)
        tables = self._block_tables(batch)
        if self.graphs and all(len(tokens) == 1 for _, tokens, _ in batch):
            self.counts["decode graph"] += 1
            return self._replay(batch, tables)
        lengths = [len(tokens) for _, tokens, _ in batch]
        x = torch.tensor([t for _, tokens, _ in batch for t in tokens])
        pos = torch.tensor([p for _, tokens, start in batch for p in range(start, start + len(tokens))])
        rows = torch.repeat_interleave(torch.arange(len(batch)), torch.tensor(lengths)).to(self.device)
        last = torch.tensor(lengths).cumsum(0) - 1
        T = len(x)
        if self.mixed_graphs and T <= max(self.mixed_graphs) and len(batch) <= self.max_num_seqs:
            self.counts["mixed graph"] += 1
            return self._replay_mixed(x, pos, tables[rows], last)
        self.counts["eager"] += 1
        self.cache.bind_packed(tables[rows])
        return self.model(x.to(self.device)[None], self.cache, pos.to(self.device)[None],
                          logits_at=last.to(self.device))[0]

    def forget(self, request_id: int) -> None:
        self._tables.pop(request_id, None)

    def _block_tables(self, batch) -> torch.Tensor:
        """[B W] block tables on the device. Each request's row is rebuilt only when its table
        changed (a new block every block_size tokens, or a copy-on-write of the last one), not
        every step: at 256 sequences, rebuilding them all from Python lists would cost more
        than the GPU's step."""
        rows = []
        for req, _, _ in batch:
            table = req.seq.block_table
            known = self._tables.get(req.request_id)
            if known is None or known[0] != len(table) or known[1] != table[-1]:
                known = (len(table), table[-1], torch.tensor(table, dtype=torch.int32))
                self._tables[req.request_id] = known
            rows.append(known[2])
        return pad_sequence(rows, batch_first=True, padding_value=self.cache.null_block).to(self.device)

    def _forward_padded(self, batch) -> torch.Tensor:
        """Decodes together as one [B 1] batch, each prompt chunk as its own [1 T] batch: padding
        a decode row to a 1,000-token chunk would multiply the step's work by the batch size."""
        decodes = [i for i, (_, tokens, _) in enumerate(batch) if len(tokens) == 1]
        groups = ([decodes] if decodes else []) + [[i] for i, (_, t, _) in enumerate(batch) if len(t) > 1]
        if len(groups) == 1:
            return self._forward_group(batch)
        logits = [None] * len(batch)
        for group in groups:
            for i, row in zip(group, self._forward_group([batch[i] for i in group])):
                logits[i] = row
        return torch.stack(logits)

    def _forward_group(self, batch) -> torch.Tensor:
        T = max(len(tokens) for _, tokens, _ in batch)
        x = torch.zeros(len(batch), T, dtype=torch.long)
        pos = torch.full((len(batch), T), -1, dtype=torch.long)
        for i, (_, tokens, start) in enumerate(batch):
            x[i, :len(tokens)] = torch.tensor(tokens)
            pos[i, :len(tokens)] = torch.arange(start, start + len(tokens))
        self.cache.bind([req.seq.block_table for req, _, _ in batch])
        logits = self.model(x.to(self.device), self.cache, pos.to(self.device))
        last = torch.tensor([len(tokens) - 1 for _, tokens, _ in batch], device=self.device)
        return logits[torch.arange(len(batch), device=self.device), last]

    # ---- CUDA graphs for decode-only steps ---------------------------------------------------

    def _capture(self, max_num_seqs: int, max_tokens_per_step: int | None) -> None:
        """One graph per bucket, largest first so that the smaller ones reuse its memory pool
        (they never run at the same time, and each step's logits are sampled before the next).
        The static inputs start out pointing at the null block, so capturing writes nowhere that
        matters."""
        W = -(-self.model.cfg.S_max // self.cache.block_size)  # blocks of the longest sequence
        T_max = max(max_num_seqs, max_tokens_per_step or 0)
        self.x = torch.zeros(1, T_max, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(1, T_max, dtype=torch.long, device=self.device)
        self.tables = torch.full((T_max, W), self.cache.null_block, dtype=torch.int32, device=self.device)
        self.last = torch.zeros(max_num_seqs, dtype=torch.long, device=self.device)  # mixed: logits rows
        pool = torch.cuda.graph_pool_handle()
        mixed = token_buckets(max_tokens_per_step) if max_tokens_per_step else []
        steps = [(self.mixed_graphs, T, lambda T=T: self._decode(self.x[:, :T], self.pos[:, :T], self.tables[:T],
                                                                 self.last)) for T in reversed(mixed)]
        steps += [(self.graphs, B, lambda B=B: self._decode(self.x[:, :B], self.pos[:, :B], self.tables[:B]))
                  for B in reversed(graph_buckets(max_num_seqs))]
        for graphs, size, step in steps:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            start = time.perf_counter()
            with torch.cuda.stream(stream), torch.inference_mode():
                step()  # warm-up outside the graph (the Triton kernel's and Inductor's compilation)
            torch.cuda.current_stream().wait_stream(stream)
            torch.cuda.synchronize()
            self.compile_seconds += time.perf_counter() - start
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool), torch.inference_mode():
                out = step()
            graphs[size] = (graph, out)
        torch.cuda.synchronize()

    def _decode_step(self, x, pos, tables, last=None):
        """One step on static buffers: decode (logits at every token) or mixed (at ``last``)."""
        self.cache.bind_packed(tables)
        return self.model(x, self.cache, pos, logits_at=last)[0]

    def _replay(self, batch, tables: torch.Tensor) -> torch.Tensor:
        n = len(batch)
        B = next(b for b in sorted(self.graphs) if b >= n)
        self.x[0, :n] = torch.tensor([tokens[0] for _, tokens, _ in batch])
        self.pos[0, :n] = torch.tensor([start for _, _, start in batch])
        self.pos[0, n:B] = 0
        self.tables[:B] = self.cache.null_block  # padding rows (and the tail of shorter tables)
        self.tables[:n, :tables.shape[1]] = tables
        graph, out = self.graphs[B]
        graph.replay()
        return out[:n]

    def _replay_mixed(self, x, pos, token_tables: torch.Tensor, last) -> torch.Tensor:
        """A step with prompt chunks: its T tokens (host tensors) into the next bucket up; the
        padding tokens sit at position 0 of the null block, the padding logits rows at token 0."""
        T, n = len(x), len(last)
        bucket = next(b for b in sorted(self.mixed_graphs) if b >= T)
        self.x[0, :T], self.pos[0, :T] = x, pos
        self.pos[0, T:bucket] = 0
        self.tables[:bucket] = self.cache.null_block
        self.tables[:T, :token_tables.shape[1]] = token_tables
        self.last.zero_()
        self.last[:n] = last
        graph, out = self.mixed_graphs[bucket]
        graph.replay()
        return out[:n]
