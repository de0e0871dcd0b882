"""The engine's own scheduler on a virtual clock: no model, each step's time from a cost model.

``SimulatedEngine`` *is* ``Engine`` (same admission, chunked prefill, block manager, prefix
caching, preemption, static or continuous policy); only the forward pass is replaced: a step
advances the clock by ``StepCost`` of its tokens and samples token 0 (requests run to
``max_tokens``). So a notebook can replay a workload of thousands of requests in a second,
move block size, token budget or batch limit with a widget, and compare the result with the
real engine on the same workload.

The cost of a step, the memory/compute roofline of one forward pass (``analysis``)::

    bytes = weights + Σ_sequences (keys read)·kv_bytes_per_token + (new tokens)·kv_bytes_per_token
    FLOPs = 2·linear_params·(new tokens) + 4·L·N·H·Σ_new tokens (keys visible)
    time  = max(bytes / bandwidth, FLOPs / peak) + overhead

A decode reads its sequence's whole cache; a prompt chunk reads its keys once (a flash-style
kernel keeps them on chip for all its queries). ``overhead`` (default 0) stands for what a real
step adds: kernel launches, the scheduler's Python, sampling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import analysis
from ..config import ModelConfig
from ..hardware import get_spec
from .engine import Engine, Request


@dataclass
class StepCost:
    cfg: ModelConfig
    memory_bandwidth: float   # bytes/s
    flops_per_second: float   # peak, the model's dtype
    bytes_per_value: float = analysis.BF16
    overhead: float = 0.0     # seconds added to every step

    @classmethod
    def for_gpu(cls, cfg: ModelConfig, gpu: str = "H200", dtype: str = "bf16", overhead: float = 0.0) -> "StepCost":
        spec = get_spec(gpu)
        return cls(cfg, spec.memory_bandwidth, spec.flops_for(dtype), overhead=overhead)

    def seconds(self, chunks: list[tuple[int, int]]) -> float:
        """One step over (start position, new tokens) per sequence."""
        cfg, kv = self.cfg, analysis.kv_bytes_per_token(self.cfg, self.bytes_per_value)
        new = sum(n for _, n in chunks)
        weights = (analysis.linear_params(cfg) + analysis.norm_params(cfg)) * self.bytes_per_value
        bytes_ = weights + sum(start + n for start, n in chunks) * kv + new * kv
        visible = sum(n * start + n * (n + 1) // 2 for start, n in chunks)  # Σ over new tokens of keys seen
        flops = 2 * analysis.linear_params(cfg) * new + 4 * cfg.L * cfg.N * cfg.H * visible
        return max(bytes_ / self.memory_bandwidth, flops / self.flops_per_second) + self.overhead


class SimulatedEngine(Engine):
    def __init__(self, cfg: ModelConfig, cost: StepCost, num_blocks: int = 256, block_size: int = 16,
                 max_num_seqs: int = 32, max_tokens_per_step: int = 2048, enable_prefix_caching: bool = True,
                 policy: str = "continuous"):
        self.now = 0.0
        super().__init__(None, num_blocks, block_size, max_num_seqs, max_tokens_per_step, enable_prefix_caching,
                         policy=policy, clock=lambda: self.now)
        self._cfg, self.cost = cfg, cost
        self.busy = 0.0  # seconds spent in steps (the rest of ``now`` the engine sat idle)

    @property
    def cfg(self) -> ModelConfig:
        return self._cfg

    def _forward(self, batch):
        seconds = self.cost.seconds([(start, len(tokens)) for _, tokens, start in batch])
        self.now += seconds
        self.busy += seconds
        return None

    def _sample(self, logits, rows) -> list[int]:
        return [0] * len(rows)

    def run(self, workload: list[tuple[float, list[int], int]]) -> list[Request]:
        """Replay (arrival time, prompt, max_tokens) requests, EOS ignored; returns them in order."""
        pending = sorted(workload, key=lambda w: w[0])
        reqs, i = [], 0
        while i < len(pending) or self.has_work:
            while i < len(pending) and pending[i][0] <= self.now:
                arrival, prompt, max_tokens = pending[i]
                reqs.append(self.add_request(prompt, max_tokens, ignore_eos=True, arrival_time=arrival))
                i += 1
            if self.has_work:
                self.step()
                if self.last_step_tokens == 0 and not self.running:
                    raise RuntimeError("No request could be scheduled (the pool cannot hold any waiting prompt).")
            else:
                self.now = pending[i][0]  # idle until the next arrival
        return reqs


def summarize(reqs: list[Request]) -> dict:
    """Throughput and latency of finished requests (times in seconds): output tokens per second
    from the first arrival to the last finish, and TTFT / TPOT (time per output token after the
    first, vLLM's definition) as mean, p50 and p99."""
    done = [r for r in reqs if r.finish_time is not None]
    if not done:
        return {"requests": 0}
    duration = max(r.finish_time for r in done) - min(r.arrival_time for r in done)
    ttft = torch.tensor([r.ttft for r in done], dtype=torch.float64)
    tpot = torch.tensor([(r.token_times[-1] - r.token_times[0]) / (len(r.output) - 1)
                         for r in done if len(r.output) > 1], dtype=torch.float64)
    out = {"requests": len(done), "output_tokens": sum(len(r.output) for r in done), "duration_s": duration}
    out["output_tok_per_s"] = out["output_tokens"] / duration if duration > 0 else math.inf
    for name, x in (("ttft", ttft), ("tpot", tpot)):
        if len(x):
            out |= {f"{name}_mean_s": x.mean().item(), f"{name}_p50_s": x.quantile(0.5).item(),
                    f"{name}_p99_s": x.quantile(0.99).item()}
    return out


def nanovllm_workload(num_requests: int = 256, seed: int = 0, vocab: int = 10000) -> list[tuple[list[int], int]]:
    """nano-vllm's offline benchmark (its ``bench.py``): ``random.seed(seed)``, prompts of random ids
    in [0, vocab] with lengths uniform in [100, 1024], max_tokens uniform in [100, 1024]. With the
    defaults: 256 requests, 133,966 output tokens."""
    import random
    random.seed(seed)
    prompts = [[random.randint(0, vocab) for _ in range(random.randint(100, 1024))] for _ in range(num_requests)]
    limits = [random.randint(100, 1024) for _ in range(num_requests)]
    return list(zip(prompts, limits))
