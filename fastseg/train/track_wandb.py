"""``--log wandb``: one Weights & Biases run per fit, its files under ``runs/<name>/wandb``.

fastai's WandbCallback logs the per-batch loss and hyper-parameters and the per-epoch metrics
(without its prediction tables, which re-run validation batches, and without its own model
saving: fastseg exports the best epoch). The project, mode (``WANDB_MODE=offline``) and login are
W&B's own settings. At the end: the final scores in the run summary, the per-class table, and the
exported model as a ``model`` artifact.
"""

from __future__ import annotations

import math
from pathlib import Path

import wandb
from fastai.callback.wandb import WandbCallback
from fastai.torch_core import rank_distrib

from .tracking import FINAL_COLUMNS, final_metrics, final_rows

__all__ = ["Tracker", "RunWandb", "HINT"]

HINT = "log in with `wandb login`, or set WANDB_MODE=offline to keep the run on disk (wandb sync later)"


class RunWandb(WandbCallback):
    """fastai's WandbCallback without its dump of every callback's arguments into the W&B config (fastai
    2.8's ``_format_config`` fails on fastseg's learner; fastseg logs its own config and plan instead)."""

    def before_fit(self):
        self._wandb_step = wandb.run.step - 1  # fastai's step and epoch bookkeeping, as in its before_fit
        self._wandb_epoch = 0 if not wandb.run.step else math.ceil(wandb.run.summary["epoch"])
        self.run = not hasattr(self.learn, "lr_finder") and not hasattr(self, "gather_preds") and rank_distrib() == 0


class Tracker:
    NAME = "wandb"

    def __init__(self, run: Path, params: dict, resumed: bool):
        self.run = wandb.init(dir=str(run), name=Path(run).name, config=params, job_type="resume" if resumed else "fit")

    def callbacks(self) -> list:
        return [RunWandb(log_preds=False, log_model=False)]

    def finish(self, summary: dict) -> None:
        self.run.summary.update({**final_metrics(summary), "best_epoch": summary.get("best_epoch")})
        self.run.log({"per_class": wandb.Table(columns=FINAL_COLUMNS, data=final_rows(summary))})
        model = wandb.Artifact(f"model-{self.run.id}", type="model", metadata={"best_epoch": summary.get("best_epoch")})
        model.add_file(summary["export"])
        self.run.log_artifact(model)
        self.run.finish()

    def fail(self) -> None:
        self.run.finish(exit_code=1)
