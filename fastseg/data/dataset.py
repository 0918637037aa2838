"""Finding images and masks, class codes, mask-value mapping, void class, splits and pixel scaling.

``discover(root)`` inspects a data folder without modifying it and returns a ``DataSpec``: which
image pairs with which mask (per split), the class codes, how raw mask values (or mask colours)
become class indices, and what was done, as notices. ``inspect_data`` does the same but returns
every problem found instead of raising the first (``fastseg check``). Layouts live in
``fastseg.data.layouts``, train/valid/test in ``fastseg.data.splits``, pixel reading in ``fastseg.data.images``;
``fastseg.train.loaders`` builds DataLoaders.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import Notify, silent
from ..errors import DataError
from .channels import ImageFacts, channel_stats, image_facts
from .images import IGNORE_INDEX, IMAGE_EXTS, MaskDecoder, Scaling, read_image, read_mask, scaling_for
from .layouts import LAYOUT_CHOICES, Found, Sample, find_layout, list_images
from .splits import check_splits, make_splits

__all__ = [
    "IGNORE_INDEX", "IMAGE_EXTS", "LAYOUT_CHOICES", "VOC_CODES", "Sample", "DataSpec", "discover", "inspect_data",
    "read_image", "read_mask", "list_images", "read_colors",
]

VOID_NAMES = ("void", "Void", "unlabelled", "Unlabelled", "unlabeled", "Unlabeled", "ignore")
COLOR_FILES = ("codes.csv", "class_dict.csv")  # name,r,g,b per class (class_dict.csv: Kaggle CamVid)
VOC_CODES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
             "tvmonitor")
MAX_CLASSES = 255  # mask value 255 is void, so class indices stop at 254
SCAN_THREADS = 8  # PIL decodes with the GIL released; a few threads hide file-system latency


@dataclass(frozen=True)
class DataSpec:
    """What ``discover`` found: enough to build DataLoaders and to explain it to the user."""

    root: Path
    layout: str
    train: tuple[Sample, ...]
    valid: tuple[Sample, ...]
    codes: tuple[str, ...]
    lut: tuple[int, ...]  # 256 entries: raw mask value -> class index (IGNORE_INDEX = void)
    min_side: int  # smallest image side in the set (for crop/resize decisions)
    void_code: str | None = None
    notices: tuple[str, ...] = field(default=())
    test: tuple[Sample, ...] = ()  # the layout's test split (SegNet test/, VOC test.txt) + test.txt's: never trained
    colors: tuple[tuple[int, int, int], ...] | None = None  # one RGB per code when masks are colour-coded
    mapping: tuple[str, ...] = ()  # how mask values became class indices, in words
    warnings: tuple[str, ...] = ()  # problems that do not stop training
    split_source: str = ""  # where the train/valid split came from
    class_pixels: dict = field(default_factory=dict, compare=False)  # split -> pixels per class (+ "void")
    scaling: Scaling = Scaling()  # how pixel values become 0-255, decided from the training images
    # per-channel (mean, std) of the training images, for sets read channel by channel; None: 8-bit RGB, ImageNet's
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    dtypes: tuple[str, ...] = ()  # the images' stored value types (uint8, uint16, float32, ...)

    @property
    def n_classes(self) -> int:
        return len(self.codes)

    @property
    def channels(self) -> int:
        """The model's input channels: 3 for 8-bit sets read as RGB, else the images' own count."""
        return self.scaling.channels or 3

    @property
    def pixel_bytes(self) -> int:
        """Bytes per image pixel as decoded and cached (uint8 RGB: 3; channels as stored: their width)."""
        if self.scaling.channels is None:
            return 3
        return self.scaling.channels * max((np.dtype(d).itemsize for d in self.dtypes), default=1)

    @property
    def decoder(self) -> MaskDecoder:
        """The picklable mask-file -> class-index callable for this data set."""
        return MaskDecoder(self.lut, self.colors)


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()]


def _read_codes(path: Path) -> tuple[str, ...]:
    lines = _read_lines(path)
    while lines and not lines[-1]:
        lines.pop()
    if any(not line for line in lines):
        raise DataError(f"{path}: empty line {lines.index('') + 1} (one class name per line, line number = class index)")
    dupes = sorted({c for c in lines if lines.count(c) > 1})
    if dupes:
        raise DataError(f"{path}: duplicate class name(s) {', '.join(dupes)} (each class needs its own name)")
    if len(lines) < 2:
        raise DataError(f"{path}: needs at least 2 classes (background and one more), found {len(lines)}")
    _at_most_255(path, len(lines))
    return tuple(lines)


def _at_most_255(path: Path, n: int) -> None:
    if n > MAX_CLASSES:
        raise DataError(f"{path}: {n} classes, but at most {MAX_CLASSES} are possible because mask value 255 "
                        "is void (merge or drop classes)")


def read_colors(path: str | os.PathLike) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """A colour table: ``name,r,g,b`` per line (a header line is allowed) -> (codes, colours)."""
    path = Path(path)
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except OSError as e:
        raise DataError(f"{path}: cannot read colour table ({e.strerror}) (pass an existing name,r,g,b file)") from None
    names, colors = [], []
    for i, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            rgb = tuple(int(v) for v in parts[1:])
        except ValueError:
            if not names and i == next(j for j, ln in enumerate(lines, 1) if ln):
                continue  # a header such as name,r,g,b
            rgb = ()
        if len(parts) != 4 or len(rgb) != 3 or not parts[0] or not all(0 <= v <= 255 for v in rgb):
            raise DataError(f"{path}: line {i} is not name,r,g,b with r, g, b in 0-255 ('{line}') (fix the line)")
        names.append(parts[0])
        colors.append(rgb)
    for kind, seq in (("class name", names), ("colour", colors)):
        dupes = sorted({str(v) for v in seq if seq.count(v) > 1})
        if dupes:
            raise DataError(f"{path}: duplicate {kind}(s) {', '.join(dupes)} (each class needs its own)")
    if len(names) < 2:
        raise DataError(f"{path}: needs at least 2 classes (name,r,g,b lines), found {len(names)}")
    _at_most_255(path, len(names))
    return tuple(names), tuple(colors)  # type: ignore[return-value]


@dataclass
class _Scanned:
    counts: dict[Path, np.ndarray]  # mask -> 256-bin histogram of raw values
    min_side: int
    problems: list[str]
    peaks: dict[Path, tuple[float, bool]] = field(default_factory=dict)  # wide image -> (largest value, is float)
    facts: dict[Path, ImageFacts] = field(default_factory=dict)  # image -> size, channels, type


def _scan_one(sample: Sample, decoder: MaskDecoder):
    try:
        facts = image_facts(sample.image)
        raw = decoder.raw(sample.mask)
    except DataError as e:
        return None, 0, str(e), None
    w, h = facts.size
    if raw.shape != (h, w):
        return None, 0, (f"{sample.mask}: mask is {raw.shape[1]}x{raw.shape[0]} but image {sample.image.name} is "
                         f"{w}x{h} (image and mask must be the same size)"), None
    return np.bincount(raw.ravel(), minlength=256), min(w, h), None, facts


def _scan(samples: list[Sample], decoder: MaskDecoder) -> _Scanned:
    """Image headers and mask histograms for every sample, in a thread pool."""
    with ThreadPoolExecutor(max_workers=min(SCAN_THREADS, max(1, len(samples)))) as pool:
        results = list(pool.map(lambda s: _scan_one(s, decoder), samples))
    counts, problems, sides, peaks, facts = {}, [], [], {}, {}
    for s, (hist, side, problem, found) in zip(samples, results):
        if problem:
            problems.append(problem)
        else:
            counts[s.mask] = hist
            sides.append(side)
            facts[s.image] = found
            if found.peak is not None:
                peaks[s.image] = found.peak
    return _Scanned(counts, min(sides) if sides else 0, problems, peaks, facts)


def _index_like(values: list[int]) -> bool:
    return not values or max(values) + 1 <= 2 * len(values)


def _infer(found: list[int], ignore_index: int | None) -> tuple[tuple[str, ...], np.ndarray, list[str], str | None]:
    """Codes absent: classes from the values found; 255 is void when the rest look like indices."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    ign = {ignore_index} if ignore_index is not None else set()
    if set(found) <= {0, 255} and 255 in found and not ign & {0, 255}:
        lut[0], lut[255] = 0, 1
        return ("background", "foreground"), lut, ["masks are 0/255: mapped 255->1 (classes: background, foreground)"], None
    others = [v for v in found if v not in ign and v != 255]
    classes = others + ([255] if 255 in found and 255 not in ign and not _index_like(others) else [])
    notes = []
    if _index_like(classes):
        n = max(classes, default=0) + 1
        lut[:n] = np.arange(n)
        codes = [f"class_{i}" for i in range(n)]
    else:
        lut[classes] = np.arange(len(classes))
        codes = [f"class_{i}" for i in range(len(classes))]
        notes.append(f"mask values {', '.join(map(str, classes))} mapped to classes 0-{len(classes) - 1}")
    void_code = None
    if ignore_index is not None:
        if ignore_index < len(codes) and lut[ignore_index] == ignore_index:
            codes[ignore_index] = void_code = "void"
        lut[ignore_index] = IGNORE_INDEX
        notes.append(f"mask value {ignore_index} is void (--ignore-index): ignored in loss and metrics")
    notes.insert(0, f"no codes.txt: inferred {len(codes)} classes from mask values ({', '.join(codes)})")
    if 255 in found and 255 not in classes:
        notes.append("mask value 255 treated as void (ignored in loss and metrics)")
    return tuple(codes), lut, notes, void_code


