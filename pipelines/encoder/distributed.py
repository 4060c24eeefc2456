"""Data-parallel training of the encoder under torchrun: the process group from torchrun's env
(NCCL on GPUs, gloo on CPUs), one deterministic shard of every global batch per rank, and
CLIP-style gathering of embeddings, so that every rank's contrastive loss is the loss of the whole
global batch and DistributedDataParallel's averaged gradient is the single-process gradient.

Without torchrun (no WORLD_SIZE in the env) everything here is a no-op around one process."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from concord.devices import resolve_device
from concord.models.dual_encoder import Encoded

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long a collective may wait, e.g. the other ranks at the barrier while rank 0 evaluates,
# saves and registers the model (an upload to a remote MLflow can take minutes).
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class Context:
    """Where this process sits in the job: its rank, the world, and its device."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "nccl" | "gloo" when a process group is up

    @property
    def distributed(self) -> bool:
        """More than one process trains: batches are sharded and embeddings gathered."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that evaluates, logs, saves and registers."""
        return self.rank == 0


def launched_by_torchrun(env: Mapping[str, str] = os.environ) -> bool:
    """torchrun (torch.distributed.run) set this process's rank and world size."""
    return "WORLD_SIZE" in env and "RANK" in env


def resolve_rank_device(
    spec: str, local_rank: int, world_size: int, *, setting: str
) -> torch.device:
    """The device of one rank: cuda:LOCAL_RANK for `auto` or `cuda` on a GPU machine.

    Raises:
        ValueError: an explicit cuda:N with more than one process (every rank would share it).
    """
    device = resolve_device(spec, setting=setting)
    if device.type != "cuda" or world_size == 1:
        return device
    if spec.strip().lower() not in ("auto", "cuda"):
        raise ValueError(
            f"{setting}: {spec!r} names one GPU for {world_size} processes; use auto or cuda "
            "(each torchrun process takes cuda:LOCAL_RANK, or restrict CUDA_VISIBLE_DEVICES)"
        )
    return resolve_device(f"cuda:{local_rank}", setting=setting)


@contextmanager
def session(device_spec: str, *, setting: str = "--device") -> Iterator[Context]:
    """This process's training context; a process group for the block when torchrun started it.

    Under torchrun (WORLD_SIZE, RANK, LOCAL_RANK and the rendezvous in the env) it joins the group
    (NCCL when the ranks train on GPUs, else gloo) and destroys it on the way out. A group the
    caller already initialised is used as it is and left up.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        device = resolve_rank_device(device_spec, local, world, setting=setting)
        yield Context(device, rank, world, local, str(dist.get_backend()))
        return
    if not launched_by_torchrun():
        yield Context(resolve_device(device_spec, setting=setting))
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_rank_device(device_spec, local, world, setting=setting)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=device)
    else:
        dist.init_process_group(backend, timeout=TIMEOUT)
    log.info("rank %d of %d on %s (%s)", rank, world, device, backend)
    try:
        yield Context(device, rank, world, local, backend)
    finally:
        dist.destroy_process_group()


def steps_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    """Global batches per epoch over `n` examples. With several ranks every batch needs a row per
    rank, so a last partial batch smaller than the world is dropped (fewer than world_size
    examples of a reshuffled epoch).

    Raises:
        ValueError: the global batch (or the whole set) is smaller than the world.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, not {batch_size}")
    if world_size > 1 and min(batch_size, n) < world_size:
        raise ValueError(
            f"{world_size} processes need a global batch of at least {world_size} examples "
            f"(batch size {batch_size}, {n} training examples)"
        )
    full, rest = divmod(n, batch_size)
    return full + (1 if rest and rest >= world_size else 0)


def shard(batch: np.ndarray, ctx: Context) -> np.ndarray:
    """This rank's rows of a global batch: contiguous, sizes differing by at most one, in rank
    order, so the gathered embeddings line up with the global batch."""
    if not ctx.distributed:
        return batch
    return np.array_split(batch, ctx.world_size)[ctx.rank]


