"""Faults around predict's and demo-data's outputs: nothing the user has is replaced, write failures stop
the run at once, memory stays bounded, and images over PIL's decompression-bomb limit are handled."""

from __future__ import annotations

import errno
import json
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from fastseg.cli import main
from fastseg.config import PredictConfig
from fastseg.errors import DataError, FastsegError
from fastseg.infer.predictor import Predictor, collect_inputs, predict_paths

CODES = ["a", "b", "c"]


class CountingNet:
    """A backend that counts forward passes and records their input shapes."""

    def __init__(self, net):
        self.net, self.shapes = net, []

    def __call__(self, x):
        self.shapes.append(tuple(x.shape))
        return self.net(x)


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 3, 3, padding=1)).eval()


@pytest.fixture
def predictor() -> Predictor:
    return Predictor(None, CODES, [0.5] * 3, [0.25] * 3, device=torch.device("cpu"), backend=CountingNet(tiny_net()))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A TorchScript model file as `fastseg export` writes it (no training needed)."""
    from fastseg.card import ModelCard
    from fastseg.export.formats import write_torchscript

    # the metadata must pass the bundle checks (a real encoder name); the module itself is a 1x1 convolution
    info = {"arch": "Unet", "encoder": "timm-efficientnet-b0", "codes": CODES, "mean": [0.5] * 3, "std": [0.25] * 3}
    return write_torchscript(tiny_net(), ModelCard.from_dict(info), tmp_path_factory.mktemp("model") / "tiny.pt").path


def images(folder: Path, names, size=(40, 32)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / name)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def predict_cli(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


# 1. nothing the user has is replaced

def test_out_that_is_the_input_folder_is_refused_before_any_inference(model_file, tmp_path):
    photos = images(tmp_path / "photos", ["a.png", "b.png", "c.jpg"])
    before = snapshot(photos)
    res = predict_cli(model_file, photos, "--out", photos)
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        f"Error: {photos / 'a.png'} is an input image; predicting would replace it (2 output files in the way): "
        "predict into another --out folder, or move those files away")
    assert snapshot(photos) == before  # not even c.png was written: the check comes before inference


def test_out_that_holds_ground_truth_masks_of_the_same_names_is_refused(model_file, tmp_path):
    src = images(tmp_path / "images", ["x.jpg", "y.jpg"])
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "y.png").write_bytes(b"ground truth")
    res = predict_cli(model_file, src, "--out", masks, "--overlay")
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        f"Error: {masks / 'y.png'} exists and was not written by fastseg; predicting would replace it "
        "(1 output file in the way): predict into another --out folder, or move those files away")
    assert snapshot(masks) == {"y.png": b"ground truth"}


def test_links_to_inputs_and_the_model_count_as_inputs(tmp_path):
    from fastseg.infer.outputs import prepare_outputs

    src = images(tmp_path / "in", ["a.jpg", "b.jpg"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").hardlink_to(src / "a.jpg")
    (out / "b.png").symlink_to(src / "b.jpg")
    items = collect_inputs([str(src)])
    with pytest.raises(FastsegError, match=r"out/a.png is an input image; .* \(2 output files in the way\)"):
        prepare_outputs(items, out, PredictConfig())
    model = tmp_path / "m" / "a_probs.npy"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    (out / "a.png").unlink()
    (out / "b.png").unlink()
    (out / "a_probs.npy").symlink_to(model)
    with pytest.raises(FastsegError, match=r"out/a_probs.npy is the model; "):
        prepare_outputs(items, out, PredictConfig(probs=True), model=model)


def test_rerun_replaces_its_own_outputs_but_never_a_corrected_mask(predictor, tmp_path):
    src = images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    cfg = PredictConfig(overlay=True, probs=True, workers=0)
    assert len(predict_paths(predictor, [str(src)], out, cfg).written) == 6
    assert len(predict_paths(predictor, [str(src)], out, cfg).written) == 6  # its own files: replaced
    fixed = np.zeros((32, 40), np.uint8)
    Image.fromarray(fixed).save(out / "b.png")  # corrected in a labelling tool after pre-labelling
    before = snapshot(out)
    with pytest.raises(FastsegError, match=r"out/b.png was written by fastseg but has changed since \(edited by hand\?\)"):
        predict_paths(predictor, [str(src)], out, cfg)
    assert snapshot(out) == before
    log = [json.loads(line) for line in (out / ".fastseg-predict.jsonl").read_text().splitlines()]
    assert {e["path"] for e in log} == set(before) - {".fastseg-predict.jsonl"}


def test_the_record_survives_concurrent_writers_and_torn_lines(tmp_path):
    from fastseg.infer.outputs import OutputFolder

    folder = OutputFolder(tmp_path / "out")
    rels = [Path(f"t{t}/f{i}.png") for t in range(8) for i in range(25)]
    folder.claim(rels)

    def write(t):
        for i in range(25):
            folder.write(Path(f"t{t}/f{i}.png"), f"{t}-{i}".encode() * (i + 1))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    with open(folder.log, "ab") as f:
        f.write(b'{"path": "t0/f0.png", "si')  # a crash in the middle of an append
    again = OutputFolder(tmp_path / "out")
    again.claim(rels)  # every file is recognised as fastseg's own
    assert len(again.log.read_text().splitlines()) == 200  # and the torn line is gone


# 2. write failures surface once, at the first write

def test_out_under_a_regular_file_fails_before_inference(predictor, tmp_path, model_file):
    src = images(tmp_path / "in", ["a.png", "b.png"])
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "preds"
    with pytest.raises(FastsegError) as e:
        predict_paths(predictor, [str(src)], out, PredictConfig(workers=0))
    assert str(e.value) == (f"{out}: cannot create the output folder ({tmp_path / 'notes.txt'} is a file); "
                            "choose another --out folder")
    assert predictor.backend.shapes == []
    res = predict_cli(model_file, src, "--out", out)
    assert res.exit_code == 1 and res.output.strip().splitlines()[-1] == f"Error: {e.value}"


def test_a_failed_write_stops_the_run_at_once(predictor, tmp_path, monkeypatch):
    import fastseg.io

    @contextmanager
    def disk_full(dest):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield

    src = images(tmp_path / "in", [f"{i:02d}.png" for i in range(12)])
    monkeypatch.setattr(fastseg.io, "atomic_path", disk_full)
    cfg = PredictConfig(bs=1, workers=0)
    with pytest.raises(FastsegError) as e:
        predict_paths(predictor, [str(src)], tmp_path / "out", cfg)
    assert str(e.value) == (f"{tmp_path / 'out' / '00.png'}: cannot write (No space left on device); "
                            "free some disk space or choose another --out folder")
    assert len(predictor.backend.shapes) < 12  # the model stopped instead of predicting every image


# 3. the writer's queue is bounded

def test_pending_writes_stay_bounded_behind_a_slow_writer(predictor, tmp_path, monkeypatch):
    import queue

    import fastseg.infer.predictor as predict_mod

    n, cfg = 10, PredictConfig(bs=1, workers=0)
    bound = 2 * cfg.bs + 1  # two batches queued (predict.pending_writes), plus the one being written
    state = {"done": 0, "written": 0, "peak": 0, "full": False}
    cond = threading.Condition()

    class SpyQueue(queue.Queue):  # says when the model side must wait for room
        def put(self, item, block=True, timeout=None):
            with cond:
                state["full"] = self.full()
                cond.notify_all()
            super().put(item, block, timeout)

    real = predict_mod._write_outputs

    def slow_write(*args, **kwargs):  # each write waits until the model side is stopped, past the bound, or done
        with cond:
            assert cond.wait_for(lambda: state["full"] or state["done"] - state["written"] > bound
                                 or state["done"] == n, timeout=60)
            state["full"] = False
        paths = real(*args, **kwargs)
        with cond:
            state["written"] += 1
            cond.notify_all()
        return paths

    def progress(done, total):
        with cond:
            state["done"] = done
            state["peak"] = max(state["peak"], done - state["written"])
            cond.notify_all()

    monkeypatch.setattr(queue, "Queue", SpyQueue)
    monkeypatch.setattr(predict_mod, "_write_outputs", slow_write)
    src = images(tmp_path / "in", [f"{i:02d}.png" for i in range(n)])
    report = predict_paths(predictor, [str(src)], tmp_path / "out", cfg, progress=progress)
    assert len(report.written) == n
    assert state["peak"] <= bound < n


# 4. images over PIL's decompression-bomb limit

@pytest.fixture
def low_pixel_limit(monkeypatch):
    """PIL refuses images over 2 x MAX_IMAGE_PIXELS: 1000 makes a 60x40 image a 'bomb' without a huge file."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    return 1000