def _binary_foregrounds(scanned: _Scanned) -> list[int]:
    """The non-zero values when every mask holds 0 and at most one other value; [] otherwise."""
    found: set[int] = set()
    for hist in scanned.counts.values():
        others = np.flatnonzero(hist[1:]).tolist()
        if len(others) > 1:
            return []
        found.update(v + 1 for v in others)
    return sorted(found)


def _map_values(scanned: _Scanned, codes: tuple[str, ...] | None, colors, ignore_index: int | None
                ) -> tuple[tuple[str, ...], np.ndarray, list[str], list[str], str | None]:
    """Decide how raw values become class indices: (codes, lut, mapping notes, problems, void from ignore)."""
    total = sum(scanned.counts.values(), np.zeros(256, np.int64))
    found = np.flatnonzero(total).tolist()
    fg = _binary_foregrounds(scanned) if colors is None and ignore_index is None else []
    if len(fg) > 1 and (codes is None or len(codes) == 2):  # e.g. DRIVE: 0/255 in some files, 0/251 in others
        names = codes or ("background", "foreground")
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        lut[0], lut[fg] = 0, 1
        return names, lut, [f"binary masks with foreground values {', '.join(map(str, fg))} in different files: "
                            f"every non-zero value mapped to 1 (classes: {', '.join(names)}; add codes.txt if "
                            "they are different classes)"], [], None
    if codes is None:
        inferred, lut, notes, void = _infer(found, ignore_index)
        return inferred, lut, notes, [], void
    n, notes, problems = len(codes), [], []
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    if colors is not None:
        lut[:n] = np.arange(n)
        notes.append(f"colour masks mapped through the colour table ({n} colours)")
    elif set(found) <= {0, 255} and 255 in found and n == 2 and ignore_index not in (0, 255):
        lut[0], lut[255] = 0, 1
        notes.append(f"masks are 0/255: mapped 255->1 ({codes[1]})")
    else:
        lut[:n] = np.arange(n)
        allowed = {IGNORE_INDEX, ignore_index}
        for mask, hist in scanned.counts.items():
            bad = [v for v in np.flatnonzero(hist[n:]).tolist() if v + n not in allowed]
            if bad:
                problems.append(f"{mask}: mask values {[v + n for v in bad][:8]} outside the {n} codes "
                                f"(class indices must be 0-{n - 1}; fix the mask or codes.txt)")
        if IGNORE_INDEX in found and n <= IGNORE_INDEX:
            notes.append("mask value 255 treated as void (ignored in loss and metrics)")
    void = None
    if ignore_index is not None:
        lut[ignore_index] = IGNORE_INDEX
        void = codes[ignore_index] if ignore_index < n else None
        notes.append(f"mask value {ignore_index} is void (--ignore-index): ignored in loss and metrics")
    return codes, lut, notes, problems, void


