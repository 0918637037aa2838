"""The training loop (fastseg.train.loop): phases with their own loaders, resumed inside a later phase;
gradient clipping wired in after mixed precision's unscaling."""

import pytest


def test_run_phases_switches_loaders_and_resumes_inside_a_later_phase(monkeypatch):
    """Each phase trains on its own crop size; a resume after epoch 3 of 2+2 continues the full-size phase;
    the run's own DataLoaders are back in place afterwards."""
    from types import SimpleNamespace

    import fastseg.train.loop as T

    monkeypatch.setattr(T, "one_cycle_scheds", lambda learn, phase, lr, skip: {"skip": skip})
    monkeypatch.setattr(T, "ParamScheduler", lambda scheds: scheds)
    calls = []

    class Learn:
        dls, opt = "full", None

        def create_opt(self):
            self.opt = SimpleNamespace(load_state_dict=lambda s: calls.append("opt restored"))

        def freeze(self):
            calls.append("freeze")

        def unfreeze(self):
            calls.append("unfreeze")

        def fit(self, n, cbs):
            calls.append((self.dls, n, cbs[0]["skip"]))

    learn = Learn()
    phases = [T.Phase(2, (1.0,), 0.25, 25.0, False, size=32), T.Phase(2, (0.25,), 0.25, 25.0, False)]
    T.run_phases(learn, phases, 1e-3, done=3, cbs=[], opt_state={}, loaders={32: "small"})
    assert calls == ["unfreeze", "opt restored", ("full", 1, 1)] and learn.dls == "full"
    calls.clear()
    T.run_phases(learn, phases, 1e-3, done=1, cbs=[], opt_state=None, loaders={32: "small"})
    assert calls == ["unfreeze", ("small", 1, 1), "unfreeze", ("full", 2, 0)] and learn.dls == "full"
    calls.clear()  # the device data path: its own training loaders for the full-size phases too
    T.run_phases(learn, phases, 1e-3, done=1, cbs=[], opt_state=None, loaders={32: "small", None: "device"})
    assert calls == ["unfreeze", ("small", 1, 1), "unfreeze", ("device", 2, 0)] and learn.dls == "full"



@pytest.mark.slow
@pytest.mark.parametrize("clip", [0.5, 0.0])
def test_fit_clips_gradients_unless_turned_off(tiny_data, tmp_path, monkeypatch, clip):
    """--grad-clip reaches the training loop as fastai's GradientClip (after MixedPrecision's unscaling)."""
    from fastai.callback.fp16 import MixedPrecision
    from fastai.callback.training import GradientClip

    import fastseg.train.loop as T
    from fastseg.config import FitConfig
    from fastseg.errors import Interrupted
    from fastseg.pipeline import fit

    seen = {}

    def capture(learn, phases, lr, done, cbs, opt_state, loaders=None):
        seen["cbs"] = cbs
        raise KeyboardInterrupt  # stop before any training: only the callbacks matter here

    monkeypatch.setattr(T, "run_phases", capture)
    cfg = FitConfig(data=str(tiny_data), epochs=1, lr=1e-3, bs=4, weights="none", grad_clip=clip,
                    runs_dir=str(tmp_path / "runs"), export=str(tmp_path / "m.pkl"))
    with pytest.raises(Interrupted):  # the run's Ctrl-C message
        fit(cfg)
    clips = [cb for cb in seen["cbs"] if isinstance(cb, GradientClip)]
    assert [cb.max_norm for cb in clips] == ([clip] if clip else [])
    assert all(cb.order > MixedPrecision.order for cb in clips)  # clips true (unscaled) gradients


@pytest.mark.slow
def test_gradient_clip_bounds_the_step_gradient(tiny_data, tmp_path):
    """One real training step with a tiny max norm: the gradient the optimiser sees is clipped."""
    import torch
    from fastai.callback.core import Callback
    from fastai.callback.training import GradientClip

    from fastseg.config import FitConfig
    from fastseg.train.loop import prepare

    learn = prepare(FitConfig(data=str(tiny_data), bs=4, weights="none", epochs=1), workdir=tmp_path).learn
    norms = []

    class Spy(Callback):
        order = GradientClip.order + 1

        def before_step(self):
            grads = [p.grad for p in self.learn.model.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    learn.fit(1, 1e-3, cbs=[GradientClip(1e-3), Spy()])
    assert norms and max(norms) <= 1e-3 * 1.01
