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


# architectures (--arch)

TINY = "tu-test_efficientnet"  # a timm test model: any arch builds it in milliseconds


def test_arch_choices_are_smps_registry_less_dpt():
    import segmentation_models_pytorch as smp

    from fastseg.config import ARCH_CHOICES

    assert set(ARCH_CHOICES) == {c.__name__ for c in smp.MODEL_ARCHITECTURES_MAPPING.values()} - {"DPT"}


def test_unknown_arch_lists_choices_and_case_does_not_matter():
    from fastseg.config import FitConfig

    with pytest.raises(ConfigError) as e:
        FitConfig(arch="SegNet")
    assert str(e.value) == ("wrong arch `SegNet`, supported: Unet, UnetPlusPlus, FPN, DeepLabV3, DeepLabV3Plus, "
                            "Linknet, MAnet, PAN, PSPNet, UPerNet, Segformer")
    assert FitConfig(arch="deeplabv3plus").arch == "DeepLabV3Plus"
    with pytest.raises(ConfigError, match="^wrong arch `x`, supported: Unet, "):
        build_model(TINY, 2, "none", arch="x")


def test_arch_that_cannot_use_the_encoder_is_one_line():
    with pytest.raises(ConfigError) as e:
        build_model("vgg11", 2, "none", arch="DeepLabV3")
    assert str(e.value) == ("arch DeepLabV3 cannot use encoder `vgg11` ('VGG' models do not support dilated mode due "
                            "to Max Pooling operations for downsampling!); choose another --encoder or --arch")


@pytest.mark.parametrize("arch, multiple, minimum", [
    ("Unet", 32, 32), ("FPN", 32, 32), ("PSPNet", 8, 8), ("DeepLabV3Plus", 16, 16), ("PAN", 16, 128),
    ("Segformer", 32, 32),
])
def test_input_rule_comes_from_the_model(arch, multiple, minimum):
    from fastseg.model import input_rule

    model, _ = build_model(TINY, 3, "none", arch=arch)
    rule = input_rule(model.eval())
    assert (rule.multiple, rule.minimum) == (multiple, minimum)
    h, w = minimum, minimum + multiple  # the smallest accepted sides work, whatever else they are
    with torch.no_grad():
        assert model(torch.zeros(1, 3, h, w)).shape == (1, 3, h, w)


def test_training_size_below_the_archs_minimum_is_refused():
    from fastseg.model import check_input_size

    model, _ = build_model(TINY, 2, "none", arch="PAN")
    with pytest.raises(ConfigError) as e:
        check_input_size(model, 64)
    assert str(e.value) == ("PAN needs inputs of at least 128 px, but the training size is 64 (--size 128 resizes "
                            "smaller images up; or choose another --arch)")
    check_input_size(model, 128)


def test_timm_encoder_takes_imagenet_weights_from_the_cache(monkeypatch, tmp_path):
    """tu- encoders: timm's pretrained weights (from the hub's timm/<model> repo), cached first, no network."""
    import huggingface_hub.constants as hc
    import timm
    from safetensors.torch import save_file

    monkeypatch.setattr(fsmodel, "_hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    m, info = build_model(TINY, 2, "imagenet", arch="FPN")  # not cached, offline: random init at once, said why
    assert not info.loaded and "timm/test_efficientnet" in info.source
    repo, rev = fsmodel.pretrained_source(TINY)
    folder = tmp_path / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    donor = timm.create_model(TINY[3:])
    with torch.no_grad():
        for p in donor.parameters():
            p.fill_(0.5)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()},
              str(folder / "snapshots" / ("0" * 40) / "model.safetensors"))
    m, info = build_model(TINY, 2, "imagenet", arch="FPN")
    assert info.loaded and rev is None
    assert all(torch.all(p == 0.5) for p in m.encoder.parameters())
    assert not any(torch.all(p == 0.5) for p in m.decoder.parameters())


def test_timm_tag_is_checked_and_untrained_model_says_what_to_use():
    with pytest.raises(ConfigError, match=r"^timm model `test_efficientnet` has no weights tagged `nosuchtag`; its "
                                          r"tags: r160_in1k$"):
        build_model("tu-test_efficientnet.nosuchtag", 2, "imagenet")
    assert fsmodel.pretrained_source("tu-test_efficientnet.r160_in1k") == ("timm/test_efficientnet.r160_in1k", None)
    with pytest.raises(ConfigError, match=r"^timm model `beit3_giant_patch14_224` has no pretrained weights on the "
                                          r"Hugging Face hub; use --weights none or a local file$"):
        fsmodel.pretrained_source("tu-beit3_giant_patch14_224")  # timm has its architecture, untrained


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
