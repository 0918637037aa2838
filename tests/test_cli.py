import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fastseg.cli import main

COMMANDS = ["fit", "lr-find", "predict", "demo-data"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help_with_example(runner, cmd):
    res = runner.invoke(main, [cmd, "--help"])
    assert res.exit_code == 0
    assert "Example" in res.output and f"fastseg {cmd}" in res.output


def test_top_level_help_lists_commands(runner):
    res = runner.invoke(main, ["--help"])
    assert res.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in res.output


def test_fit_missing_data_dir_is_one_line_error(runner, tmp_path):
    missing = tmp_path / "nope"
    res = runner.invoke(main, ["fit", "--data", str(missing), "--epochs", "1"])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {missing}: data folder does not exist (point --data at a folder with images/ and masks/)"
    assert res.exception is None or isinstance(res.exception, SystemExit)


@pytest.mark.parametrize("args, fragment", [
    (["fit", "--lr", "fast"], "'fast' is not 'auto' or a number"),
    (["fit", "--epochs", "0"], "0 is not in the range x>=1"),
    (["fit", "--size", "100"], "size must be a multiple of 32"),
    (["fit", "--valid-pct", "1.5"], "valid_pct must be between 0 and 1"),
    (["fit", "--grad-clip", "-1"], "-1.0 is not in the range x>=0"),
    (["fit", "--encoder", "nonsense", "--weights", "none"], "wrong encoder name `nonsense`, supported encoders:"),
    (["fit", "--arch", "SegNet"], "Error: wrong arch `SegNet`, supported: Unet, UnetPlusPlus, FPN, DeepLabV3, "
                                  "DeepLabV3Plus, Linknet, MAnet, PAN, PSPNet, UPerNet, Segformer\n"),
    (["fit", "--arch", "pan", "--weights", "none", "--encoder", "tu-test_efficientnet"],
     "Error: PAN needs inputs of at least 128 px, but the training size is 64 (--size 128 resizes smaller images up; "
     "or choose another --arch)"),
    (["predict", "missing.pkl", "x.png"], "missing.pkl: model file not found"),
])
def test_bad_options_are_one_line_errors(runner, tiny_data, args, fragment):
    res = runner.invoke(main, [*args, "--data", str(tiny_data)] if args[0] == "fit" else args)
    assert res.exit_code != 0
    assert fragment in res.output
    assert "Traceback" not in res.output


def test_unreadable_model_is_one_line_error(runner, tmp_path):
    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"this is not a pickle")
    res = runner.invoke(main, ["predict", str(bad), str(tmp_path)])
    assert res.exit_code == 1
    notice, error = res.output.strip().splitlines()  # the pickle notice comes before anything is unpickled
    assert notice.startswith(f"Warning: {bad} is a pickle: loading it runs code stored in the file")
    assert error.startswith(f"Error: {bad}: not a readable fastai export")


def test_config_file_with_cli_override(runner, tmp_path):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"data": str(tmp_path / "from-config"), "epochs": 3}))
    res = runner.invoke(main, ["fit", "--config", str(cfg), "--data", str(tmp_path / "from-cli")])
    assert res.exit_code == 1 and "from-cli: data folder does not exist" in res.output
    cfg.write_text(json.dumps({"epochs": 3, "learning_rate": 1}))
    res = runner.invoke(main, ["fit", "--config", str(cfg)])
    assert res.exit_code == 1 and "unknown option(s) learning_rate" in res.output


def test_demo_data_command(runner, tmp_path):
    res = runner.invoke(main, ["demo-data", str(tmp_path / "d"), "--n", "3", "--size", "32"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "d" / "images").iterdir())) == 3


