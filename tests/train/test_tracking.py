"""``fit --log tensorboard|mlflow|wandb``: each tracker gets the config, per-epoch metrics, the final
per-class table and the model; all offline (event files, a local MLflow file store, W&B offline mode)."""

import glob
import importlib.util
import json

import pytest
from click.testing import CliRunner

from fastseg.cli import main
from fastseg.config import FitConfig
from fastseg.errors import ConfigError

INSTALLED = [n for n in ("tensorboard", "mlflow", "wandb") if importlib.util.find_spec(n) is not None]
CODES = ["background", "disc", "square", "triangle"]


def test_log_option_is_validated_with_the_choices():
    assert FitConfig(log="tensorboard, mlflow").log == ("tensorboard", "mlflow")
    assert FitConfig(log=["wandb", "wandb"]).log == ("wandb",)
    with pytest.raises(ConfigError, match=r"unknown tracker\(s\) comet for log; valid choices: tensorboard, mlflow, wandb"):
        FitConfig(log=["comet"])
    res = CliRunner().invoke(main, ["fit", "--log", "comet"])
    assert res.exit_code == 2 and "'comet' is not one of 'tensorboard', 'mlflow', 'wandb'" in res.output


def test_missing_tracker_package_is_one_line_before_any_work(monkeypatch, tiny_data, tmp_path):
    from fastseg.train import tracking

    monkeypatch.setitem(tracking.PACKAGES, "mlflow", "fastseg_no_such_module")
    res = CliRunner().invoke(main, ["fit", "--data", str(tiny_data), "--log", "mlflow", "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 1
    assert res.output.strip() == ("Error: --log mlflow needs the fastseg_no_such_module package, which is not installed "
                                  "(pip install 'fastseg[mlflow]', or drop --log mlflow)")
    assert not (tmp_path / "runs").exists()  # no run folder, no data scan, no training


@pytest.fixture(scope="module")
def tracked(tiny_data, tmp_path_factory):
    """One 2-epoch fit logged to every installed tracker, all offline; returns (FitResult, MLflow store URI)."""
    if not INSTALLED:
        pytest.skip("no tracker package installed (pip install -e '.[test]')")
    from fastseg.pipeline import fit

    tmp = tmp_path_factory.mktemp("tracked")
    store = (tmp / "mlruns").as_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store)
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store for local use behind this flag
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        cfg = FitConfig(data=str(tiny_data), epochs=2, lr=1e-3, bs=4, weights="none", export=str(tmp / "model.pkl"),
                        runs_dir=str(tmp / "runs"), name="tracked", log=tuple(INSTALLED))
        return fit(cfg, progress=False), store


def _need(name):
    if name not in INSTALLED:
        pytest.skip(f"{name} is not installed (pip install 'fastseg[{name}]')")


@pytest.mark.slow
def test_tensorboard_event_files_hold_config_epochs_and_final_table(tracked):
    _need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, _ = tracked
    acc = EventAccumulator(str(result.run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"train_loss", "lr_0", "valid_loss", "miou", "dice", "final/full/miou", "final/full/iou_triangle"} <= set(scalars)
    assert len(acc.Scalars("miou")) == 2  # one per epoch
    assert acc.Scalars("miou")[-1].value == pytest.approx(result.history[-1]["miou"], rel=1e-5)
    steps = [e.step for e in acc.Scalars("train_loss")]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one increasing step across the run's fits
    texts = {t: acc.Tensors(t)[-1].tensor_proto.string_val[0].decode() for t in acc.Tags()["tensors"]}
    assert "lr_find_iters = 30" in texts["config/text_summary"]
    assert "| triangle |" in texts["per_class/text_summary"] and str(result.export) in texts["model/text_summary"]


@pytest.mark.slow
def test_mlflow_run_holds_params_epochs_table_and_model(tracked):
    _need("mlflow")
    from mlflow import MlflowClient

    result, store = tracked
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("fastseg").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.params["epochs"] == "2" and run.data.params["log"] == json.dumps(INSTALLED)
    history = client.get_metric_history(run.info.run_id, "miou")
    assert [m.step for m in history] == [0, 1]
    assert history[-1].value == pytest.approx(result.history[-1]["miou"])
    assert run.data.metrics["final/full/miou"] == pytest.approx(result.outputs.scores["miou"])
    assert "epoch_time_s" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | \
        {a.path for folder in ("model", "report") for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"per_class.json", "model/model.pkl", "report/report.html", "report/per_image.csv", "report/worst.png"} <= artifacts
    table = json.loads(open(client.download_artifacts(run.info.run_id, "per_class.json")).read())
    assert [row[0] for row in table["data"]] == CODES


@pytest.mark.slow
def test_wandb_offline_run_holds_config_epochs_table_and_model(tracked):
    """W&B's offline run files: the per-class table as JSON; config keys, metric names and the model artifact
    read from the run's record log (wandb ships no reader for it, so its protobuf strings are searched)."""
    _need("wandb")
    result, _ = tracked
    (offline,) = glob.glob(str(result.run / "wandb" / "offline-run-*"))
    (table,) = glob.glob(f"{offline}/files/media/table/per_class_*.table.json")
    rows = json.loads(open(table).read())
    assert rows["columns"][:3] == ["class", "iou_full", "dice_full"] and [r[0] for r in rows["data"]] == CODES
    (records,) = glob.glob(f"{offline}/run-*.wandb")
    data = open(records, "rb").read()
    for key in (b"lr_find_iters", b"valid_loss", b"miou", b"final/full/miou", b"model.pkl", b"model-"):
        assert key in data, key