def _class_pixels(counts: dict[Path, np.ndarray], samples: list[Sample], lut: np.ndarray, n: int) -> list[int]:
    raw = sum((counts[s.mask] for s in samples if s.mask in counts), np.zeros(256, np.int64))
    out = np.bincount(lut, weights=raw, minlength=256)
    return [int(v) for v in out[:n]] + [int(out[IGNORE_INDEX])]


def _codes_and_colors(root: Path, layout: str, colors_file):
    """(codes, colour table, notices); ``colors_file`` may also be the table itself, as models store it."""
    if isinstance(colors_file, (list, tuple)):
        table = [(str(c[0]), tuple(int(v) for v in c[1:4])) for c in colors_file]
        return tuple(n for n, _ in table), tuple(rgb for _, rgb in table), [
            f"colour table stored with the model ({len(table)} classes)"]
    for f in ([Path(colors_file)] if colors_file else [root / c for c in COLOR_FILES]):
        if colors_file or f.is_file():
            codes, colors = read_colors(f)
            return codes, colors, [f"colour table {f} ({len(codes)} classes)"]
    if (root / "codes.txt").is_file():
        return _read_codes(root / "codes.txt"), None, []
    if layout == "voc":
        return VOC_CODES, None, ["VOC class names built in (21 classes); mask value 255 (border) is void"]
    return None, None, []


