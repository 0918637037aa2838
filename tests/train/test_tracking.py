"""``fit --log``: a tracker whose package is missing stops the run before any work (what each tracker
records: tests/train/test_track_{tensorboard,mlflow,wandb}.py, on the ``tracked`` run of conftest.py)."""

from click.testing import CliRunner

from fastseg.cli import main


def test_missing_tracker_package_is_one_line_before_any_work(monkeypatch, tiny_data, tmp_path):
    from fastseg.train import tracking

    monkeypatch.setitem(tracking.PACKAGES, "mlflow", "fastseg_no_such_module")
    res = CliRunner().invoke(main, ["fit", "--data", str(tiny_data), "--log", "mlflow", "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 1
    assert res.output.strip() == ("Error: --log mlflow needs the fastseg_no_such_module package, which is not installed "
                                  "(pip install 'fastseg[mlflow]', or drop --log mlflow)")
    assert not (tmp_path / "runs").exists()  # no run folder, no data scan, no training
