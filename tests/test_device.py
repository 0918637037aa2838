"""Machine-dependent choices: workers, cache, --bs auto, torch.compile wrapper, learner tuning."""

from types import SimpleNamespace

import pytest
import torch

from fastseg.config import FitConfig
from fastseg.device import (BS_TIE, CPU_BS_CAP, MEMORY_SHARE, CompileModel, auto_batch_size, fast_adamw,
                            measure_batch_sizes, pick_batch_size, probe_step, resolve_cache, resolve_num_workers,
                            still_rising, tune_learner)
from fastseg.errors import ConfigError
from fastseg.model import build_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("value, device, cores, expected", [
    ("auto", CPU, 2, 0), ("auto", CPU, 4, 0), ("auto", CPU, 16, 4), ("auto", CUDA, 16, 8), ("auto", CUDA, 4, 3),
    ("auto", CUDA, 1, 0), (3, CPU, 2, 3), (0, CUDA, 16, 0),
])
def test_resolve_num_workers(value, device, cores, expected):
    assert resolve_num_workers(value, device, cores=cores) == expected


@pytest.mark.parametrize("device, cached, batches, expected", [
    (CUDA, True, 3, 0), (CUDA, True, 63, 0), (CUDA, True, 64, 8), (CUDA, False, 3, 8),
    (CUDA, True, None, 8), (CPU, True, 3, 4),
])
def test_resolve_num_workers_short_cached_epochs(device, cached, batches, expected):
    """On CUDA, short epochs over RAM-cached data load in-process: fastai restarts workers every epoch."""
    assert resolve_num_workers("auto", device, cores=16, cached=cached, batches=batches) == expected


def test_resolve_cache():
    assert resolve_cache("auto", needed_bytes=100, free_bytes=400) is True
    assert resolve_cache("auto", needed_bytes=101, free_bytes=400) is False
    assert resolve_cache("ram", needed_bytes=10**12, free_bytes=0) is True  # free RAM unknown: trust the user
    with pytest.raises(ConfigError, match="--cache ram: the decoded images need"):  # more than the RAM available
        resolve_cache("ram", needed_bytes=10**12, free_bytes=1)
    assert resolve_cache("none", needed_bytes=1, free_bytes=10**12) is False
    with pytest.raises(ConfigError, match="cache must be one of auto, ram, none, got 'disk'"):
        resolve_cache("disk", 1)


@pytest.mark.parametrize("changes, message", [
    ({"bs": 0}, "bs (batch size) must be 'auto' or at least 1, got 0"),
    ({"bs": "big"}, "bs (batch size) must be 'auto' or at least 1, got 'big'"),
    ({"num_workers": -1}, "num_workers must be 'auto' or 0 or more, got -1"),
    ({"cache": "disk"}, "cache must be one of auto, ram, none, got 'disk'"),
])
def test_config_rejects_bad_speed_options(changes, message):
    with pytest.raises(ConfigError) as e:
        FitConfig(**changes)
    assert str(e.value) == message


def test_config_speed_defaults():
    cfg = FitConfig(bs="auto")
    assert (cfg.bs, cfg.num_workers, cfg.cache, cfg.compile) == ("auto", "auto", "auto", False)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_model("timm-efficientnet-b0", 2, "none")[0]


def test_probe_step_measures_activations_linear_in_batch(unet):
    one, two, three = (probe_step(unet, bs, 64, CPU) for bs in (1, 2, 3))
    assert 0 < one < two < three
    assert three - two == pytest.approx(two - one, rel=0.05)  # saved weights once, activations per image
    assert all(p.grad is None for p in unet.parameters())  # the probe leaves no gradients behind


def test_auto_batch_size_cpu_caps(unet):
    bs, why = auto_batch_size(unet, 64, CPU, n_train=100, free_bytes=10**12)
    assert bs == CPU_BS_CAP and why.startswith("CPU: ")
    bs, _ = auto_batch_size(unet, 64, CPU, n_train=6, free_bytes=10**12)
    assert bs == 4  # largest power of two not above the 6 training images


def test_auto_batch_size_cpu_backs_off_to_free_ram(unet):
    one, two = probe_step(unet, 1, 64, CPU), probe_step(unet, 2, 64, CPU)
    per_image, fixed = two - one, 2 * one - two
    bs, _ = auto_batch_size(unet, 64, CPU, n_train=100, free_bytes=int((fixed + 5.5 * per_image) / MEMORY_SHARE))
    assert bs == 4  # 5 images fit; the largest power of two below
    bs, _ = auto_batch_size(unet, 64, CPU, n_train=100, free_bytes=1)
    assert bs == 1