def _check_classes(root: Path, codes, train_pixels: list[int], void_code: str | None) -> tuple[list[str], list[str]]:
    """(problems, warnings) about the classes the training split holds: fewer than 2 is nothing to learn."""
    present = [c for c, px in zip(codes, train_pixels) if px and c != void_code]
    if len(present) < 2:
        held = f"only class '{present[0]}'" if present else "no class at all (every pixel is void)"
        return [f"{root}: the training masks hold {held}; a model needs at least 2 classes to learn (label the "
                "objects with mask values 1, 2, ...; labels kept only in an alpha channel are not read)"], []
    absent = [c for c, px in zip(codes, train_pixels) if px == 0 and c != void_code]
    if absent:
        return [], [f"Warning: {root}: class(es) {', '.join(absent[:6])} absent from the training split "
                    "(the model cannot learn them; move images with them into training)"]
    return [], []


def _scaling(scanned: _Scanned, train: list[Sample], held_out: list[Sample]) -> tuple[Scaling, list[str]]:
    """The data set's pixel scaling from the training images, its notice, and a warning for held-out
    images it clips."""
    scaling = scaling_for([scanned.peaks[s.image] for s in train if s.image in scanned.peaks])
    if scaling.top is None:
        return scaling, []
    notes = [f"image values: {scaling.why}"]
    over = [s.image for s in held_out if scanned.peaks.get(s.image, (0.0,))[0] > scaling.top]
    if over:
        notes.append(f"Warning: {len(over)} validation/test image(s) hold values above {scaling.top:g}, the training "
                     f"images' range, e.g. {over[0]}: clipped to 255")
    return scaling, notes


