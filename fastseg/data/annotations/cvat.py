"""CVAT "Segmentation mask 1.1" exports: VOC's folders plus labelmap.txt, the colour of each label.

The colour PNGs in SegmentationClass/ are read through labelmap.txt as they are (no rendering);
SegmentationObject/ is ignored. Subsets in ImageSets/Segmentation/ (default, train, val, ...) give
the split when one is called train/val.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..images import IMAGE_EXTS
from ..layouts import Found, Sample
from .common import BACKGROUND_NAMES, merge_splits, split_of

CVAT_HINT = "CVAT 'Segmentation mask 1.1' export: labelmap.txt, SegmentationClass/, JPEGImages/"


def read_labelmap(path: Path) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...], list[str]]:
    """labelmap.txt (``name:r,g,b:parts:actions`` per line) -> (codes, colours, notes); background first."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}) (export again from CVAT)") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            rgb = tuple(int(v) for v in rest.split(":")[0].split(","))
        except ValueError:
            rgb = ()
        if not name.strip() or len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise DataError(f"{path}: line {i} is not label:r,g,b::  ('{line}') (fix the line or export again)")
        rows.append((name.strip(), rgb))
    notes = []
    bg = next((r for r in rows if r[0].lower() in BACKGROUND_NAMES), None)
    if bg is not None:
        rows = [bg] + [r for r in rows if r is not bg]
    elif (0, 0, 0) not in [c for _, c in rows]:
        rows.insert(0, ("background", (0, 0, 0)))
        notes.append(f"{path}: no background label: unlabelled black pixels are class 0 'background'")
    for kind, seq in (("label", [n for n, _ in rows]), ("colour", [c for _, c in rows])):
        dupes = sorted({str(v) for v in seq if seq.count(v) > 1})
        if dupes:
            raise DataError(f"{path}: duplicate {kind}(s) {', '.join(dupes)} (each label needs its own colour)")
    if len(rows) < 2:
        raise DataError(f"{path}: needs at least one label besides background")
    return tuple(n for n, _ in rows), tuple(c for _, c in rows), notes


def labelmap_text(codes, colors) -> str:
    """The labelmap.txt CVAT reads and writes, one ``name:r,g,b::`` line per class."""
    lines = ["# label:color_rgb:parts:actions"] + [f"{n}:{r},{g},{b}::" for n, (r, g, b) in zip(codes, colors)]
    return "\n".join(lines) + "\n"


def cvat_root(root: Path) -> Path | None:
    """``root`` or its single sub-folder holding labelmap.txt and SegmentationClass/, if any."""
    found = [d for d in [root, *sorted(p for p in root.iterdir() if p.is_dir())]
             if (d / "labelmap.txt").is_file() and (d / "SegmentationClass").is_dir()] if root.is_dir() else []
    return found[0] if found and (found[0] == root or len(found) == 1) else None


def _cvat_subsets(root: Path) -> dict[str, str]:
    """Item name -> split, from ImageSets/Segmentation/<subset>.txt (CVAT's subsets: default, train, ...)."""
    out = {}
    for listing in sorted((root / "ImageSets" / "Segmentation").glob("*.txt")):
        for line in listing.read_text().splitlines():
            if line.strip():
                out[line.split()[0]] = split_of(listing.stem)
    return out


def read_cvat(root: Path) -> Found:
    """CVAT 'Segmentation mask 1.1': colour masks read through labelmap.txt; SegmentationObject/ is ignored."""
    base = cvat_root(root)
    if base is None:
        raise DataError(f"{root}: no labelmap.txt with SegmentationClass/ beside it ({CVAT_HINT})")
    codes, colors, notes = read_labelmap(base / "labelmap.txt")
    image_dir = next((base / d for d in ("JPEGImages", "images") if (base / d).is_dir()), None)
    if image_dir is None:
        raise DataError(f"{base}: no JPEGImages/ folder (export from CVAT with 'Save images', or copy the "
                        "images into JPEGImages/)")
    images = {p.relative_to(image_dir).with_suffix("").as_posix(): p for p in sorted(image_dir.rglob("*"))
              if p.is_file() and p.suffix.lower() in IMAGE_EXTS}
    subsets = _cvat_subsets(base)
    named: dict[str, list[Sample]] = {}
    extra = []
    for mask in sorted((base / "SegmentationClass").rglob("*.png")):
        name = mask.relative_to(base / "SegmentationClass").with_suffix("").as_posix()
        if name in images:
            named.setdefault(subsets.get(name, "all"), []).append(Sample(images[name], mask))
        else:
            extra.append(mask)
    if not named:
        raise DataError(f"{base / 'SegmentationClass'}: no mask matches an image in {image_dir.name}/ by name")
    splits = merge_splits(base, named)
    # Images without a mask were not annotated in CVAT: not worth a warning (as in VOC's JPEGImages/).
    return Found("cvat", base, splits, unpaired_masks=extra, codes=codes, colors=colors,
                 split_source="CVAT subsets in ImageSets/Segmentation/" if set(splits) != {"all"} else None,
                 notices=[f"CVAT labelmap.txt: {len(codes)} classes ({', '.join(codes)})", *notes])