@pytest.mark.slow
def test_predict_writes_masks_at_input_size(runner, trained, tiny_data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.open(sorted((tiny_data / "images").iterdir())[0]).resize((96, 80)).save(src / "big.png")
    Image.open(sorted((tiny_data / "images").iterdir())[1]).save(src / "small.jpg")
    (src / "broken.png").write_bytes(b"garbage")
    out = tmp_path / "out"
    res = runner.invoke(main, ["predict", str(trained.export), str(src), "--out", str(out), "--bs", "2"])
    assert res.exit_code == 1  # one input was unreadable: reported, the rest still predicted
    assert "broken.png: cannot read image" in res.output
    big, small = Image.open(out / "big.png"), Image.open(out / "small.png")
    assert big.size == (96, 80) and small.size == (64, 64)
    assert big.mode == "P" and np.asarray(big).max() < 4


@pytest.mark.slow
def test_lr_find_prints_rate_and_writes_plot(runner, tiny_data, tmp_path):
    plot = tmp_path / "lr.png"
    res = runner.invoke(main, ["lr-find", "--data", str(tiny_data), "--weights", "none", "--bs", "4", "--plot", str(plot)])
    assert res.exit_code == 0, res.output
    assert "suggested learning rate:" in res.output
    for name in ("valley", "slide", "minimum", "steep"):
        assert name in res.output
    assert Image.open(plot).size[0] > 300


def test_fit_resume_refuses_other_options(runner, tmp_path):
    res = runner.invoke(main, ["fit", "--resume", str(tmp_path), "--epochs", "3"])
    assert res.exit_code == 2
    assert "Error: --resume continues with the run's own config.json; drop --epochs" in res.output


def test_fit_resume_of_a_non_run_folder(runner, tmp_path):
    res = runner.invoke(main, ["fit", "--resume", str(tmp_path)])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {tmp_path}: not a run folder (no config.json; pass a folder under runs/)"


def test_fit_bad_loss_lists_choices(runner):
    res = runner.invoke(main, ["fit", "--loss", "bce"])
    assert res.exit_code == 2 and "'bce' is not one of 'ce', 'dice', 'ce+dice', 'focal'" in res.output


def test_fit_model_error_leaves_no_run_folder(runner, tiny_data, tmp_path):
    runs = tmp_path / "runs"
    res = runner.invoke(main, ["fit", "--data", str(tiny_data), "--encoder", "nonsense", "--weights", "none",
                               "--runs-dir", str(runs)])
    assert res.exit_code == 1 and "wrong encoder name `nonsense`" in res.output
    assert not runs.exists()


@pytest.mark.slow
def test_fit_bs_auto_prints_choice_and_trains(runner, tiny_data, tmp_path):
    import re

    out = tmp_path / "auto.pkl"
    res = runner.invoke(main, ["fit", "--data", str(tiny_data), "--bs", "auto", "--epochs", "1", "--lr", "1e-3",
                               "--weights", "none", "--cache", "ram", "--export", str(out),
                               "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert re.search(r"^batch size +8 +--bs auto: ", res.output, re.M)  # the plan's row; 8 training images cap it
    assert out.is_file()


def test_fit_dry_run_prints_the_plan_and_trains_nothing(runner, tiny_data, tmp_path):
    res = runner.invoke(main, ["fit", "--data", str(tiny_data), "--dry-run", "--weights", "none", "--epochs", "3",
                               "--bs", "4", "--runs-dir", str(tmp_path / "runs"), "--export", str(tmp_path / "m.pkl")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert any(line.startswith("epochs ") and " 3 " in line and "--epochs" in line for line in lines), res.output
    assert any(line.startswith("crop size ") and "64 px (crop)" in line for line in lines)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "m.pkl").exists()


@pytest.mark.parametrize("args, message", [
    (["--bs", "0"], "Invalid value for '--bs': 0 is not 'auto' or an integer >= 1"),
    (["--bs", "many"], "Invalid value for '--bs': 'many' is not 'auto' or an integer"),
    (["--num-workers", "-1"], "Invalid value for '--num-workers': -1 is not 'auto' or an integer >= 0"),
    (["--cache", "disk"], "Invalid value for '--cache': 'disk' is not one of 'auto', 'ram', 'none'."),
])
def test_bad_speed_options_name_the_choices(runner, args, message):
    res = runner.invoke(main, ["fit", *args])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1] == f"Error: {message}"


def test_aug_options_build_the_config():
    from fastseg.cli import build_config

    assert build_config(None, aug=None, no_aug=None).aug == "auto"
    assert build_config(None, aug="flips", no_aug=None).aug == "flips"
    assert build_config(None, aug=None, no_aug=True).aug == "none"


def test_grad_clip_option_and_config_file_values():
    from fastseg.cli import build_config
    from fastseg.config import FitConfig
    from fastseg.errors import ConfigError

    assert build_config(None, grad_clip=None).grad_clip == FitConfig().grad_clip == 0.0  # off by default
    assert build_config(None, grad_clip=1.0).grad_clip == 1.0
    assert FitConfig(grad_clip=2).grad_clip == 2.0  # YAML integers are fine
    with pytest.raises(ConfigError, match="grad_clip must be 0 \\(off\\) or a positive number"):
        FitConfig(grad_clip=-0.5)
    for bad in ("big", True):  # not numbers: the type check (fastseg.config.coerce_values) says so first
        with pytest.raises(ConfigError, match="grad_clip must be a number, got"):
            FitConfig(grad_clip=bad)


def test_invalid_aug_lists_choices(runner):
    res = runner.invoke(main, ["fit", "--aug", "heavy"])
    assert res.exit_code == 2 and "'heavy' is not one of 'auto', 'full', 'flips', 'none'" in res.output
