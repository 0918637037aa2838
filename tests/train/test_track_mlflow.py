"""``fit --log mlflow`` (fastseg.train.track_mlflow): a local MLflow store holds the params, per-epoch
metrics, the final per-class table and the model and report as artifacts."""

import importlib.util
import json

import pytest

from fastseg.data.demo import DEMO_CODES

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                                   reason="mlflow is not installed (pip install 'fastseg[mlflow]')")]


def test_mlflow_run_holds_params_epochs_table_and_model(tracked):
    from mlflow import MlflowClient

    result, store, logged = tracked
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("fastseg").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.params["epochs"] == "2" and run.data.params["log"] == json.dumps(logged)
    history = client.get_metric_history(run.info.run_id, "miou")
    assert [m.step for m in history] == [0, 1]
    assert history[-1].value == pytest.approx(result.history[-1]["miou"])
    assert run.data.metrics["final/full/miou"] == pytest.approx(result.outputs.scores["miou"])
    assert "epoch_time_s" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | \
        {a.path for folder in ("model", "report") for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"per_class.json", "model/model.pkl", "report/report.html", "report/per_image.csv", "report/worst.png"} <= artifacts
    table = json.loads(open(client.download_artifacts(run.info.run_id, "per_class.json")).read())
    assert [row[0] for row in table["data"]] == list(DEMO_CODES)
