import time
from pathlib import Path

import pytest
import torch

from fastseg import model as fsmodel
from fastseg.errors import ConfigError, WeightsError
from fastseg.model import build_model, load_encoder_file

ENC = "timm-efficientnet-b0"


def _first_param(m):
    return next(iter(m.encoder.state_dict().values())).clone()


def test_none_vs_local_file_give_different_encoders(tmp_path):
    torch.manual_seed(0)
    donor, _ = build_model(ENC, 3, "none")
    with torch.no_grad():
        for p in donor.encoder.parameters():
            p.fill_(0.125)
    path = tmp_path / "enc.pth"
    torch.save(donor.encoder.state_dict(), path)
    torch.manual_seed(0)
    scratch, info0 = build_model(ENC, 3, "none")
    torch.manual_seed(0)
    loaded, info1 = build_model(ENC, 3, str(path))
    assert not info0.loaded and info1.loaded
    assert not torch.equal(_first_param(scratch), _first_param(loaded))
    assert torch.all(_first_param(loaded) == 0.125)


def test_local_safetensors_and_full_unet_state_dict(tmp_path):
    from safetensors.torch import save_file

    donor, _ = build_model(ENC, 2, "none")
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(tmp_path / "full.safetensors"))
    m, info = build_model(ENC, 2, str(tmp_path / "full.safetensors"))
    assert info.loaded
    assert torch.equal(_first_param(m), _first_param(donor))


def test_mismatched_weights_file_is_clear_error(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsError, match="does not fit this encoder"):
        build_model(ENC, 2, str(path))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="cannot read weights"):
        build_model(ENC, 2, str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsError, match="not found"):
        build_model(ENC, 2, str(tmp_path / "missing.pth"))


def test_unknown_encoder_lists_choices():
    with pytest.raises(ConfigError, match="supported encoders: .*timm-efficientnet-b0"):
        build_model("effnet-b99", 2, "none")


def test_imagenet_offline_warns_fast_and_proceeds(monkeypatch, tmp_path):
    # No cached copy (empty cache) and no hub: fastseg must answer at once, not after SMP's retries.
    monkeypatch.setattr(fsmodel, "_hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    t = time.monotonic()
    m, info = build_model(ENC, 2, "imagenet")
    assert time.monotonic() - t < 10
    assert not info.loaded and "unavailable" in info.source
    assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def _cached_imagenet(monkeypatch, tmp_path, donor) -> Path:
    """``donor``'s encoder as the Hugging Face cache's ImageNet copy, with no network; returns its folder."""
    from safetensors.torch import save_file

    monkeypatch.setattr(fsmodel, "_hub_reachable", lambda timeout=2.0: False)
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    repo, rev = fsmodel.pretrained_source(ENC, "imagenet")
    snap = tmp_path / ("models--" + repo.replace("/", "--")) / "snapshots" / rev
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in donor.encoder.state_dict().items()}, str(snap / "model.safetensors"))
    return snap


def test_imagenet_uses_cached_copy(monkeypatch, tmp_path):
    """A copy in the Hugging Face cache is used without any network."""
    donor, _ = build_model(ENC, 2, "none")
    with torch.no_grad():
        for p in donor.encoder.parameters():
            p.fill_(0.5)
    snap = _cached_imagenet(monkeypatch, tmp_path, donor)
    m, info = build_model(ENC, 2, "imagenet")
    assert info.loaded and str(snap) in info.source
    assert torch.all(_first_param(m) == 0.5)


@pytest.mark.parametrize("channels", [1, 2, 4, 5])
def test_rgb_weights_are_adapted_to_other_channels_as_smp_does(tmp_path, channels):
    """fastseg loads weights itself, so it must adapt the first convolution as SMP's own loading would
    (``set_in_channels(..., pretrained=True)`` after loading: ``patch_first_conv``)."""
    torch.manual_seed(0)
    donor, _ = build_model(ENC, 2, "none")
    path = tmp_path / "enc.pth"
    torch.save(donor.encoder.state_dict(), path)
    smp_way, _ = build_model(ENC, 2, str(path))  # RGB, then SMP's own patching of the loaded weights
    smp_way.encoder.set_in_channels(channels, pretrained=True)
    ours, info = build_model(ENC, 2, str(path), in_channels=channels)
    assert info.loaded and fsmodel.input_channels(ours) == channels
    want, got = smp_way.encoder.state_dict(), ours.encoder.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert ours(torch.zeros(1, channels, 64, 64)).shape == (1, 2, 64, 64)


def test_imagenet_weights_reach_a_one_channel_model(monkeypatch, tmp_path):
    """The cached ImageNet copy is RGB: a grey model's first convolution sums its three filters."""
    donor, _ = build_model(ENC, 2, "none")
    _cached_imagenet(monkeypatch, tmp_path, donor)
    m, info = build_model(ENC, 2, "imagenet", in_channels=1)
    stem = "conv_stem.weight"  # timm-efficientnet's first convolution
    assert info.loaded and torch.equal(m.encoder.state_dict()[stem], donor.encoder.state_dict()[stem].sum(1, keepdim=True))
