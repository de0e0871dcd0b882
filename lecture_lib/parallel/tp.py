"""Tensor parallelism (Megatron-LM, Shoeybi et al. 2019): one model over W devices, each holding a
slice of every layer, with one all-reduce after each half of a layer.

For one layer, with W ranks ("world size") and this rank r:

- **attention**: the query heads split N -> N/W and the KV heads K -> K/W (each rank attends with
  its own heads, so its KV cache holds only its K/W heads: the cache is sharded too).
  ``wq``, ``wk``, ``wv`` are *column-parallel* (each rank keeps the output rows of its heads);
  ``wo`` is *row-parallel* (each rank keeps the input columns of its heads, so its product is a
  partial sum of the full output) and an **all-reduce** (sum) over the ranks completes it;
- **MLP**: ``w_gate`` and ``w_up`` column-parallel (F -> F/W hidden units each), ``w_down``
  row-parallel, then the second **all-reduce**.

So a decode step costs 2 all-reduces of a [B T D] activation per layer, and every rank reads
1/W of the layers' weights and of the KV cache. The embedding, the norms and the LM head stay
whole on every rank (gpt-fast does the same; a vocabulary-parallel head would save V·D/W more).
Each rank ends with the full logits and samples the same token (greedy, or sampling with the same
seed on every rank).

The collectives are ``torch.distributed``'s functional all-reduce (NCCL on GPUs, gloo on CPUs),
which ``torch.compile`` traces and a CUDA graph can capture, so the fast path (``FastGenerator``:
static cache, compiled step, CUDA graph) runs sharded as it is. Launch one process per device
with ``torchrun`` (``python -m torch.distributed.run --nproc-per-node W ...``); see
``parallel.run``. After ``shard_(model)``, ``model.cfg`` is this rank's slice of the shape (N/W,
K/W, F/W), so that caches built from it hold K/W heads and ``analysis`` counts this rank's bytes.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from ..model import Transformer


def init(backend: str | None = None) -> tuple[int, int]:
    """Join the process group that ``torchrun`` set up (its environment variables): NCCL when
    CUDA is available, else gloo. Returns (rank, world size); on CUDA also selects the device
    ``cuda:LOCAL_RANK``. Does nothing if the group already exists."""
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            raise RuntimeError("No process group: launch with torchrun, e.g. `python -m torch.distributed.run "
                               "--nproc-per-node 2 -m lecture_lib.parallel.run`, or call "
                               "torch.distributed.init_process_group yourself first.")
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def check_divisible(cfg, world: int) -> None:
    """Tensor parallelism splits heads and hidden units evenly: K, N and F must be multiples of W."""
    if not isinstance(world, int) or world < 1:
        raise ValueError(f"The world size must be a positive integer, got {world!r}.")
    bad = [f"{name} = {value}" for name, value in (("K (KV heads)", cfg.K), ("N (query heads)", cfg.N),
                                                   ("F (MLP width)", cfg.F)) if value % world]
    if bad:
        raise ValueError(f"Tensor parallelism over {world} ranks splits heads and MLP units evenly, but "
                         f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not divisible by {world}. "
                         f"Use a world size that divides K = {cfg.K} (each rank holds K/W KV heads).")


class AllReduce:
    """The forward hook a row-parallel layer gets: sum its partial output over the ranks. Counts
    its calls (in eager mode; under ``torch.compile`` the count is traced away) so that tests can
    check 2 all-reduces per layer per step."""

    def __init__(self, group=None):
        self.group = group if group is not None else dist.group.WORLD
        self.calls = 0

    def __call__(self, module, inputs, output):
        from torch.distributed import _functional_collectives as funcol
        self.calls += 1
        return funcol.all_reduce(output, "sum", self.group)


def _keep_rows(linear: nn.Linear, rank: int, world: int) -> None:
    """Column-parallel: keep this rank's block of output features (rows of the weight)."""
    rows = linear.weight.shape[0] // world
    linear.weight = nn.Parameter(linear.weight.detach()[rank * rows:(rank + 1) * rows].clone(), requires_grad=False)
    linear.out_features = rows


def _keep_cols(linear: nn.Linear, rank: int, world: int) -> None:
    """Row-parallel: keep this rank's block of input features (columns of the weight)."""
    cols = linear.weight.shape[1] // world
    linear.weight = nn.Parameter(linear.weight.detach()[:, rank * cols:(rank + 1) * cols].clone(), requires_grad=False)
    linear.in_features = cols


@torch.no_grad()
def shard_(model: Transformer, rank: int | None = None, world: int | None = None, group=None) -> AllReduce:
    """Keep this rank's slice of every layer of ``model`` (in place) and hook the all-reduces.
    Shard before ``fuse_projections_`` or quantizing (the projections must be plain, unfused
    ``nn.Linear``); both work on the sharded model. Returns the hook, whose ``calls`` counts the
    all-reduces. ``rank``/``world``: default from the process group."""
    rank = dist.get_rank(group) if rank is None else rank
    world = dist.get_world_size(group) if world is None else world
    cfg = model.cfg
    check_divisible(cfg, world)
    if getattr(model, "tp_world", 1) != 1:
        raise ValueError("This model is already sharded.")
    local = cfg.replace(N=cfg.N // world, K=cfg.K // world, F=cfg.F // world)
    hook = AllReduce(group)
    for block in model.layers:
        attn, mlp = block.attn, block.mlp
        if attn.wqkv is not None or mlp.w_gate_up is not None or \
                not all(type(m) is nn.Linear for m in (attn.wq, attn.wk, attn.wv, attn.wo,
                                                       mlp.w_gate, mlp.w_up, mlp.w_down)):
            raise TypeError("shard_ needs the plain, unfused projections: shard first, then fuse or quantize.")
        for linear in (attn.wq, attn.wk, attn.wv, mlp.w_gate, mlp.w_up):
            _keep_rows(linear, rank, world)  # heads r*N/W.. (rows are head-major: (N H) -> N blocks of H)
        for linear in (attn.wo, mlp.w_down):
            _keep_cols(linear, rank, world)
            linear.register_forward_hook(hook)
        attn.cfg = local
    model.cfg = local
    model.tp_rank, model.tp_world = rank, world
    return hook
