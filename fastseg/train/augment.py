"""The batch augmentation recipe for segmentation, from config values.

Paired image/mask transforms on the GPU/CPU batch: the 8 dihedral flips/rotations (membranes,
cells and aerial scenes have no "up"), small rotations, zoom, mild warp and lighting. Masks are
resampled with nearest neighbour by fastai, so labels stay class indices. Random crops for
images larger than the training size are item transforms (``fastseg.train.loaders``), so thin
structures keep their width in pixels instead of being down-scaled away.
"""

from __future__ import annotations

__all__ = ["seg_batch_tfms"]

def seg_batch_tfms(level: str = "full", stats: tuple | None = None) -> list:
    """fastai batch transforms for an augmentation level (the plan's), then normalisation by ``stats``.

    ``full``: the recipe below; ``flips``: only the 8 dihedral flips/rotations (exact pixel moves, no
    resampling); ``none``: normalisation only. ``stats``: per-channel (mean, std) of 0-1 values; None:
    ImageNet's, which 8-bit RGB keeps because the pretrained encoder expects them (other data brings its
    own, computed over its training set: ``DataSpec.stats``).
    """
    from fastai.data.transforms import Normalize
    from fastai.vision.augment import aug_transforms
    from fastai.vision.core import imagenet_stats

    if level not in ("full", "flips", "none"):
        raise ValueError(f"augmentation level must be full, flips or none, got {level!r}")
    tfms = []
    if level == "full":
        tfms += aug_transforms(
            flip_vert=True,  # with do_flip: all 8 dihedral orientations
            max_rotate=15.0,  # small tilts on top of the 90-degree steps
            min_zoom=1.0, max_zoom=1.2,  # zoom in only: never pads with made-up border pixels
            max_lighting=0.2,  # brightness/contrast jitter for staining and exposure differences
            max_warp=0.1,  # mild perspective
            p_affine=0.75, p_lighting=0.75,
        )
    elif level == "flips":  # fastai's Dihedral alone: 90-degree turns and flips land exactly on pixels
        tfms += aug_transforms(flip_vert=True, max_rotate=0.0, min_zoom=1.0, max_zoom=1.0, max_warp=0.0,
                               max_lighting=0.0)
    return [*tfms, Normalize.from_stats(*(stats or imagenet_stats))]
