"""Options (fastseg.config): config-file values converted when unambiguous, else one line; choices
validated with the valid ones listed; durations parsed once; a config round-trips through its dict."""

import pytest
from click.testing import CliRunner

from fastseg.cli import main
from fastseg.config import FitConfig, PredictConfig, parse_duration
from fastseg.errors import ConfigError


@pytest.mark.parametrize("text, key, value", [
    ('epochs: "10"', "epochs", 10), ('size: "256"', "size", 256), ("epochs: 1e2", "epochs", 100),
    ("bs: 8.0", "bs", 8), ('bs: "auto"', "bs", "auto"), ('lr: "3e-3"', "lr", 0.003), ("fp16: 'yes'", "precision", "auto"), ("fp16: 'off'", "precision", "fp32"),
    ('sync_bn: "false"', "sync_bn", False), ('compile: "TRUE"', "compile", True), ("progressive: off", "progressive", "off"),
    ('class_weights: ["1", 2]', "class_weights", (1.0, 2.0)), ("name: 2024", "name", "2024"),
    ("size: null", "size", None), ("valid_pct: '0.3'", "valid_pct", 0.3),
])
def test_config_file_values_are_converted(tmp_path, text, key, value):
    f = tmp_path / "c.yaml"
    f.write_text(text + "\n")
    got = getattr(FitConfig.from_file(f), key)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text, line", [
    ("seed: x", "seed must be a whole number, got 'x'"),
    ("epochs: 10.5", "epochs must be a whole number, got 10.5"),
    ("bs: 8.5", "bs must be a whole number or 'auto', got 8.5"),
    ("bs: true", "bs must be a whole number or 'auto', got True (YAML reads unquoted yes/no/on/off as true/false: quote it)"),
    ("fp16: maybe", "fp16 must be true or false, got 'maybe'"),
    ("class_weights: 5", "class_weights must be a list of numbers or null, got 5"),
    ("cache: no", "cache must be text, got False (YAML reads unquoted yes/no/on/off as true/false: quote it)"),
    ("lr: [1]", "lr must be a number or 'auto', got [1]"),
    ("epochs: .inf", "epochs must be a whole number, got inf"),
])
def test_config_file_values_of_the_wrong_type_are_one_line(tmp_path, text, line):
    f = tmp_path / "c.yaml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        FitConfig.from_file(f)
    assert str(e.value) == f"{f}: {line}"


def test_predict_config_converts_and_rejects_in_the_same_place():
    cfg = PredictConfig(bs="4", tta="yes", overlap="0.5", workers="2")
    assert (cfg.bs, cfg.tta, cfg.overlap, cfg.workers) == (4, True, 0.5, 2)
    with pytest.raises(ConfigError, match=r"^tile must be a whole number or null, got 'big'$"):
        PredictConfig(tile="big")



def test_progressive_choice_is_validated():
    from fastseg.config import FitConfig
    from fastseg.errors import ConfigError

    with pytest.raises(ConfigError, match="progressive must be one of auto, on, off, got 'yes'"):
        FitConfig(progressive="yes")



def test_log_option_is_validated_with_the_choices():
    assert FitConfig(log="tensorboard, mlflow").log == ("tensorboard", "mlflow")
    assert FitConfig(log=["wandb", "wandb"]).log == ("wandb",)
    with pytest.raises(ConfigError, match=r"unknown tracker\(s\) comet for log; valid choices: tensorboard, mlflow, wandb"):
        FitConfig(log=["comet"])
    res = CliRunner().invoke(main, ["fit", "--log", "comet"])
    assert res.exit_code == 2 and "'comet' is not one of 'tensorboard', 'mlflow', 'wandb'" in res.output



@pytest.mark.parametrize("value, seconds", [(90, 90.0), ("90s", 90.0), ("4m", 240.0), ("2.5min", 150.0),
                                            ("1h30m", 5400.0), (" 1H 30M ", 5400.0)])
def test_time_takes_seconds_or_a_duration(value, seconds):
    assert parse_duration(value) == seconds
    assert FitConfig(time=value).time == seconds


@pytest.mark.parametrize("value, message", [
    ("10", "time must be at least 30 s (the run's fixed costs need it), got '10'"),
    ("ten minutes", "time must be a duration such as 90s, 10m or 1h30m, got 'ten minutes'"),
    ("", "time must be a duration such as 90s, 10m or 1h30m, got ''"),
    (True, "time must be a duration such as 90s, 10m or 1h30m, got True"),
])
def test_bad_time_is_one_line_with_an_example(value, message):
    with pytest.raises(ConfigError) as e:
        parse_duration(value)
    assert str(e.value) == message


def test_config_round_trips_through_its_dict_and_names_unknown_options():
    cfg = FitConfig(epochs=3, log="wandb", class_weights="1,5", time="2m", aug=True)
    assert FitConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"^config: unknown option\(s\) epoch; valid options: .*, epochs, "):
        FitConfig.from_dict({"epoch": 3})
