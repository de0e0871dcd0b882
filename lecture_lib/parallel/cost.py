"""The arithmetic of tensor-parallel decode: what each of W chips reads, what they exchange, and
when one more chip stops paying.

A decode step of B tokens over W chips (``tp``: heads and MLP units split W ways):

- **memory time**: each chip reads its 1/W of the layers' weights, the replicated rest (LM head,
  norms; the embedding table is held whole too, but a step only looks B rows up in it) and its
  1/W of the KV cache, at its own HBM bandwidth:
  (sharded_bytes / W + replicated_read_bytes + B·S·kv_bytes_per_token / W) / BW_hbm;
- **communication**: 2 all-reduces per layer of a [B D] activation (M = B·D·bytes). A ring
  all-reduce is a reduce-scatter then an all-gather, each moving (W − 1)/W · M per chip over its
  link: t = 2·(W − 1)/W · M / BW_link plus a fixed latency per all-reduce, which dominates at
  decode sizes (a few kB; see the scaling book's appendix C on latency-bound collectives).

kipply's "Transformer Inference Arithmetic" counts 4·(W − 1)·D/W bytes per layer per token: two
all-reduces of (W − 1)/W · D bf16 values, that is one phase of each ring (``kipply_bytes_per_layer``);
a full ring all-reduce sends twice that (``ring_bytes_per_layer``). For latency she charges 8 µs
per message (measured on V100 NVLink), 4 messages per layer: ``kipply_latency``.

The step is memory time + communication (they do not overlap: each all-reduce waits for its
layer's matmul, and the next layer waits for it). The speed-up over one chip grows like W while
the memory time dominates, and flattens at 1 / (communication share): past that point another
chip saves less memory time than it adds, and TP stops paying.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import analysis
from ..config import ModelConfig

# Links the notebooks meet, bytes/s in one direction per GPU (what a ring's step sends over).
LINKS = {
    "NVLink 4 (H100/H200 SXM)": {"bandwidth": 450e9, "source": "NVIDIA H100 datasheet: NVLink 900 GB/s, "
                                 "i.e. 450 GB/s each way"},
    "NVLink 3 (A100 SXM)": {"bandwidth": 300e9, "source": "kipply: 300 GB/s per direction (marketed as 600 GB/s)"},
    "PCIe 4.0 x16": {"bandwidth": 32e9, "source": "PCI-SIG: 16 GT/s x 16 lanes, about 32 GB/s each way"},
    "TPU v5e ICI (one link)": {"bandwidth": 4.5e10, "source": "scaling book: 4.5e10 B/s unidirectional per link"},
}
KIPPLY_MESSAGE_SECONDS = 8e-6  # kipply: the latency of one message, from a V100 NVLink measurement


def sharded_bytes(cfg: ModelConfig, bytes_per_value: float = analysis.BF16) -> float:
    """The weights that tensor parallelism splits: every layer's projections (not the LM head)."""
    return (analysis.linear_params(cfg) - cfg.D * cfg.V) * bytes_per_value


def replicated_read_bytes(cfg: ModelConfig, bytes_per_value: float = analysis.BF16) -> float:
    """What every chip keeps whole and reads each step: the LM head and the norms."""
    return (cfg.D * cfg.V + analysis.norm_params(cfg)) * bytes_per_value


def bytes_per_chip(cfg: ModelConfig, W: int, B: int = 1, S: int = 0, bytes_per_value: float = analysis.BF16) -> float:
    """The memory one of W chips holds: its slice of the layers, the replicated weights (the
    embedding table too, which a step only looks rows up in) and its K/W heads of the KV cache."""
    embedding = 0 if cfg.tie_embeddings else cfg.V * cfg.D * bytes_per_value
    return read_per_chip(cfg, W, B, S, bytes_per_value) + embedding


def read_per_chip(cfg: ModelConfig, W: int, B: int = 1, S: int = 0, bytes_per_value: float = analysis.BF16) -> float:
    """The bytes one of W chips reads in a decode step at context S: its weights and its KV heads."""
    kv = B * S * analysis.kv_bytes_per_token(cfg, bytes_per_value)
    return sharded_bytes(cfg, bytes_per_value) / W + replicated_read_bytes(cfg, bytes_per_value) + kv / W


def ring_bytes_per_layer(cfg: ModelConfig, W: int, B: int = 1, bytes_per_value: float = analysis.BF16) -> float:
    """Bytes one chip sends per layer: 2 ring all-reduces of B·D values, 2·(W − 1)/W of each."""
    return 2 * 2 * (W - 1) / W * B * cfg.D * bytes_per_value


def kipply_bytes_per_layer(cfg: ModelConfig, W: int, B: int = 1, bytes_per_value: float = analysis.BF16) -> float:
    """kipply's count, 4·(W − 1)·D/W bytes per layer per token in bf16: half the ring's."""
    return 2 * (W - 1) / W * B * cfg.D * bytes_per_value


def kipply_latency(cfg: ModelConfig, message_seconds: float = KIPPLY_MESSAGE_SECONDS) -> float:
    """kipply's small-batch communication time per token: 4 messages per layer, 8 µs each."""
    return 4 * cfg.L * message_seconds


@dataclass
class TPStep:
    W: int
    memory_s: float   # reading this chip's weights and KV at its HBM bandwidth
    comm_s: float     # 2·L all-reduces: bandwidth term + latency term
    read_bytes: float  # what this chip reads in the step

    @property
    def seconds(self) -> float:
        return self.memory_s + self.comm_s


def tp_step(cfg: ModelConfig, W: int, *, hbm_bandwidth: float, link_bandwidth: float, allreduce_latency: float,
            B: int = 1, S: int = 0, bytes_per_value: float = analysis.BF16) -> TPStep:
    """The decode step of B sequences at context S on W chips, memory-bound (B well under the
    critical batch, as at batch 1): memory time + 2·L all-reduces (none when W = 1)."""
    read = read_per_chip(cfg, W, B, S, bytes_per_value)
    comm = 0.0
    if W > 1:
        per_allreduce = 2 * (W - 1) / W * B * cfg.D * bytes_per_value / link_bandwidth + allreduce_latency
        comm = 2 * cfg.L * per_allreduce
    return TPStep(W, read / hbm_bandwidth, comm, read)


def speedups(cfg: ModelConfig, Ws, **kwargs) -> list[float]:
    """Step time on one chip over step time on W, for each W."""
    one = tp_step(cfg, 1, **kwargs).seconds
    return [one / tp_step(cfg, W, **kwargs).seconds for W in Ws]


def limit_speedup(cfg: ModelConfig, **kwargs) -> float:
    """The ceiling as W grows without bound: the whole step over what never shrinks (the
    replicated weights' memory time and the all-reduces' latency)."""
    one = tp_step(cfg, 1, **kwargs)
    big = tp_step(cfg, 10**6, **kwargs)
    return one.seconds / big.seconds
