"""The batch augmentation recipe for segmentation, from config values.

Paired image/mask transforms on the GPU/CPU batch: the 8 dihedral flips/rotations (membranes,
cells and aerial scenes have no "up"), small rotations, zoom, mild warp and lighting. Masks are
resampled with nearest neighbour by fastai, so labels stay class indices. Random crops for
images larger than the training size are item transforms (``fastseg.loaders``), so thin
structures keep their width in pixels instead of being down-scaled away.
"""

from __future__ import annotations

__all__ = ["seg_batch_tfms"]


def seg_batch_tfms(aug: bool = True) -> list:
    """fastai batch transforms: the augmentations (unless ``aug`` is False), then ImageNet normalisation."""
    from fastai.data.transforms import Normalize
    from fastai.vision.augment import aug_transforms
    from fastai.vision.core import imagenet_stats

    tfms = []
    if aug:
        tfms += aug_transforms(
            flip_vert=True,  # with do_flip: all 8 dihedral orientations
            max_rotate=15.0,  # small tilts on top of the 90-degree steps
            min_zoom=1.0, max_zoom=1.2,  # zoom in only: never pads with made-up border pixels
            max_lighting=0.2,  # brightness/contrast jitter for staining and exposure differences
            max_warp=0.1,  # mild perspective
            p_affine=0.75, p_lighting=0.75,
        )
    return [*tfms, Normalize.from_stats(*imagenet_stats)]
