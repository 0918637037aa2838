"""Data-set layouts: which folders hold images and masks, how they pair, and the layout's own split.

Seven layouts are recognised (``LAYOUTS``); ``find_layout(root, "auto")`` picks the first whose
folders or files exist. Each finder returns a ``Found``: samples per split ("train", "valid", "test",
or "all" when the layout has no split of its own), plus what could not be paired. Nothing here
reads pixels or writes; the labelling-tool layouts (COCO, CVAT, LabelMe) live in
``fastseg.data.annotations``, which renders COCO and LabelMe shapes into a cache outside the data folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import LAYOUT_CHOICES as CONFIG_LAYOUTS
from ..errors import DataError
from .images import IMAGE_EXTS, MASK_EXTS

__all__ = ["LAYOUTS", "LAYOUT_CHOICES", "Sample", "Found", "find_layout", "list_images", "MASK_DIRS", "MASK_SUFFIXES"]

MASK_DIRS = ("masks", "labels", "annotations", "gt")
MASK_SUFFIXES = ("", "_P", "_mask", "_label", "_labels", "-mask", "_gt", "_seg")
SEGNET_SPLITS = (("train", "trainannot", "train"), ("val", "valannot", "valid"), ("test", "testannot", "test"))
VOC_SPLITS = (("train", "train"), ("val", "valid"), ("test", "test"))
_LAYOUT_HINT = ("expected images/ and masks/ side by side, or train/+trainannot/ (SegNet), "
                "or JPEGImages/+SegmentationClass/ (VOC)")


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path


@dataclass
class Found:
    layout: str
    root: Path
    splits: dict[str, list[Sample]]  # "train"/"valid"/"test", or only "all" (no split of its own)
    split_source: str | None = None  # how the layout split the data, None if it did not
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_masks: list[Path] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # problems that do not stop training, one line each
    codes: tuple[str, ...] | None = None  # the layout's own class table (labelling-tool exports), else None
    colors: tuple[tuple[int, int, int], ...] | None = None  # one RGB per code when its masks are colour PNGs


def list_images(folder: Path, exts: tuple[str, ...] = IMAGE_EXTS) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts
                  and not p.name.startswith("."))


def _pair(images: list[Path], mask_dir: Path) -> tuple[list[Sample], list[Path], list[Path]]:
    """Pair each image with the mask of the same stem (mask suffixes like _P or _mask allowed)."""
    masks: dict[str, Path] = {}
    for m in list_images(mask_dir, MASK_EXTS):
        masks.setdefault(m.stem, m)
    pairs, unpaired, used = [], [], set()
    for img in images:
        mask = next((masks[img.stem + s] for s in MASK_SUFFIXES if img.stem + s in masks), None)
        if mask is None:
            unpaired.append(img)
        else:
            pairs.append(Sample(img, mask))
            used.add(mask)
    return pairs, unpaired, [m for m in masks.values() if m not in used]


def _images_in(folder: Path) -> list[Path]:
    images = list_images(folder)
    if not images:
        raise DataError(f"{folder}: no images found (looked for {', '.join(IMAGE_EXTS)})")
    return images


def _no_pairs(mask_dir: Path) -> DataError:
    if not list_images(mask_dir, MASK_EXTS):  # say so rather than blame the names
        kinds = sorted({p.suffix.lower() or p.name for p in mask_dir.iterdir()
                        if p.is_file() and not p.name.startswith(".")})
        if kinds:
            return DataError(f"{mask_dir}: no mask of a type fastseg reads (found {', '.join(kinds)}; masks are read "
                             f"from {', '.join(MASK_EXTS)}) (convert the masks to PNG)")
    return DataError(f"{mask_dir}: no mask matches any image by name (image a.png needs mask a.png or a_mask.png)")


def _folders(root: Path) -> Found:
    """Layout 1 (and 4): images/ + masks/ (or labels/...), paired by stem."""
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise DataError(f"{root}: no images/ folder ({_LAYOUT_HINT})")
    images = _images_in(image_dir)
    mask_dir = next((root / d for d in MASK_DIRS if (root / d).is_dir()), None)
    if mask_dir is None:
        raise DataError(f"{root}: no masks folder found (expected one of: {', '.join(d + '/' for d in MASK_DIRS)})")
    pairs, unpaired, extra = _pair(images, mask_dir)
    if not pairs:
        raise _no_pairs(mask_dir)
    camvid = mask_dir.name == "labels" and all(s.mask.stem.endswith("_P") for s in pairs)
    return Found("camvid" if camvid else "images+masks", root, {"all": pairs},
                 unpaired_images=unpaired, unpaired_masks=extra)


def _segnet(root: Path) -> Found:
    """Layout 2: train/+trainannot/, val/+valannot/, test/+testannot/ with the same file names."""
    splits: dict[str, list[Sample]] = {}
    found = Found("segnet", root, splits, split_source="the layout's train/ val/ test/ folders")
    for img_name, ann_name, split in SEGNET_SPLITS:
        img_dir, ann_dir = root / img_name, root / ann_name
        if not img_dir.is_dir():
            if split == "train":
                raise DataError(f"{root}: no train/ folder (SegNet layout needs train/ and trainannot/)")
            continue
        if not ann_dir.is_dir():
            if split == "test":
                found.notices.append(f"{img_dir}: no testannot/ folder, test images not used")
                continue
            raise DataError(f"{img_dir}: no {ann_name}/ folder beside it (SegNet layout: {img_name}/ + {ann_name}/)")
        pairs, unpaired, extra = _pair(_images_in(img_dir), ann_dir)
        if not pairs:
            raise _no_pairs(ann_dir)
        splits[split] = pairs
        found.unpaired_images += unpaired
        found.unpaired_masks += extra
    return found


def _voc_root(root: Path) -> Path:
    """``root`` itself, or the single VOCdevkit/VOC20xx-style folder below it holding JPEGImages/."""
    if (root / "JPEGImages").is_dir():
        return root
    inner = sorted(p.parent for p in [*root.glob("*/JPEGImages"), *root.glob("*/*/JPEGImages")]
                   if (p.parent / "SegmentationClass").is_dir())
    return inner[0] if len(inner) == 1 else root


def _voc(root: Path) -> Found:
    """Layout 3: JPEGImages/, SegmentationClass/ (palette PNGs), ImageSets/Segmentation/{train,val}.txt."""
    root = _voc_root(root)
    image_dir, mask_dir = root / "JPEGImages", root / "SegmentationClass"
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise DataError(f"{root}: no {d.name}/ folder (VOC layout needs JPEGImages/ and SegmentationClass/)")
    sets = root / "ImageSets" / "Segmentation"
    lists = [(sets / f"{name}.txt", split) for name, split in VOC_SPLITS if (sets / f"{name}.txt").is_file()]
    if not lists:
        pairs, unpaired, extra = _pair(_images_in(image_dir), mask_dir)
        if not pairs:
            raise _no_pairs(mask_dir)
        # JPEGImages/ usually holds many images without segmentation masks: not worth a warning.
        return Found("voc", root, {"all": pairs}, unpaired_masks=extra,
                     notices=[f"{sets}: no train.txt/val.txt, so the split is not the layout's own"])
    images = {p.stem: p for p in list_images(image_dir)}
    splits: dict[str, list[Sample]] = {}
    found = Found("voc", root, splits, split_source="ImageSets/Segmentation/" + ", ".join(p.name for p, _ in lists))
    for list_file, split in lists:
        stems = [s.split()[0] for s in list_file.read_text().splitlines() if s.strip()]
        missing = [s for s in stems if s not in images or not (mask_dir / f"{s}.png").is_file()]
        if split == "test":  # VOC's test list usually comes without masks
            stems = [s for s in stems if s not in missing]
            if missing:
                found.notices.append(f"{list_file}: {len(missing)} test image(s) without a mask not used")
        elif missing:
            raise DataError(f"{list_file}: names {len(missing)} image(s) without a file in JPEGImages/ or "
                            f"SegmentationClass/, e.g. {missing[0]} (fix the list or add the files)")
        if stems:
            splits[split] = [Sample(images[s], mask_dir / f"{s}.png") for s in stems]
    if "train" not in splits:
        raise DataError(f"{sets}: no train.txt listing training images (VOC layout)")
    return found


def _coco(root: Path) -> Found:
    from .annotations import read_coco  # imported on use: it imports this module (and pycocotools on use)

    return read_coco(root)


def _cvat(root: Path) -> Found:
    from .annotations import read_cvat

    return read_cvat(root)


def _labelme(root: Path) -> Found:
    from .annotations import read_labelme

    return read_labelme(root)


LAYOUTS: dict[str, Callable[[Path], Found]] = {
    "images+masks": _folders, "camvid": _folders, "segnet": _segnet, "voc": _voc,
    "coco": _coco, "cvat": _cvat, "labelme": _labelme,
}
LAYOUT_CHOICES = ("auto", *LAYOUTS)
assert LAYOUT_CHOICES == CONFIG_LAYOUTS, "keep fastseg.config.LAYOUT_CHOICES in step with LAYOUTS"


def _has_mask_folder(root: Path) -> bool:
    return (root / "images").is_dir() and any((root / d).is_dir() and list_images(root / d) for d in MASK_DIRS)


def _detect(root: Path) -> str:
    from .annotations import cvat_root, detect_annotations

    if root.is_dir() and cvat_root(root) is not None:  # before VOC: CVAT's export is VOC plus labelmap.txt
        return "cvat"
    if (_voc_root(root) / "JPEGImages").is_dir():
        return "voc"
    if (root / "train").is_dir() and (root / "trainannot").is_dir():
        return "segnet"
    if root.is_dir() and not _has_mask_folder(root):  # mask images win over stray JSON files
        return detect_annotations(root) or "images+masks"
    return "images+masks"


def find_layout(root: Path, layout: str = "auto") -> Found:
    """Find images, masks and the layout's own split under ``root`` (``layout`` forces one)."""
    if layout not in LAYOUT_CHOICES:
        raise DataError(f"{root}: unknown layout '{layout}' (choose one of: {', '.join(LAYOUT_CHOICES)})")
    found = LAYOUTS[_detect(root) if layout == "auto" else layout](root)
    if layout != "auto":
        found.layout = layout
    return found