def test_readers_turn_a_bomb_into_a_data_error(tmp_path, low_pixel_limit):
    from fastseg.data.images import image_size, read_color_mask, read_image, read_mask

    path = images(tmp_path, ["big.png"], size=(60, 40)) / "big.png"
    for reader, what in ((read_image, "image"), (image_size, "image"), (read_mask, "mask"), (read_color_mask, "mask")):
        with pytest.raises(DataError) as e:
            reader(path)
        assert str(e.value) == (f"{path}: cannot read {what} (too large: 2400 pixels, over the limit of 2000 pixels "
                                "that guards against decompression bombs); split it into smaller images or downscale it")


def test_check_lists_a_bomb_as_a_problem_of_its_file(tmp_path, low_pixel_limit):
    from fastseg.data.check import check
    from fastseg.data.demo import make_demo_data

    data = make_demo_data(tmp_path / "data", n=4, size=16, seed=1, n_valid=1)  # 256 pixels: under the limit
    big = images(data / "images", ["shapes_000.jpg"], size=(60, 40)) / "shapes_000.jpg"
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(data / "masks" / "shapes_000.png")
    report = check(data)
    assert not report.ok and report.problems == (
        f"{big}: cannot read image (too large: 2400 pixels, over the limit of 2000 pixels that guards against "
        "decompression bombs); split it into smaller images or downscale it",)


