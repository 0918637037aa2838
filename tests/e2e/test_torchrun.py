"""DDP: helpers in one process, and a real 2-process CPU run under torchrun (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import fastseg
from fastseg import distributed as dist
from fastseg.cli import main

REPO = Path(fastseg.__file__).resolve().parents[1]


def test_single_process_helpers_are_noops(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    seen = []
    assert dist.world_size() == 1 and dist.rank() == 0 and not dist.is_distributed()
    assert dist.is_main_process()
    dist.main_only(seen.append)("hello")
    dist.setup(seen.append)("world")
    assert seen == ["hello", "world"]
    assert dist.broadcast_value({"lr": 0.1}) == {"lr": 0.1}
    dist.barrier()  # must not need a process group
    with dist.ddp(learn=None) as sync:  # never touches the learner
        assert sync is None


def test_run_on_main_in_one_process_just_calls(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.run_on_main(lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(ValueError, match="boom"):
        dist.run_on_main(lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_solo_hides_and_restores_the_launcher_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    with dist._solo():
        assert not dist.is_distributed()
        from fastai.torch_core import num_distrib
        assert num_distrib() == 1  # fastai will not all-gather or wait at barriers
    assert os.environ["WORLD_SIZE"] == "4" and os.environ["RANK"] == "0"


def test_other_ranks_are_silent(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    seen = []
    assert not dist.is_main_process() and dist.is_distributed()
    dist.main_only(seen.append)("hello")
    assert seen == []


@pytest.mark.parametrize("rank, i, bs, expected", [
    (0, 2, 2, 2),  # rank 0's shard is all real samples
    (1, 2, 2, 2),  # rank 1, first batch: positions 4-5 of 7 real
    (1, 4, 2, 1),  # rank 1, last batch: position 6 real, position 7 repeats sample 0
    (1, 4, 4, 3),
])
def test_shard_padding_is_found(rank, i, bs, expected):
    # 7 samples over 2 ranks: DistributedDL pads to 8, rank 0 gets positions 0-3, rank 1 gets 4-7.
    dl = object.__new__(dist.ShardDL)
    dl.rank, dl.world_size, dl.n, dl.n_padded, dl.i = rank, 2, 7, 8, i
    assert dl.real_in_batch(bs) == expected


def test_sync_batchnorm_reverts_for_export():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Sequential(torch.nn.BatchNorm2d(4)))
    model[1].running_mean += 1.5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(synced[1], torch.nn.SyncBatchNorm)
    reverted = dist._revert_sync_batchnorm(synced)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in reverted.modules())
    assert isinstance(reverted[2][0], torch.nn.BatchNorm2d)
    after = reverted.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_fit_help_shows_ddp_example_and_sync_bn():
    res = CliRunner().invoke(main, ["fit", "--help"])
    assert res.exit_code == 0
    assert "torchrun --nproc_per_node" in res.output and "--no-sync-bn" in res.output


def _valid_support(data: Path) -> list[int]:
    names = (data / "valid.txt").read_text().split()
    counts = np.zeros(4, dtype=np.int64)
    for name in names:
        mask = np.asarray(Image.open(data / "masks" / (Path(name).stem + ".png")))
        counts += np.bincount(mask.reshape(-1), minlength=4)[:4]
    return counts.tolist()


def _torchrun_fit(cwd: Path, data: Path, out: Path, *options: str) -> str:
    """``fastseg fit`` in 2 CPU processes under torchrun (bs 2 each, lr 1e-3, random init); its output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fastseg", "fit", "--data", str(data), "--lr", "1e-3", "--bs", "2",
           "--weights", "none", "--export", str(out / "model.pkl"), *options]
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    return res.stdout + res.stderr


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_model(tmp_path):
    from fastai.learner import load_learner

    from fastseg.data.demo import make_demo_data

    # 7 train / 3 valid: odd sizes, so DistributedDL must pad one shard and the metrics must drop it.
    data = make_demo_data(tmp_path / "data", n=10, size=64, seed=3, n_valid=3)
    out = tmp_path / "out"
    text = _torchrun_fit(tmp_path, data, out, "--epochs", "1")

    # one export, written once (rank 0), atomically
    # exactly one export (+ its safe-bundle twin), no temp files left by a second writer
    assert sorted(p.name for p in out.iterdir()) == [".model.pkl.lock", "model", "model.pkl"]  # + the copy's lock
    assert sorted(p.name for p in (out / "model").iterdir()) == ["README.md", "config.json", "fastseg.json",
                                                                 "model.safetensors"]
    assert text.count("exported ") == 1 and text.count("valid mIoU") == 1
    assert "effective batch size 4 (2 per process x 2)" in text
    # both ranks trained and validated on their own shard: 7 = 4 + 3 (one repeat dropped), 3 = 2 + 1
    assert "samples per rank: train 4+3, valid 2+1" in text

    learn = load_learner(out / "model.pkl")
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in learn.model.modules())
    final = learn.fastseg_info.meta["final"]
    assert 0.0 <= final["miou"] <= 1.0 and 0.0 <= final["pixel_accuracy"] <= 1.0
    # the confusion matrix was summed over ranks, each validation pixel counted exactly once
    support = [final["per_class"][c]["support"] for c in ("background", "disc", "square", "triangle")]
    assert support == _valid_support(data)


@pytest.mark.slow
def test_torchrun_progressive_resizing_switches_loaders_in_every_process(tmp_path):
    """Progressive resizing under DDP: each fit call wraps the DataLoaders it is given (half-size, then
    full-size), so both parts train sharded; one run folder, one export of the full-size pipeline."""
    import csv

    from fastai.learner import load_learner

    from fastseg.data.demo import make_demo_data
    from fastseg.train.transforms import SegCrop

    data = make_demo_data(tmp_path / "data", n=10, size=64, seed=3, n_valid=3)
    out = tmp_path / "out"
    text = _torchrun_fit(tmp_path, data, out, "--epochs", "4", "--progressive", "on", "--name", "prog")
    assert "progressive    32 px x4 per image for 2 epochs, then 64 px at LR/4" in text
    assert text.count("exported ") == 1 and "samples per rank: train 4+3, valid 2+1" in text
    with (tmp_path / "runs" / "prog" / "history.csv").open() as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1", "2", "3"]  # rank 0 alone logs
    learn = load_learner(out / "model.pkl")
    crops = [t for t in learn.dls.train.after_item.fs if isinstance(t, SegCrop)]
    assert crops and tuple(crops[0].size) == (64, 64)
