"""Loading what the user hands over: nothing is unpickled unless it is a .pkl, bad model descriptions and
config values are one line, the RAM cache is decided once for every process."""

import json
import pickle
import warnings
import zipfile

import pytest
import torch
from click.testing import CliRunner

from fastseg.export.bundle import INFO_FILE, bundle_path_for, read_info
from fastseg.cli import main
from fastseg.config import FitConfig
from fastseg.errors import ConfigError, ModelError, WeightsError
from fastseg.infer.predictor import MODEL_KINDS, load

ENC = "timm-efficientnet-b0"


class CodePayload:
    """Unpickling this creates ``marker``: the proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def payload_file(path, marker, zip_format=True):
    torch.save({"weight": CodePayload(marker)}, path, _use_new_zipfile_serialization=zip_format)
    return path


# 1. only a .pkl is unpickled

def test_run_checkpoint_is_refused_unread_and_points_to_the_export(tmp_path):
    export = tmp_path / "exports" / "model.pkl"
    (bundle_path_for(export)).mkdir(parents=True)
    (bundle_path_for(export) / INFO_FILE).write_text("{}")
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"export": str(export)}))
    best = payload_file(run / "best.pth", tmp_path / "ran")
    with pytest.raises(ModelError) as e:
        load(best)
    assert str(e.value) == f"{best}: a training checkpoint, not a model fastseg loads; " \
                           f"use the run's exported model {bundle_path_for(export)}"
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("name, zip_format", [("model.pth", True), ("model.pth", False), ("model.pt", True),
                                              ("model.ts", False), ("model.bin", True), ("model", True)])
def test_checkpoints_and_other_files_are_refused_unread(tmp_path, name, zip_format):
    f = payload_file(tmp_path / name, tmp_path / "ran", zip_format)
    with pytest.raises(ModelError) as e:
        load(f)
    why = " (a .pth/.pt checkpoint holds weights, not the model)" if f.suffix in (".pth", ".pt") else ""
    assert str(e.value) == f"{f}: not a model fastseg loads{why}; expected {MODEL_KINDS}"
    assert not (tmp_path / "ran").exists()


def test_predict_cli_on_a_malicious_pth_is_one_line(tmp_path):
    f = payload_file(tmp_path / "best.pth", tmp_path / "ran")
    res = CliRunner().invoke(main, ["predict", str(f), str(tmp_path)])
    assert res.exit_code == 1
    assert res.output.splitlines() == [f"Error: {f}: not a model fastseg loads (a .pth/.pt checkpoint holds weights, "
                                       f"not the model); expected {MODEL_KINDS}"]
    assert not (tmp_path / "ran").exists()


def test_zip_with_torchscript_layout_but_bad_content_is_one_line(tmp_path):
    f = tmp_path / "m.pt"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("m/code/__torch__/x.py", "not torchscript")
        z.writestr("m/constants.pkl", pickle.dumps(CodePayload(tmp_path / "ran")))
    with pytest.raises(ModelError, match=r"m\.pt: not a readable TorchScript model"):
        load(f)
    assert not (tmp_path / "ran").exists()


def _forbid_python_unpickling(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("Python unpickling while loading a non-.pkl model")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)


@pytest.mark.slow
def test_torchscript_loads_without_python_unpickling(trained, tmp_path, monkeypatch):
    """torch.jit.load reads the archive in C++ (its unpickler only rebuilds tensors and TorchScript types)."""
    from fastseg.export.formats import export_model

    ts = export_model(bundle_path_for(trained.export), "torchscript", out=tmp_path / "m.pt").path
    _forbid_python_unpickling(monkeypatch)
    assert load(ts).codes == ["background", "disc", "square", "triangle"]


@pytest.mark.slow
def test_pkl_load_tells_the_user_once_through_notify(trained):
    said = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(trained.export, backend="torch", notify=said.append)
    bundle = bundle_path_for(trained.export)
    assert said == [f"Warning: {trained.export} is a pickle: loading it runs code stored in the file (load only "
                    f"files you trust); the bundle {bundle} loads without running any"]
    assert not [w for w in caught if "pickle" in str(w.message)]  # said once, by fastseg, not by fastai as well


def test_pkl_without_a_bundle_says_how_to_make_one(tmp_path):
    f = tmp_path / "m.pkl"
    f.write_bytes(pickle.dumps([1, 2]))
    said = []
    with pytest.raises(ModelError, match="not a fastai Learner export|not a readable fastai export"):
        load(f, notify=said.append)
    assert said == [f"Warning: {f} is a pickle: loading it runs code stored in the file (load only files you "
                    f"trust); `fastseg export {f} --format safetensors` writes a bundle that loads without running any"]


# 2. --weights FILE loads tensors only

def test_weights_file_with_code_is_refused(tmp_path):
    from fastseg.model import build_model

    f = payload_file(tmp_path / "enc.pth", tmp_path / "ran")
    with pytest.raises(WeightsError) as e:
        build_model(ENC, 2, str(f))
    assert str(e.value) == (f"{f}: refused: it pickles objects other than tensors, and loading them would run code "
                            "from the file (save a state dict of tensors, or use .safetensors)")
    assert not (tmp_path / "ran").exists()


# 3. evaluate takes the safe bundle

@pytest.mark.slow
def test_evaluate_accepts_the_bundle_folder(trained, tiny_data, tmp_path):
    res = CliRunner().invoke(main, ["evaluate", str(bundle_path_for(trained.export)), "--data", str(tiny_data),
                                    "--plot", str(tmp_path / "c.png"), "--json"])
    assert res.exit_code == 0, res.output
    assert "miou" in json.loads(res.output)


# 4. the bundle's fastseg.json is checked field by field

GOOD = {"arch": "Unet", "encoder": ENC, "codes": ["bg", "fg"], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
        "size": 256, "input": "crop"}


@pytest.mark.parametrize("change, problem", [
    ({"encoder": "timm-efficientnet-b9x"}, "wrong encoder name `timm-efficientnet-b9x`, supported encoders: "),
    ({"encoder": "tu-efficientnet*"}, "unknown timm encoder `efficientnet*` (see timm.list_models())"),
    ({"encoder": 5}, "encoder must be an encoder name, got 5"),
    ({"arch": ["Unet"]}, "unsupported arch ['Unet']; supported: Unet"),
    ({"codes": "bg,fg"}, "codes must be a list of class names, got 'bg,fg'"),
    ({"codes": [0, 1]}, "codes must be a list of class names, got [0, 1]"),
    ({"codes": ["bg"]}, "codes must name 2 to 255 classes, got 1"),
    ({"codes": [str(i) for i in range(256)]}, "codes must name 2 to 255 classes, got 256"),
    ({"codes": ["bg", "fg", "bg"]}, "codes must be unique, got 'bg' more than once"),
    ({"mean": [0.5, 0.5]}, "mean must be a list of 3 numbers (one per RGB channel), got [0.5, 0.5]"),
    ({"mean": "0.5"}, "mean must be a list of 3 numbers (one per RGB channel), got '0.5'"),
    ({"std": [True, 1, 1]}, "std must be a list of 3 numbers (one per RGB channel), got [True, 1, 1]"),
    ({"std": [0.2, 0, 0.2]}, "std must be positive, got [0.2, 0, 0.2]"),
    ({"in_channels": 4}, "mean must be a list of 4 numbers (one per input channel), got [0.5, 0.5, 0.5]"),
    ({"in_channels": 0}, "in_channels must be a whole number from 1 to 64, got 0"),
    ({"in_channels": "4"}, "in_channels must be a whole number from 1 to 64, got '4'"),
    ({"size": 100}, "size must be a multiple of 32 from 32 to 8192, got 100"),
    ({"size": "256"}, "size must be a multiple of 32 from 32 to 8192, got '256'"),
    ({"size": 16384}, "size must be a multiple of 32 from 32 to 8192, got 16384"),
    ({"size": None, "input": "resize"}, "size must be a multiple of 32 from 32 to 8192, got None"),
    ({"input": "stretch"}, "input must be one of crop, resize, got 'stretch'"),
])
def test_bad_bundle_description_is_one_line(tmp_path, change, problem):
    b = tmp_path / "b"
    b.mkdir()
    f = b / INFO_FILE
    f.write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(ModelError) as e:
        load(b)
    assert str(e.value).startswith(f"{f}: {problem}")
    assert str(e.value).endswith(" (re-export the model with `fastseg export`)") and "\n" not in str(e.value)


def test_good_bundle_description_passes(tmp_path):
    (tmp_path / INFO_FILE).write_text(json.dumps({**GOOD, "encoder": "tu-resnet18"}))
    assert read_info(tmp_path)["encoder"] == "tu-resnet18"


def test_bad_bundle_description_in_predict_cli(tmp_path):
    (tmp_path / INFO_FILE).write_text(json.dumps({**GOOD, "codes": ["bg"]}))
    res = CliRunner().invoke(main, ["predict", str(tmp_path), str(tmp_path)])
    assert res.exit_code == 1
    assert res.output.splitlines() == [f"Error: {tmp_path / INFO_FILE}: codes must name 2 to 255 classes, got 1 "
                                       "(re-export the model with `fastseg export`)"]


# 5. a bad config value on the command line is one line (the conversions: tests/test_config.py)

def test_fit_cli_with_a_bad_config_value_is_one_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(f"data: {tmp_path / 'none'}\nepochs: ten\n")
    res = CliRunner().invoke(main, ["fit", "--config", str(f)])
    assert res.exit_code == 1
    assert res.output.splitlines() == [f"Error: {f}: epochs must be a whole number, got 'ten'"]


# 6. the RAM cache: rank 0 decides, every process on the machine counted

def test_cache_decision_counts_every_local_process():
    from fastseg.device import resolve_cache

    gib = 2**30
    assert resolve_cache("auto", needed_bytes=gib, free_bytes=8 * gib, processes=2) is True  # 2 <= 25% of 8
    assert resolve_cache("auto", needed_bytes=gib, free_bytes=8 * gib, processes=3) is False
    assert resolve_cache("ram", needed_bytes=gib, free_bytes=10 * gib, processes=8) is True  # 8 <= 80% of 10
    assert resolve_cache("ram", needed_bytes=10 * gib, free_bytes=0) is True  # the OS does not say: trust the user
    with pytest.raises(ConfigError) as e:
        resolve_cache("ram", needed_bytes=gib, free_bytes=10 * gib, processes=9)
    assert str(e.value) == ("--cache ram: the decoded images need 9.0 GiB of RAM (9 processes x 1.0 GiB), but only "
                            "10.0 GiB is available (the cache may take 80%); use --cache auto or --cache none")
    with pytest.raises(ConfigError, match=r"^--cache ram: the decoded images need 2\.0 GiB of RAM, but only 1\.0 GiB"):
        resolve_cache("ram", needed_bytes=2 * gib, free_bytes=gib)


def _plan(tiny_data, **options):
    from fastseg.data.dataset import discover
    from fastseg.model import WeightsInfo
    from fastseg.train.loop import plan_for

    cfg = FitConfig(data=str(tiny_data), bs=4, precision="fp32", **options)
    return plan_for(cfg, discover(tiny_data), WeightsInfo("none", False, "random"))


def test_cache_ram_that_does_not_fit_is_refused(tiny_data, monkeypatch):
    import fastseg.device as device

    monkeypatch.setattr(device, "available_ram", lambda: 1000)
    with pytest.raises(ConfigError, match=r"^--cache ram: the decoded images need 0\.0 GiB of RAM, but only 0\.0 GiB"):
        _plan(tiny_data, cache="ram")


def test_auto_cache_counts_local_processes(tiny_data, monkeypatch):
    import fastseg.device as device
    from fastseg.data.dataset import discover
    from fastseg.train.plan import cache_bytes

    needed = cache_bytes(discover(tiny_data))
    monkeypatch.setattr(device, "available_ram", lambda: 4 * 2 * needed)  # one copy fits 25%, four do not
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    plan = _plan(tiny_data)
    assert not plan.cache
    assert plan.why["cache"] == "auto: the decoded set needs 0 MiB x 4 processes, > 25% of free RAM"


def test_other_ranks_take_rank_0s_plan(tiny_data, monkeypatch):
    """Under DDP only rank 0 reads the machine and measures; the others take its plan (the cache decision too)."""
    import fastseg.device as device
    import fastseg.train.distributed as distributed

    rank0 = _plan(tiny_data, cache="ram")

    def no_reading():
        raise AssertionError("a rank other than 0 read the free RAM")

    monkeypatch.setattr(device, "available_ram", no_reading)
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)
    monkeypatch.setattr(distributed, "broadcast_value", lambda value: (True, rank0))  # rank 0's outcome
    plan = _plan(tiny_data)
    assert plan == rank0 and plan.cache
