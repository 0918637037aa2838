"""``--log tensorboard``: event files in ``runs/<name>/tensorboard`` (``tensorboard --logdir runs``).

fastai's TensorBoardCallback logs the per-batch loss and hyper-parameters (learning rate, momentum)
and the per-epoch metrics; fastseg adds the config as text and, at the end, the final per-class
scores (scalars and a table). TensorBoard has no artifact store: the model's path is logged as text.
"""

from __future__ import annotations

from numbers import Real
from pathlib import Path

from fastai.callback.tensorboard import TensorBoardCallback
from torch.utils.tensorboard import SummaryWriter

from .tracking import final_metrics, final_rows, markdown_table

__all__ = ["Tracker", "RunTensorBoard", "HINT"]

HINT = "check that the run folder is writable"


class RunTensorBoard(TensorBoardCallback):
    """fastai's TensorBoardCallback with a step that keeps counting across the run's fits; no graph, no images
    (its prediction images would run an extra validation batch through the metrics), and per training batch
    only the numeric hyper-parameters (torch's AdamW also carries flags such as ``foreach=None``)."""

    def __init__(self, log_dir: str):
        super().__init__(log_dir=log_dir, trace_model=False, log_preds=False)
        self.done_iters, self.offset = 0, 0

    @property
    def train_iter(self) -> int:
        return self.done_iters + self.learn.train_iter

    def after_batch(self):
        if not self.training:  # fastai's logs validation batches too, at the last training step again
            return
        self.writer.add_scalar("train_loss", self.smooth_loss, self.train_iter)
        for i, h in enumerate(self.opt.hypers):
            for k, v in h.items():
                if isinstance(v, Real) and not isinstance(v, bool):
                    self.writer.add_scalar(f"{k}_{i}", v, self.train_iter)

    def after_fit(self):
        self.done_iters += self.learn.train_iter
        super().after_fit()


class Tracker:
    NAME = "tensorboard"

    def __init__(self, run: Path, params: dict, resumed: bool):
        self.log_dir = Path(run) / "tensorboard"
        with SummaryWriter(log_dir=str(self.log_dir)) as w:
            w.add_text("config", "\n".join(f"    {k} = {v}" for k, v in params.items()))
        self.cb = RunTensorBoard(str(self.log_dir))

    def callbacks(self) -> list:
        return [self.cb]

    def finish(self, summary: dict) -> None:
        step = self.cb.done_iters
        with SummaryWriter(log_dir=str(self.log_dir)) as w:
            for k, v in final_metrics(summary).items():
                w.add_scalar(k, v, step)
            w.add_text("per_class", markdown_table(final_rows(summary)), step)
            w.add_text("model", f"exported model: {summary['export']}; best epoch {summary['best_epoch']}", step)

    def fail(self) -> None:
        """Nothing to close: every event file is complete once written."""