def gather_encoded(x: Encoded, ctx: Context, *, tokens: bool = True) -> Encoded:
    """All ranks' embeddings in rank order, differentiable: the gradient of every rank's loss
    reaches the rank that computed each row (torch.distributed.nn.functional.all_gather), so with
    DDP's averaging the step is the single-process step on the global batch.

    Args:
        x: this rank's Encoded rows (any row count; token lengths may differ across ranks).
        tokens: also gather tokens and masks (the FILIP loss); without, the result's tokens are
            empty (B, 0, E) and only `pooled` is meaningful (the global loss).
    """
    if not ctx.distributed:
        return x
    rows, length = x.tokens.shape[:2]
    local = torch.tensor([rows, length], device=x.pooled.device)
    sizes = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, local)
    counts = [int(s[0]) for s in sizes]
    top, longest = max(counts), max(int(s[1]) for s in sizes)
    pooled = _cat(_all_gather(_pad_rows(x.pooled, top)), counts)
    if not tokens:
        empty = x.tokens.new_zeros(len(pooled), 0, x.tokens.shape[2])
        return Encoded(
            pooled, empty, torch.ones(len(pooled), 0, dtype=torch.bool, device=empty.device)
        )
    grow = longest - length
    padded = _pad_rows(F.pad(x.tokens, (0, 0, 0, grow)), top)
    mask = _pad_rows(F.pad(x.mask, (0, grow)), top).to(torch.uint8)  # gloo gathers no bools
    masks = [torch.empty_like(mask) for _ in range(ctx.world_size)]
    dist.all_gather(masks, mask)
    return Encoded(pooled, _cat(_all_gather(padded), counts), _cat(masks, counts).bool())


def local_share(rows: Tensor, ctx: Context) -> Tensor:
    """The factor that turns this rank's mean over its `rows` items into its part of the global
    batch's mean: rows * world / (rows summed over ranks). A term that needs no gathering (an
    image against its own caption's foils) is a mean over this shard; times this factor, DDP's
    averaging of the ranks' gradients gives the gradient of the mean over the global batch, also
    when shards differ in size. 1 on one process; 0 where no rank has an item.

    Args:
        rows: 0-d tensor on this rank's device, how many items the local mean is over.
    """
    if not ctx.distributed:
        return torch.ones((), device=rows.device)
    return rows.to(torch.float32) * ctx.world_size / _summed(rows).clamp_min(1.0)


def mean_over_ranks(value: Tensor, ctx: Context) -> float:
    """The mean of a 0-d tensor over the ranks (a step's loss as one process would log it: the
    gathered part is the same on every rank, the local terms are each rank's share)."""
    if not ctx.distributed:
        return float(value.detach())
    return float(_summed(value)) / ctx.world_size


def _summed(t: Tensor) -> Tensor:
    """A 0-d tensor summed over the ranks, in float32, outside the autograd graph."""
    total = t.detach().to(torch.float32).clone()
    dist.all_reduce(total)
    return total


def _all_gather(t: Tensor) -> tuple[Tensor, ...]:
    # The autograd all_gather that every torch >= 2.4 has; torch 2.15 deprecates it in favour of
    # the private torch.distributed._functional_collectives, whose names still change.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return tuple(dist_fn.all_gather(t))


def _pad_rows(t: Tensor, rows: int) -> Tensor:
    return torch.cat([t, t.new_zeros(rows - len(t), *t.shape[1:])]) if len(t) < rows else t


def _cat(parts: tuple[Tensor, ...] | list[Tensor], counts: list[int]) -> Tensor:
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])


class Step(nn.Module):
    """`fn(module, *args)` as a module's forward, so that DistributedDataParallel sees the whole
    training step (encoding through the gathered loss) as one forward of `module`'s parameters."""

    def __init__(self, module: nn.Module, fn: Callable[..., Tensor]) -> None:
        super().__init__()
        self.module = module
        self.fn = fn

    def forward(self, *args: Any) -> Tensor:
        return self.fn(self.module, *args)


def wrap(step: Step, ctx: Context) -> nn.Module:
    """`step` under DistributedDataParallel when several ranks train; else `step` itself."""
    if not ctx.distributed:
        return step
    return DistributedDataParallel(
        step, device_ids=[ctx.device] if ctx.device.type == "cuda" else None
    )


def barrier(ctx: Context) -> None:
    """Wait until every rank is here (e.g. while rank 0 evaluates)."""
    if not ctx.distributed:
        return
    if ctx.device.type == "cuda":
        dist.barrier(device_ids=[ctx.device.index or 0])
    else:
        dist.barrier()


def from_main(value: T, ctx: Context) -> T:
    """Rank 0's `value` on every rank (picklable objects)."""
    if not ctx.distributed:
        return value
    box: list[Any] = [value if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.backend == "nccl" else None)
    return box[0]