def _channels(scanned: _Scanned, train: list[Sample], held_out: list[Sample], scaling: Scaling
              ) -> tuple[Scaling, tuple | None, list[str], list[str]]:
    """How the set's pixels are read: (scaling with its channel count, per-channel stats, notices, problems).

    All images 8-bit: read as RGB, ImageNet's statistics (None). Otherwise every channel as stored: the
    training images' most common channel count, which every image must have."""
    facts = {s.image: scanned.facts[s.image] for s in (*train, *held_out) if s.image in scanned.facts}
    if all(f.rgb for f in facts.values()):
        return scaling, None, [], []
    counts = [facts[s.image].channels for s in train if s.image in facts] or [f.channels for f in facts.values()]
    n = max(counts, key=counts.count)  # the most common; a tie goes to the first image's count
    odd = [(p, f.channels) for p, f in facts.items() if f.channels != n]
    problems = [f"{odd[0][0]}: {odd[0][1]} channel(s), but the training images have {n}"
                f"{f' ({len(odd) - 1} more image(s) differ)' if len(odd) > 1 else ''} (every image of a data set "
                "needs the same channels: convert or remove it)"] if odd else []
    missing = [s.image for s in train if s.image in facts and facts[s.image].sums is None]  # 8-bit: header only
    with ThreadPoolExecutor(max_workers=min(SCAN_THREADS, max(1, len(missing)))) as pool:
        decoded = dict(zip(missing, pool.map(lambda p: image_facts(p, decode=True), missing)))
    train_facts = [decoded.get(s.image, facts.get(s.image)) for s in train if s.image in facts]
    stats = channel_stats([f for f in train_facts if f.channels == n], scaling) if train_facts else None
    types = ", ".join(sorted({f.dtype for f in facts.values()}))
    note = (f"images: {n} channel(s), {types}: not 8-bit RGB, so every channel is read as stored and normalised by "
            f"the per-channel mean/std of the {len(train_facts)} training image(s), not ImageNet's")
    return dataclasses.replace(scaling, channels=n), stats, [note], problems


def _layout_classes(found: Found, colors_file: str | None):
    """A labelling-tool export's own class table (fastseg.data.annotations), else the folder's codes files."""
    if found.codes is None:
        return _codes_and_colors(found.root, found.layout, colors_file)
    if colors_file and not isinstance(colors_file, (list, tuple)):  # a table stored with a model is checked by evaluate
        raise DataError(f"{found.root}: the {found.layout} layout takes its classes from its own files (drop --colors)")
    return found.codes, found.colors, []


@dataclass
class _Messages:
    """What an inspection found, gathered step by step: notices (what was done), warnings, problems."""

    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, problems: list[str], warnings: list[str]) -> None:
        self.problems += problems
        self.warnings += warnings


def _open_layout(root: Path, layout: str) -> tuple[Found, _Messages]:
    """The layout of ``root`` and its messages: the layout found, files without a partner skipped."""
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist (point --data at a folder with images/ and masks/)")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (point --data at a folder with images/ and masks/)")
    found = find_layout(root, layout)
    msgs = _Messages(notices=[f"layout: {found.layout} ({found.root})", *found.notices])
    if found.unpaired_images:
        msgs.warnings.append(f"Warning: {len(found.unpaired_images)} image(s) without a mask skipped, "
                             f"e.g. {found.unpaired_images[0]}")
    if found.unpaired_masks:
        msgs.warnings.append(f"Warning: {len(found.unpaired_masks)} mask(s) without an image ignored, "
                             f"e.g. {found.unpaired_masks[0]}")
    msgs.warnings += found.warnings
    return found, msgs


def _void_code(found: Found, codes, void: str | None, ignore_index: int | None) -> str | None:
    """The class to ignore: ``--void`` (which must be a class name), else one named like void/unlabelled;
    also checks that ``--ignore-index`` is a mask value."""
    void_code = next((c for c in codes if c in VOID_NAMES), None) if codes else None
    if void is not None:
        if codes is None or void not in codes:
            raise DataError(f"{found.root}: --void '{void}' is not a class name (choose one of: "
                            f"{', '.join(codes) if codes else 'none: add codes.txt'})")
        void_code = void
    if ignore_index is not None and not 0 <= ignore_index <= 255:
        raise DataError(f"{found.root}: --ignore-index {ignore_index} is not a mask value (use 0-255)")
    return void_code