def test_compile_model_wraps_during_fit_and_restores():
    plain = torch.nn.Linear(3, 2)
    cb = CompileModel()
    cb.learn = SimpleNamespace(model=plain)
    cb.before_fit()
    assert cb.learn.model is not plain and cb.learn.model._orig_mod is plain
    cb.after_fit()
    assert cb.learn.model is plain and cb.plain is None


def test_tune_learner_cpu_and_channels_last():
    added = []
    learn = SimpleNamespace(dls=SimpleNamespace(device=CPU), model=torch.nn.Conv2d(3, 4, 3), opt_func=None,
                            add_cb=added.append)
    done = tune_learner(learn, channels_last=False)
    assert learn.opt_func is fast_adamw and "channels_last" not in done and not added
    assert learn.model.weight.is_contiguous()
    done = tune_learner(learn, compile=True)  # channels_last by default, CPU too (oneDNN's NHWC kernels)
    assert done["channels_last"] and learn.model.weight.is_contiguous(memory_format=torch.channels_last)
    assert len(added) == 1 and isinstance(added[0], CompileModel)


def test_checkpoints_written_while_compiled_load_into_the_plain_model(tmp_path):
    """A --compile fit saves best.pth/last.pth mid-fit, while learn.model is the compiled wrapper:
    the files must hold the plain module's keys (found on a GPU run: '_orig_mod.' keys broke the export)."""
    from fastseg.train.runs import RunState, load_best, load_run_state, model_state, save_epoch

    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    learn = SimpleNamespace(model=torch.compile(plain), opt=None, path=tmp_path, model_dir="models")
    state = RunState(epoch=1, total_epochs=2, lr=1e-3, lr_source="given", best_epoch=0, model=model_state(learn))
    save_epoch(tmp_path, state, state.model)
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    fresh.load_state_dict(load_best(tmp_path)[1])  # strict: raises on '_orig_mod.'
    assert torch.equal(fresh[0].weight, plain[0].weight)
    fresh.load_state_dict(load_run_state(tmp_path).model)


# --------------------------------------------------------------------------- --bs auto on CUDA: best throughput

def test_pick_batch_size_takes_the_best_throughput_not_the_largest_batch():
    # img/s: 100, 133, 160, 160, 150: the GPU is busy from 8 on, and 32 is slower than 16
    bs, why = pick_batch_size({2: 0.02, 4: 0.03, 8: 0.05, 16: 0.1, 32: 32 / 150})
    assert bs == 8 and "img/s by batch size 2: 100, 4: 133, 8: 160, 16: 160, 32: 150" in why
    assert pick_batch_size({8: 8 / 100, 16: 16 / (100 * (1 + BS_TIE / 2))})[0] == 8  # within the tie: the smaller
    assert pick_batch_size({8: 8 / 100, 16: 16 / (100 * (1 + 2 * BS_TIE))})[0] == 16


def test_still_rising_stops_after_a_doubling_that_gains_too_little():
    assert still_rising({}) and still_rising({2: 0.1})
    assert still_rising({2: 0.02, 4: 0.03})  # 100 -> 133 img/s
    assert not still_rising({2: 0.02, 4: 4 / (100 * (1 + BS_TIE / 2))})


class FakeGpu:
    """Seconds per step from a table; out of memory from ``oom`` images on. Records what was measured."""

    def __init__(self, rates: dict[int, float], oom: int = 10**9):
        self.rates, self.oom, self.asked = rates, oom, []

    def __call__(self, bs: int) -> float:
        self.asked.append(bs)
        if bs >= self.oom:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return bs / self.rates[bs]


def test_measure_batch_sizes_stops_when_the_throughput_is_flat():
    gpu = FakeGpu({2: 100, 4: 150, 8: 200, 16: 202, 32: 300, 64: 300})
    seconds = measure_batch_sizes(gpu, limit=256)
    assert gpu.asked == [2, 4, 8, 16]  # 8 -> 16 gained 1%: no further doubling is tried
    assert pick_batch_size(seconds)[0] == 8


def test_measure_batch_sizes_stops_at_out_of_memory_and_the_data_size():
    gpu = FakeGpu({2: 100, 4: 150, 8: 200, 16: 300}, oom=16)
    assert list(measure_batch_sizes(gpu, limit=256)) == [2, 4, 8]
    assert list(measure_batch_sizes(FakeGpu({2: 100, 4: 150, 8: 200}), limit=6)) == [2, 4]  # 6 training images
    assert list(measure_batch_sizes(FakeGpu({1: 50}, oom=2), limit=256)) == [1]  # only one image fits
    assert measure_batch_sizes(FakeGpu({}, oom=1), limit=256) == {}
    assert list(measure_batch_sizes(FakeGpu({1: 50}), limit=1)) == [1]