def test_real_size_bomb_is_one_line_per_file_in_predict(predictor, tmp_path):
    src = images(tmp_path / "in", ["small.png"])
    Image.new("1", (14000, 13000)).save(src / "slide.png")  # 182 megapixels, 1 bit each: cheap to write
    report = predict_paths(predictor, [str(src)], tmp_path / "out", PredictConfig(workers=0))
    assert report.failed == [(src / "slide.png", (
        f"{src / 'slide.png'}: cannot read image (too large: 182 megapixels, over the limit of 179 megapixels that "
        "guards against decompression bombs); predict it with --tile, which sends the model one batch of tiles at a time"))]
    assert [p.name for p in report.written] == ["small.png"]


def test_tile_predicts_an_image_over_the_limit_and_restores_it(predictor, tmp_path, low_pixel_limit):
    src = images(tmp_path / "in", ["a.png", "b.png"], size=(100, 70))
    cfg = PredictConfig(tile=32, overlap=0.25, bs=3, workers=2)
    report = predict_paths(predictor, [str(src)], tmp_path / "out", cfg)
    assert report.failed == [] and len(report.written) == 2
    assert Image.MAX_IMAGE_PIXELS == low_pixel_limit  # lifted for the call only
    assert max(s[0] for s in predictor.backend.shapes) <= 3  # only a batch of tiles reaches the model
    assert max(s[2] for s in predictor.backend.shapes) <= 32
    with pytest.raises(DataError, match="too large"):
        predictor.predict([src / "a.png"])  # without tiles the limit holds


# 5. demo-data into a folder that holds data

def test_demo_data_refuses_a_folder_that_is_not_empty(tmp_path, monkeypatch):
    data = tmp_path / "data"
    images(data / "images", ["cell.png"])
    (data / "codes.txt").write_text("background\ncell\n")
    before = snapshot(data)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["demo-data"])  # the default is ./data
    assert res.exit_code == 1
    assert res.output.strip() == ("Error: data is not empty; demo-data would replace its codes.txt and valid.txt and "
                                  "mix demo shapes into its images/ and masks/ (give a new or empty folder, or add --force)")
    assert snapshot(data) == before


def test_demo_data_force_rewrites_the_repo_demo_set_byte_for_byte(tmp_path):
    repo_data = Path(__file__).resolve().parents[2] / "data"
    copy = tmp_path / "data"
    shutil.copytree(repo_data, copy)
    res = CliRunner().invoke(main, ["demo-data", str(copy), "--force"])
    assert res.exit_code == 0, res.output
    after = snapshot(copy)
    assert after == snapshot(repo_data)
