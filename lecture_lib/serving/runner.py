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
  of each sequence only. On a GPU a decode-only step (one token per sequence) replays a **CUDA
  graph** captured for the next batch-size bucket up (1, 2, 4, 8, then steps of 16): the padding
  rows point at the cache's null block. Graphs remove the launch overhead that would otherwise
  dominate a decode step (see notebook 07); steps with prompt chunks run eagerly.
"""
from __future__ import annotations

import time

import torch
from torch.nn.utils.rnn import pad_sequence

from .paged_cache import PagedKVCache


def graph_buckets(max_num_seqs: int) -> list[int]:
    """Batch sizes that get a CUDA graph: 1, 2, 4, 8, 16, 32, 48, ... up to ``max_num_seqs``."""
    sizes = [b for b in (1, 2, 4, 8) if b < max_num_seqs] + list(range(16, max_num_seqs, 16))
    return sizes + [max_num_seqs]


class ModelRunner:
    def __init__(self, model, cache: PagedKVCache, *, packed: bool, cuda_graphs: bool, max_num_seqs: int,
                 compile: bool = False):
        """``compile``: the decode step through ``torch.compile`` (dynamic batch size, so one
        compilation serves every bucket) before its graphs are captured: Inductor fuses the
        norms, RoPE and SwiGLU's elementwise work that eager runs as dozens of small kernels a
        layer. Costs a compilation (about a minute) when the engine is built."""
        self.model, self.cache, self.packed = model, cache, packed
        self.compile_seconds = 0.0
        self.device = model.tok_emb.weight.device
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._tables: dict[int, tuple[int, int, torch.Tensor]] = {}  # request id -> (len, last block, table)
        if cuda_graphs:
            if not packed or self.device.type != "cuda":
                raise ValueError("CUDA graphs need the packed path on a CUDA device.")
            self._decode = self._decode_step
            if compile:
                from ..decode.fast import fuse_projections_
                fuse_projections_(model)  # Q, K, V in one GEMM; gate and up in one
                self._decode = torch.compile(self._decode_step, dynamic=True)
            self._capture(max_num_seqs)
        elif compile:
            raise ValueError("compile applies to the CUDA-graph decode step: it needs cuda_graphs=True.")

    def forward(self, batch) -> torch.Tensor:
        """[len(batch) V] logits: for each (request, tokens, start), those after its last token."""
        if not self.packed:
            return self._forward_padded(batch)
        tables = self._block_tables(batch)
        if self.graphs and all(len(tokens) == 1 for _, tokens, _ in batch):
            return self._replay(batch, tables)
        lengths = [len(tokens) for _, tokens, _ in batch]
        x = torch.tensor([t for _, tokens, _ in batch for t in tokens], device=self.device)
        pos = torch.tensor([p for _, tokens, start in batch for p in range(start, start + len(tokens))],
                           device=self.device)
        rows = torch.repeat_interleave(torch.arange(len(batch)), torch.tensor(lengths)).to(self.device)
        last = torch.tensor(lengths).cumsum(0).to(self.device) - 1
        self.cache.bind_packed(tables[rows])
        return self.model(x[None], self.cache, pos[None], logits_at=last)[0]

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

    def _capture(self, max_num_seqs: int) -> None:
        """One graph per bucket, largest first so that the smaller ones reuse its memory pool.
        The static inputs start out pointing at the null block, so capturing writes nowhere that
        matters."""
        W = -(-self.model.cfg.S_max // self.cache.block_size)  # blocks of the longest sequence
        self.x = torch.zeros(1, max_num_seqs, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(1, max_num_seqs, dtype=torch.long, device=self.device)
        self.tables = torch.full((max_num_seqs, W), self.cache.null_block, dtype=torch.int32, device=self.device)
        pool = torch.cuda.graph_pool_handle()
        for B in reversed(graph_buckets(max_num_seqs)):
            def step(B=B):
                return self._decode(self.x[:, :B], self.pos[:, :B], self.tables[:B])
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
            self.graphs[B] = (graph, out)
        torch.cuda.synchronize()

    def _decode_step(self, x, pos, tables):
        self.cache.bind_packed(tables)
        return self.model(x, self.cache, pos)[0]

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
