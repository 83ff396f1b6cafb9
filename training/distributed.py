"""Data-parallel training across GPUs and nodes, launched with ``torchrun`` (DistributedDataParallel).

``torchrun --nproc-per-node N -m training build ...`` starts N copies of the
ordinary CLI; :func:`init_distributed` finds torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and joins the
process group: NCCL with one GPU per process on CUDA, gloo on CPU. Without
torchrun everything here is a no-op single-process context.

The run is kept identical to a single-process one with the same global batch:

- every rank draws the same balanced epoch order and flips (same seed) and
  takes its contiguous slice of each global batch (:meth:`DistContext.shard`);
- each rank's loss is scaled so that DDP's gradient average is the gradient of
  the mean loss over the whole global batch, even when the slices differ in size;
- BatchNorm layers are swapped for synchronised ones (:func:`sync_batchnorm`),
  so batch statistics and running statistics are those of the global batch:
  ``torch.nn.SyncBatchNorm`` on CUDA, :class:`CrossProcessBatchNorm` elsewhere
  (PyTorch's SyncBatchNorm refuses CPU tensors).

Rank 0 alone logs, shows progress bars, writes checkpoints and the bundle;
the other ranks return once training is done. Hold-out predictions for model
selection are sharded over the ranks and gathered, so every rank selects the
same epoch.

One machine, all its GPUs (or N CPU processes with ``--device cpu``)::

    torchrun --standalone --nproc-per-node gpu -m training build --manifest m.csv --out bundles/b \\
        --checkpoint-dir ckpt/b --resume

Two machines with 8 GPUs each (the same command on both; c10d rendezvous assigns the ranks)::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint host0:29500 \\
        --rdzv-id run1 -m training build --config run.toml

Every node needs the manifest and images at the same paths. Resuming needs
the checkpoint directory on a file system every node can read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from deepminer.fcn import select_device

log = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Patch cutting and rank 0's checkpoint writes happen between collectives; the
# default NCCL timeout (10 min) is too short for large data sets.
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job: its rank, the world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None = None  # None: single process, no process group

    @classmethod
    def single(cls, device: torch.device) -> DistContext:
        return cls(rank=0, world_size=1, local_rank=0, device=device)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.backend is not None and self.world_size > 1

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This rank's contiguous slice of a global batch; slice sizes differ by at most one."""
        if not self.is_distributed:
            return indices
        bounds = np.linspace(0, len(indices), self.world_size + 1).round().astype(int)
        return indices[bounds[self.rank] : bounds[self.rank + 1]]

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64)."""
        if not self.is_distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def gather_rows(self, array: np.ndarray) -> np.ndarray:
        """Concatenate every rank's ``array`` along axis 0, in rank order (the inverse of :meth:`shard`)."""
        if not self.is_distributed:
            return array
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, array)
        nonempty = [p for p in parts if p.size]
        return np.concatenate(nonempty) if nonempty else array

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train: ``model`` itself, or DDP around it with synchronised BatchNorm.

        ``model`` must already be on :attr:`device`. Its BatchNorm layers are
        swapped in place; :meth:`unwrap` swaps them back.
        """
        if not self.is_distributed:
            return model
        sync_batchnorm(model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def unwrap(self, model: nn.Module) -> None:
        """Undo :meth:`wrap` on ``model``: plain BatchNorm layers sharing the trained weights and statistics."""
        if self.is_distributed:
            plain_batchnorm(model)


_context: DistContext | None = None


def launched_by_torchrun() -> bool:
    """True when the process was started by ``torchrun`` (its environment variables are set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def init_distributed(device: str = "auto") -> DistContext:
    """Join torchrun's process group, or return a single-process context when not under torchrun.

    ``device`` is the config's device (``auto``, ``cpu``, ``cuda``); under
    torchrun on CUDA each process takes GPU ``LOCAL_RANK`` and NCCL, otherwise gloo.
    """
    global _context
    if _context is not None:
        return _context
    if not launched_by_torchrun():
        return DistContext.single(select_device(device))
    rank, world_size, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    chosen = select_device(device)
    if chosen.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                "start at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(local_rank)
        chosen, backend = torch.device("cuda", local_rank), "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    _context = DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen, backend=backend)
    log.info("distributed: rank %d of %d on %s (%s)", rank, world_size, chosen, backend)
    return _context


def current_context(device: str = "auto") -> DistContext:
    """The context :func:`init_distributed` set up, else a single-process one on ``device``."""
    return _context if _context is not None else DistContext.single(select_device(device))


def shutdown() -> None:
    """Leave the process group (if any); safe to call more than once."""
    global _context
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _context = None


@contextmanager
def distributed_run(device: str = "auto") -> Iterator[DistContext]:
    """:func:`init_distributed` for the duration of a command; ranks other than 0 log warnings only."""
    ctx = init_distributed(device)
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        yield ctx
    finally:
        shutdown()


class _AllReduceSum(torch.autograd.Function):
    """``Σ_ranks x`` with its gradient: the gradient of a sum is the sum of the gradients, all-reduced."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _AllReduceSum.apply(grad)


class CrossProcessBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch summed over all ranks.

    For any device and backend (gloo on CPU included). With ``n`` the global
    number of values per channel: ``mean = Σx / n``, ``var = Σ(x - mean)² / n``
    (two passes, to avoid the cancellation of ``E[x²] - mean²``); the running
    variance gets the unbiased ``var · n / (n - 1)``, like ``nn.BatchNorm2d``.
    In eval mode, or without a process group, it is plain BatchNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() // x.shape[1], dtype=x.dtype, device=x.device)
        summed = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        n = summed[-1]
        mean = summed[:-1] / n
        shape = (1, -1) + (1,) * (x.dim() - 2)
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp(min=1), factor)
        return y


def _swap_batchnorm(module: nn.Module, make: type[_BatchNorm], keep: tuple[type, ...]) -> None:
    """Replace every BatchNorm under ``module`` whose type is not in ``keep`` by ``make``, in place.

    The new layer shares the old one's parameters and buffers (same tensors).
    """
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and type(child) not in keep:
            new = make(child.num_features, eps=child.eps, momentum=child.momentum, affine=child.affine,
                       track_running_stats=child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            _swap_batchnorm(child, make, keep)


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Synchronise BatchNorm across ranks, in place: SyncBatchNorm on CUDA, :class:`CrossProcessBatchNorm` elsewhere.

    Parameters and buffers are shared with the layers they replace, and state
    dict keys are unchanged, so checkpoints load into the plain model.
    """
    on_cuda = any(p.is_cuda for p in model.parameters())
    kind: type[_BatchNorm] = nn.SyncBatchNorm if on_cuda else CrossProcessBatchNorm
    _swap_batchnorm(model, kind, keep=(nn.SyncBatchNorm, CrossProcessBatchNorm))
    return model


def plain_batchnorm(model: nn.Module) -> nn.Module:
    """Undo :func:`sync_batchnorm` in place: plain ``BatchNorm2d`` (the only kind ResNets have)."""
    _swap_batchnorm(model, nn.BatchNorm2d, keep=(nn.BatchNorm2d,))
    return model
