"""Values every stage shares (fastseg.constants), checked against what relies on them."""

from fastseg.constants import IGNORE_INDEX, IMAGE_EXTS, MASK_EXTS, STRIDE


def test_the_stride_is_the_unets_input_multiple():
    from fastseg.model import build_model, input_rule

    model, _ = build_model("timm-efficientnet-b0", 2, "none")
    assert STRIDE == 2 ** 5 == input_rule(model).multiple


def test_extensions_are_lower_case_suffixes_and_masks_read_every_image_type():
    assert all(e.startswith(".") and e == e.lower() for e in MASK_EXTS)  # readers compare suffix.lower()
    assert set(IMAGE_EXTS) < set(MASK_EXTS) and ".gif" in MASK_EXTS and ".gif" not in IMAGE_EXTS
    assert 0 <= IGNORE_INDEX <= 255  # a uint8 mask value