def _pixel_reading(scanned: _Scanned, train: list[Sample], held_out: list[Sample], msgs: _Messages
                   ) -> tuple[Scaling, tuple | None]:
    """How the images' values are scaled and which channels are read (with their statistics)."""
    scaling, scale_notes = _scaling(scanned, train, held_out)
    msgs.notices += scale_notes[:1]
    msgs.warnings += scale_notes[1:]
    scaling, stats, channel_notes, channel_problems = _channels(scanned, train, held_out, scaling)
    msgs.notices += channel_notes
    msgs.problems += channel_problems
    return scaling, stats


def inspect_data(root: str | os.PathLike, valid_pct: float = 0.2, seed: int = 42, *, layout: str = "auto",
                 colors: str | list | None = None, void: str | None = None, ignore_index: int | None = None
                 ) -> tuple[DataSpec | None, list[str]]:
    """Everything ``discover`` finds, plus every problem (empty when trainable). Raises ``DataError``
    only for problems that stop the inspection itself (missing folder, no pairs, bad codes file)."""
    found, msgs = _open_layout(Path(root), layout)
    codes, color_table, notes = _layout_classes(found, colors)
    msgs.notices += notes
    void_code = _void_code(found, codes, void, ignore_index)
    scanned = _scan([s for split in found.splits.values() for s in split], MaskDecoder(np.arange(256), color_table))
    msgs.problems += scanned.problems
    if not scanned.counts:
        return None, msgs.problems
    codes, lut, mapping, value_problems, void_from_index = _map_values(scanned, codes, color_table, ignore_index)
    msgs.problems += value_problems
    if void_code is not None and void_code in codes:
        lut[codes.index(void_code)] = IGNORE_INDEX
        mapping.append(f"class '{void_code}' is void: ignored in loss and metrics")
    void_code = void_code or void_from_index
    splits = make_splits(found, found.root, valid_pct, seed)
    train, valid, test, how = list(splits.train), list(splits.valid), list(splits.test), splits.source
    split_problems, split_warnings = check_splits(found.root, train, valid)
    msgs.add(split_problems, split_warnings)
    pixels = {name: _class_pixels(scanned.counts, part, lut, len(codes))
              for name, part in (("train", train), ("valid", valid), ("test", test)) if part}
    scaling, stats = _pixel_reading(scanned, train, [*valid, *test], msgs)
    if train and not split_problems:
        msgs.add(*_check_classes(found.root, codes, pixels["train"], void_code))
    msgs.notices += mapping
    msgs.notices.append(f"split: {len(train)} train / {len(valid)} valid"
                        f"{f' / {len(test)} test' if test else ''}, {how}")
    spec = DataSpec(root=found.root, layout=found.layout, train=tuple(train), valid=tuple(valid), codes=tuple(codes),
                    lut=tuple(int(v) for v in lut), min_side=int(scanned.min_side), void_code=void_code,
                    notices=tuple(msgs.notices + msgs.warnings), test=tuple(test), colors=color_table,
                    mapping=tuple(mapping), warnings=tuple(msgs.warnings), split_source=how, class_pixels=pixels,
                    scaling=scaling, stats=stats, dtypes=tuple(sorted({f.dtype for f in scanned.facts.values()})))
    return spec, msgs.problems


def discover(root: str | os.PathLike, valid_pct: float = 0.2, seed: int = 42, notify: Notify = silent, *,
             layout: str = "auto", colors: str | list | None = None, void: str | None = None,
             ignore_index: int | None = None) -> DataSpec:
    """Inspect ``root`` (any layout in ``LAYOUT_CHOICES``); raise the first problem as a ``DataError``.

    Many parameters: ``layout``/``colors``/``void``/``ignore_index`` are keyword-only, default to "as found",
    and mirror the CLI options; most callers pass none, so a type would churn every call that passes one."""
    spec, problems = inspect_data(root, valid_pct, seed, layout=layout, colors=colors, void=void,
                                  ignore_index=ignore_index)
    if problems or spec is None:
        raise DataError(problems[0])
    for n in spec.notices:
        notify(n)
    return spec
