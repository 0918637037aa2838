"""The run plan (fastseg.train.plan): every automatic choice, its reason, and --time's epoch count."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from fastseg.config import FitConfig
from fastseg.errors import ConfigError
from fastseg.train.plan import (AUG_FULL_STEPS, Costs, Machine, Phase, RunPlan, Workload, budget_epochs, count_steps,
                                crops_per_image, plan_phases, plan_run, progressive_size, resolve_aug, small_epochs)

CPU = Machine(device="cpu", cores=2, ram_free=16 * 2**30)


def spec_like(min_side=512, n_train=24, n_valid=6, pixels=None):
    """What the planner reads of a DataSpec: sizes, counts and pixel totals (ISBI-like by default)."""
    side = pixels or min_side * min_side
    return SimpleNamespace(min_side=min_side, train=[None] * n_train, valid=[None] * n_valid,
                           class_pixels={"train": [n_train * side], "valid": [n_valid * side]}, pixel_bytes=3, channels=3)


class FakeProbe:
    """Made-up measurements: a step costs ``per_pixel`` seconds per pixel; bf16 is ``bf16_gain`` x faster."""

    def __init__(self, per_pixel=8e-6, bf16_gain=1.5, bs=16):
        self.per_pixel, self.bf16_gain, self.bs, self.asked = per_pixel, bf16_gain, bs, []

    def batch_size(self, size, n_train):
        self.asked.append("bs")
        return min(self.bs, n_train), "--bs auto: made up"

    def precision(self, requested, size, bs):
        self.asked.append("precision")
        return ("bf16", "auto: faster here") if self.bf16_gain >= 1.1 else ("fp32", "auto: not faster")

    def step_seconds(self, size, bs, precision):
        self.asked.append(("step", size, bs, precision))
        return bs * size * size * self.per_pixel / (self.bf16_gain if precision == "bf16" else 1.0)


def test_progressive_size_rules():
    """auto: half-size crops only when images are at least twice the crop; on/off; short runs stay at one size."""
    cfg = FitConfig(epochs=14)
    assert progressive_size(cfg, 512, 256, 14) == (128, "auto: images >= 2 x crop 256")
    assert progressive_size(cfg, 300, 256, 14) == (None, "auto: smallest image side 300 < 2 x crop 256")
    assert progressive_size(cfg.replace(progressive="on"), 300, 256, 14) == (128, "--progressive on")
    assert progressive_size(cfg.replace(progressive="off"), 512, 256, 14)[0] is None
    assert progressive_size(cfg, 512, 256, 3) == (None, "3 epochs cannot be split (>= 4 needed)")
    assert progressive_size(cfg.replace(progressive="on"), 512, 32, 14)[0] is None  # a 16 px crop cannot pass the Unet
    assert progressive_size(cfg, 512, 96, 14)[0] == 32  # half of 96, down to a multiple of 32
    assert progressive_size(cfg.replace(arch="PAN", progressive="on"), 512, 192, 14) == (
        None, "no half-size crop for size 192 (crops must be multiples of 32, at least 128 for PAN)")


def test_small_epochs_split_and_crops_per_image():
    assert small_epochs(17) == 11 and small_epochs(14) == 9 and small_epochs(4) == 2
    assert small_epochs(1) == 0 and small_epochs(3) == 0  # too short to split
    assert crops_per_image(256, 128) == 4 and crops_per_image(96, 32) == 9 and crops_per_image(224, 96) == 5


def test_plan_phases_recipes():
    assert plan_phases(14, 1, False) == (Phase(14, (1.0,), pct_start=0.25, div=25.0, frozen=False),)
    phases = plan_phases(14, 1, False, small=128)
    assert [(p.epochs, p.size, p.lr(1e-3), p.frozen) for p in phases] == [(9, 128, 1e-3, False), (5, None, 2.5e-4, False)]
    phases = plan_phases(5, 1, True, small=128)  # pretrained: 1 frozen warm-up + 5 trained
    assert [(p.epochs, p.size, p.frozen) for p in phases] == [(1, 128, True), (3, 128, False), (2, None, False)]
    assert phases[1].lr(1e-3) == slice(1e-3 / 200, 1e-3 / 2)  # discriminative LRs in both parts
    assert phases[2].lr(1e-3).start == pytest.approx(1e-3 / 800) and phases[2].lr(1e-3).stop == pytest.approx(1e-3 / 8)


def test_steps_count_the_half_size_crops_and_set_the_aug_level():
    """The ISBI run: 11 epochs of 4 x 24 half-size crops (12 batches of 8), 6 epochs of 3 batches."""
    phases = plan_phases(17, 1, False, small=128)
    assert count_steps(phases, 24, 8, crops=4) == 11 * 12 + 6 * 3
    assert count_steps(plan_phases(17, 1, False), 24, 8, crops=1) == 17 * 3
    assert count_steps(plan_phases(4, 1, True), 24, 8, crops=1) == 4 * 3  # the frozen warm-up is extra
    assert resolve_aug("auto", AUG_FULL_STEPS) == ("full", "auto: 1000 optimiser steps >= 1000")
    assert resolve_aug("auto", 42)[0] == "none" and resolve_aug("flips", 1) == ("flips", "--aug")


def test_plan_run_makes_every_choice_once_with_a_reason():
    cfg = FitConfig(epochs=17, bs=8, precision="fp32", lr="auto")
    plan = plan_run(cfg, spec_like(), CPU, pretrained=False)
    assert (plan.size, plan.input_mode, plan.bs, plan.precision, plan.epochs) == (256, "crop", 8, "fp32", 17)
    assert (plan.progressive, plan.crops_per_image, plan.steps, plan.aug) == (128, 4, 150, "none")
    assert plan.cache and plan.workers == 0 and plan.lr is None
    assert set(plan.why) >= {"device", "size", "bs", "precision", "cache", "epochs", "progressive", "aug", "workers",
                             "data_path", "lr"} and all(plan.why.values())
    assert plan.data_path == "fastai" and "on a CPU" in plan.why["data_path"]
    table = plan.table()
    for line in ("crop size      256 px (crop)", "batch size     8", "progressive    128 px x4 per image for 11 epochs",
                 "augmentation   none", "learning rate  LR finder"):
        assert line in table, table
    assert "auto: 150 optimiser steps < 1000" in table


def test_plan_cuts_batches_on_the_gpu_when_the_decoded_set_fits():
    """The device data path is a planned choice (CPU-tested: the machine is described, not detected)."""
    gpu = Machine(device="cuda", cores=16, ram_free=64 * 2**30, gpu_free=70 * 2**30, bf16=True)
    cfg = FitConfig(epochs=17, bs=8, precision="auto", lr=1e-3)
    plan = plan_run(cfg.replace(aug="none"), spec_like(), gpu, pretrained=False)
    assert plan.data_path == "device" and "cached on the GPU" in plan.why["data_path"]
    assert "data path      device" in plan.table() and plan.precision == "bf16"  # auto on a bf16 GPU
    tight = Machine(device="cuda", cores=16, ram_free=64 * 2**30, gpu_free=2**20)  # 1 MiB free: pinned RAM
    assert plan_run(cfg.replace(aug="flips"), spec_like(), tight, pretrained=False).data_path == "host"
    full = plan_run(cfg.replace(aug="full"), spec_like(), gpu, pretrained=False)
    assert full.data_path == "fastai" and "resamples" in full.why["data_path"]
    grey16 = spec_like()
    grey16.channels, grey16.pixel_bytes = 1, 2
    assert plan_run(cfg.replace(aug="none"), grey16, gpu, pretrained=False).data_path == "fastai"


def test_plan_measures_only_what_auto_asks_for():
    probe = FakeProbe()
    plan = plan_run(FitConfig(bs="auto", precision="auto"), spec_like(n_train=12), CPU, False, probe)
    assert probe.asked == ["bs", "precision"] and (plan.bs, plan.precision) == (12, "bf16")
    probe = FakeProbe(bf16_gain=1.0)
    assert plan_run(FitConfig(precision="auto"), spec_like(), CPU, False, probe).precision == "fp32"
    with pytest.raises(ConfigError, match="--bs auto needs measurements"):
        plan_run(FitConfig(bs="auto", precision="fp32"), spec_like(), CPU, False, None)


def test_plan_round_trips_through_plan_json():
    plan = plan_run(FitConfig(precision="fp32", lr=3e-3), spec_like(), CPU, True)
    back = RunPlan.from_dict(json.loads(plan.with_lr(2e-3, "LR finder").to_json()))
    assert back == plan.with_lr(2e-3, "LR finder") and back.phases[0].frozen
    with pytest.raises(ConfigError, match="plan version 99 is not one this fastseg reads"):
        RunPlan.from_dict({**json.loads(plan.to_json()), "version": 99})


def test_cache_rule_counts_every_local_process():
    spec = spec_like(pixels=1000 * 1000, n_train=100, n_valid=20)  # 480 MB decoded
    small_ram = Machine(device="cpu", cores=2, ram_free=4 * 2**30, local_processes=4)
    plan = plan_run(FitConfig(precision="fp32"), spec, small_ram, False)
    assert not plan.cache and "x 4 processes" in plan.why["cache"]
    assert plan_run(FitConfig(precision="fp32"), spec, CPU, False).cache


def test_time_budget_picks_the_most_epochs_that_fit():
    """--time: epochs from probed step times; a larger budget buys more epochs, and the prediction fits."""
    probe = FakeProbe()
    spec = spec_like()
    plans = {t: plan_run(FitConfig(time=t, precision="fp32"), spec, CPU, False, probe,
                         clock=lambda: 10.0) for t in (240, 480)}
    assert 4 <= plans[240].epochs < plans[480].epochs
    for t, plan in plans.items():
        assert plan.estimate_s <= t and plan.budget_s == t
        assert plan.why["epochs"].startswith(f"--time {t // 60} min 0 s: step ")
        assert plan.progressive == 128  # ISBI-like images: the budget run is progressive too
    costs = Costs(**{k: v for k, v in plans[240].timings.items() if k != "setup"})
    one_more = costs.run(plans[240].epochs + 1, 24, 8, 128, 4, 0) + plans[240].timings["setup"]
    assert one_more > 240  # the next epoch count would not have fitted


def test_budget_never_plans_zero_epochs():
    costs = Costs(full_step=100.0, small_step=30.0, lr_find=0.0, valid_epoch=1.0, finish=10.0)
    epochs, seconds = budget_epochs(60.0, costs, Workload(24, 8, 256, 512), FitConfig(time=60))
    assert epochs == 1 and seconds > 60.0  # over budget, but a run trains at least one epoch


def test_time_is_parsed_and_exclusive_of_epochs_on_the_cli(tiny_data):
    from click.testing import CliRunner

    from fastseg.cli import main

    assert FitConfig(time="4m").time == 240 and FitConfig(time="1h30m").time == 5400
    with pytest.raises(ConfigError, match="time must be a duration such as 90s, 10m or 1h30m, got '4 weeks'"):
        FitConfig(time="4 weeks")
    res = CliRunner().invoke(main, ["fit", "--data", str(tiny_data), "--time", "4m", "--epochs", "3"])
    assert res.exit_code == 2 and "--time and --epochs are exclusive" in res.output


def test_time_counts_the_probes_against_the_budget():
    """The clock is read after the probes: a slow probe leaves fewer epochs, never an overrun."""
    spent = [0.0]

    class SlowProbe(FakeProbe):
        def step_seconds(self, size, bs, precision):
            spent[0] += 30.0
            return super().step_seconds(size, bs, precision)

    cfg = FitConfig(time=240, precision="fp32")
    slow = plan_run(cfg, spec_like(), CPU, False, SlowProbe(), clock=lambda: spent[0])
    quick = plan_run(cfg, spec_like(), CPU, False, FakeProbe())
    assert slow.timings["setup"] >= 90  # full, half and LR-finder steps, 30 s each
    assert slow.epochs < quick.epochs and slow.estimate_s <= 240
