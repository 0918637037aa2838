"""``--log mlflow``: one MLflow run per fit, through ``MlflowClient`` (no global mlflow state).

The tracking store is MLflow's own choice (``MLFLOW_TRACKING_URI``, else its default), the
experiment ``MLFLOW_EXPERIMENT_NAME`` or ``fastseg``. Params: the config (and plan); metrics per
epoch at the run's global epoch; at the end, the final scores, the per-class table
(``per_class.json``) and the exported model, per-image CSV, plots and report as artifacts.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.environment_variables import MLFLOW_EXPERIMENT_NAME

from .tracking import FINAL_COLUMNS, EpochMetrics, final_metrics, final_rows

__all__ = ["Tracker", "HINT", "EXPERIMENT"]

HINT = "check MLFLOW_TRACKING_URI (a server URL, or a local store such as sqlite:///mlflow.db)"
EXPERIMENT = "fastseg"  # when MLFLOW_EXPERIMENT_NAME is not set
BATCH = 100  # MLflow accepts at most 100 params per log_batch call


class Tracker:
    NAME = "mlflow"

    def __init__(self, run: Path, params: dict, resumed: bool):
        self.client = MlflowClient()
        name = MLFLOW_EXPERIMENT_NAME.get() or EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found is not None else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment, run_name=Path(run).name + (" (resumed)" if resumed else ""),
                                             tags={"fastseg.run_folder": str(Path(run).absolute())}).info.run_id
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + BATCH])

    def log(self, metrics: dict, step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def callbacks(self) -> list:
        return [EpochMetrics(self.log)]

    def finish(self, summary: dict) -> None:
        self.log(final_metrics(summary), summary.get("epochs_run", 0))
        rows = final_rows(summary)
        self.client.log_dict(self.run_id, {"columns": FINAL_COLUMNS, "data": rows}, "per_class.json")
        self.client.log_artifact(self.run_id, summary["export"], "model")
        for f in summary.get("files", [])[1:]:
            self.client.log_artifact(self.run_id, f, "report")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self) -> None:
        self.client.set_terminated(self.run_id, "FAILED")
