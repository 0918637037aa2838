"""Multi-process data-parallel (DDP) training under ``torchrun`` or ``accelerate launch``.

fastseg never starts processes itself: a launcher starts N copies of ``python -m fastseg fit``
and sets RANK / WORLD_SIZE / LOCAL_RANK; this module reads them. In a single process every helper
here is a no-op, so ``fit`` behaves exactly as without it.

What happens under a launcher (see ``ddp``):

- fastai's ``DistributedTrainer`` (accelerate) wraps the model in DDP and each DataLoader in a
  ``DistributedDL``, so every rank sees its own shard of each epoch (per-process batch ``bs``,
  effective batch ``bs x N``);
- ``SyncConfusion`` sums the metrics' confusion matrices over ranks before mIoU/Dice are computed,
  after dropping the samples ``DistributedDL`` repeats to make shards even;
- progress bars and the epoch table show on rank 0 only (fastai removes them on other ranks), and
  callers guard every file write and notice with ``is_main_process`` / ``main_only``.

Two small subclasses work around fastai 2.8 assuming CUDA; both are inert on GPUs:
``ShardDL`` (``DistributedDL._broadcast`` hard-codes ``.cuda()``), ``DDPTrainer``
(``DistributedTrainer._wrap_dl`` reads ``model.device``, which a CPU DDP module lacks; and
SyncBatchNorm, which needs GPU modules, is turned on for GPU models only).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.distributed import DistributedDL, DistributedTrainer
from fastai.learner import Recorder

from ..config import Notify, silent

__all__ = ["world_size", "local_world_size", "rank", "is_distributed", "is_main_process", "main_only", "setup", "barrier",
           "broadcast_value", "run_on_main", "init_process_group", "ShardDL", "DDPTrainer", "SyncConfusion", "RankStats", "ddp"]


def world_size() -> int:
    """Number of processes started by the launcher (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def local_world_size() -> int:
    """Processes the launcher started on this machine (they share its RAM); ``world_size()`` if it does not say."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))


def rank() -> int:
    """This process's global rank (0 when not launched)."""
    return int(os.environ.get("RANK", 0))


def is_distributed() -> bool:
    return world_size() > 1


def is_main_process() -> bool:
    """True on rank 0, and always in a single process: the one process that writes files and prints."""
    return rank() == 0


def main_only(notify: Notify) -> Notify:
    """``notify`` on rank 0, a no-op elsewhere, so a notice shows once instead of N times."""
    return notify if is_main_process() else silent


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init_process_group() -> None:
    """Join the launcher's process group (gloo on CPU, nccl on GPU) through accelerate; no-op alone."""
    if is_distributed() and not _initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def setup(notify: Notify = silent) -> Notify:
    """Call first in a command that may run under a launcher, before anything touches a GPU.

    Joins the process group, which also pins this process to its GPU (LOCAL_RANK), so the
    DataLoaders built next put batches there rather than all on GPU 0. Returns ``notify`` for
    rank 0 only. In one process: returns ``notify`` and does nothing else.
    """
    init_process_group()
    return main_only(notify)


def barrier() -> None:
    """Wait for every rank (e.g. rank 0 finishing a file the others read); no-op in one process."""
    if is_distributed():
        init_process_group()
        torch.distributed.barrier()


def broadcast_value(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object); returns ``value`` in one process."""
    if not is_distributed():
        return value
    init_process_group()
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


@contextmanager
def _solo() -> Iterator[None]:
    """This process sees itself as a single process (WORLD_SIZE=1, RANK=0) inside the block.

    fastai reads WORLD_SIZE/RANK from the environment on every call to decide whether to all-gather
    losses and wait at barriers; while rank 0 works alone, the other ranks never join those, so
    without this rank 0 would wait for them forever.
    """
    saved = {k: os.environ.get(k) for k in ("WORLD_SIZE", "RANK")}
    os.environ.update(WORLD_SIZE="1", RANK="0")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_on_main(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(...)`` run by rank 0 alone (as a single process); every rank gets its result or its error.

    For work that must not be split or repeated, such as the LR finder. In one process: ``fn(...)``.
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    outcome = None
    if is_main_process():
        try:
            with _solo():
                outcome = (True, fn(*args, **kwargs))
        except Exception as e:  # re-raised below, on every rank, so no rank waits for a result forever
            outcome = (False, e)
    ok, value = broadcast_value(outcome)
    if not ok:
        raise value
    return value


def _comm_device() -> torch.device:
    """Where collective tensors must live: CUDA for nccl, CPU for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" \
        else torch.device("cpu")


class ShardDL(DistributedDL):
    """``DistributedDL`` whose index broadcast works on gloo (CPU) too.

    fastai's version moves the indices to CUDA unconditionally; on nccl this one does the same.
    """

    def _broadcast(self, t, rank):
        t = torch.tensor(t, dtype=torch.long, device=_comm_device())
        torch.distributed.broadcast(t, rank)
        return t.cpu().tolist()

    def real_in_batch(self, bs: int) -> int:
        """How many of the last ``bs`` items this rank produced are real, not shard padding.

        ``DistributedDL`` repeats up to N-1 samples at the end of the epoch so that every rank gets
        the same number; they sit at the end of the last ranks' shards.
        """
        if not all(hasattr(self, a) for a in ("i", "n", "n_padded")):
            return bs
        start = self.rank * self.n_padded // self.world_size + self.i - bs  # global position of the batch
        return max(0, min(bs, self.n - start))


class DDPTrainer(DistributedTrainer):
    """``DistributedTrainer`` that also runs on CPU (gloo) and uses ``ShardDL``.

    SyncBatchNorm is applied only to a model on the GPU (it has no CPU kernel); on a GPU this class
    does exactly what fastai's does.
    """

    def __init__(self, sync_bn: bool = True, **kwargs):
        super().__init__(sync_bn=sync_bn and torch.cuda.is_available(), **kwargs)

    def _wrap_dl(self, dl):
        if isinstance(dl, DistributedDL):
            return dl
        model = self.learn.model
        device = getattr(model, "device", None) or next(model.parameters()).device
        return ShardDL(dl, device=device)


@dataclass
class RankStats:
    """Samples each rank trained and validated on (padding excluded), gathered from all ranks."""

    train: list[int] = field(default_factory=list)
    valid: list[int] = field(default_factory=list)


class SyncConfusion(Callback):
    """Makes fastseg's confusion-matrix metrics cover the whole validation set, not one shard.

    Runs just before the Recorder: per validation batch it drops shard padding from ``pred`` and
    ``yb`` (so no sample counts twice), and after validation it all-reduces (sums) every metric's
    confusion matrix, so mIoU and Dice come from the global matrix on every rank. It also counts
    the samples each rank saw (``stats``): proof that every rank took part.
    """

    order = Recorder.order - 1

    def __init__(self):
        self.stats = RankStats()
        self._counts = [0, 0]  # train, valid samples this rank saw in the current epoch

    def before_epoch(self):
        self._counts = [0, 0]

    def after_batch(self):
        bs = len(self.learn.yb[0])
        keep = self.dl.real_in_batch(bs) if isinstance(self.dl, ShardDL) else bs
        if not self.training and keep < bs:
            self.learn.pred = self.learn.pred[:keep]
            self.learn.yb = tuple(y[:keep] for y in self.learn.yb)
        self._counts[0 if self.training else 1] += keep

    def after_validate(self):
        if not _initialized():
            return
        device = _comm_device()
        for metric in self.learn.metrics:
            if not hasattr(metric, "cm") or not hasattr(metric, "n_classes"):
                continue
            cm = metric.cm if metric.cm is not None else torch.zeros(metric.n_classes, metric.n_classes, dtype=torch.long)
            cm = cm.to(device)
            torch.distributed.all_reduce(cm)
            metric.cm = cm
        counts = torch.zeros(2, world_size(), dtype=torch.long, device=device)
        counts[:, rank()] = torch.tensor(self._counts, dtype=torch.long)
        torch.distributed.all_reduce(counts)
        self.stats = RankStats(train=counts[0].tolist(), valid=counts[1].tolist())


def _revert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """SyncBatchNorm layers back to BatchNorm2d (same parameters and statistics) for export."""
    if isinstance(module, torch.nn.SyncBatchNorm):
        bn = torch.nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        if module.affine:
            bn.weight, bn.bias = module.weight, module.bias
        bn.running_mean, bn.running_var = module.running_mean, module.running_var
        bn.num_batches_tracked = module.num_batches_tracked
        bn.train(module.training)
        return bn
    for name, child in module.named_children():
        module.add_module(name, _revert_sync_batchnorm(child))
    return module


@contextmanager
def ddp(learn, sync_bn: bool = True, notify: Notify = silent) -> Iterator[SyncConfusion | None]:
    """Train ``learn`` data-parallel inside this block when launched by torchrun/accelerate.

    Yields the ``SyncConfusion`` callback (its ``stats`` say what each rank did) or ``None`` in a
    single process, where nothing is changed. Mirrors ``Learner.distrib_ctx`` with ``DDPTrainer``,
    and ``find_unused_parameters=True`` because the SMP timm-efficientnet encoder keeps layers
    whose parameters get no gradient (DDP would otherwise stop with an error).
    """
    if not is_distributed():
        yield None
        return
    from accelerate.utils import DistributedDataParallelKwargs

    init_process_group()
    notify = main_only(notify)
    n, bs = world_size(), learn.dls.train.bs
    notify(f"distributed: {n} processes, effective batch size {bs * n} ({bs} per process x {n})")
    if sync_bn and not torch.cuda.is_available():
        notify("SyncBatchNorm skipped: it needs GPUs (CPU processes keep per-process BatchNorm)")
    trainer = DDPTrainer(sync_bn=sync_bn, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    sync = SyncConfusion()
    progress = [cb for cb in learn.cbs if isinstance(cb, ProgressCallback)]
    learn.add_cbs([trainer, sync])
    if rank() != 0:
        learn.remove_cbs(progress)
    try:
        yield sync
    finally:
        learn.remove_cbs([trainer, sync])
        learn.add_cbs([cb for cb in progress if cb not in learn.cbs])
        learn.model = _revert_sync_batchnorm(learn.model)
