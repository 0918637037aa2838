"""Unseen multi-class data: brain tissue in the MNI ICBM152 template, fastseg vs a plain PyTorch loop.

The one real multi-class segmentation set reachable offline here: the ICBM 2009a nonlinear
symmetric template (a T1 MRI averaged over 152 adults, 1 mm, 197x233x189) with its grey- and
white-matter probability maps, as nilearn ships them inside its wheel (``pip install nilearn``;
nothing is downloaded at run time). fastseg's defaults were never tuned on it.

Data set (built in a temporary folder, never in the project): every 2nd axial slice with at least
15% brain, the T1 as a grey PNG, a mask of 4 classes: background (outside the brain), csf+other
(inside the brain, neither tissue map >= the others), grey matter, white matter (argmax of the
maps). Validation: every 4th block of 5 consecutive slices (10 mm slabs); the slices touching a
validation slab are left out of training, so no training slice is within 4 mm of a validation one.

Both train from random initialisation for the same wall time (``--minutes``) and are evaluated the
same way: whole validation slices at full 233x197 resolution (padded to a multiple of 32, cropped
back), one confusion matrix, mIoU over the 4 classes. fastseg runs ``fit`` with its defaults (its
time includes the LR finder, validation, export and plots); the plain loop is AdamW + OneCycleLR
(max 1e-3) + cross-entropy, random crops of fastseg's crop size + flips, bs 8, the one of the ISBI
benchmark, and gets the wall time fastseg actually took.

    pip install nilearn && python benchmarks/mni_tissue.py              # ~3 minutes each
    python benchmarks/mni_tissue.py --minutes 0.5                       # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from isbi_quality import BS, ROOT, plain_train, to_input  # noqa: E402

sys.path.insert(0, str(ROOT))
CODES = ["background", "csf_other", "grey_matter", "white_matter"]
STEP, BLOCK, EVERY = 2, 5, 4  # every 2nd slice; slabs of 5 slices; every 4th slab validates


def template_volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1, grey- and white-matter maps (uint8 volumes) from nilearn's package data."""
    import nibabel
    import nilearn

    base = Path(nilearn.__file__).parent / "datasets" / "data"
    return tuple(np.asarray(nibabel.load(base / f"mni_icbm152_{n}_tal_nlin_sym_09a_converted.nii.gz").dataobj)
                 for n in ("t1", "gm", "wm"))


def labels(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """0 background, 1 csf+other, 2 grey matter, 3 white matter (argmax of the maps inside the brain)."""
    gm, wm = gm.astype(np.int32), wm.astype(np.int32)
    other = np.clip(255 - gm - wm, 0, 255)
    lab = np.argmax(np.stack([other, gm, wm]), axis=0).astype(np.uint8) + 1
    lab[t1 == 0] = 0
    return lab


def split_slices(zs: list[int]) -> tuple[list[int], list[int]]:
    """Every ``EVERY``-th slab of ``BLOCK`` consecutive slices validates; the slices next to a
    validation slab are dropped from training, so no training slice is within 2 x ``STEP`` of one."""
    blocks = [zs[i:i + BLOCK] for i in range(0, len(zs), BLOCK)]
    valid = [z for b, zz in enumerate(blocks) if b % EVERY == EVERY - 1 for z in zz]
    near = {z + d * STEP for z in valid for d in (-1, 1)}
    return [z for z in zs if z not in valid and z not in near], valid


def build_dataset(dest: Path) -> tuple[list[str], list[str]]:
    """images/, masks/, codes.txt and valid.txt in ``dest``; returns (train names, valid names)."""
    from PIL import Image

    t1, gm, wm = template_volumes()
    lab = labels(t1, gm, wm)
    zs = [z for z in range(0, t1.shape[2], STEP) if (lab[:, :, z] > 0).mean() >= 0.15]
    train, valid = split_slices(zs)
    (dest / "images").mkdir(parents=True)
    (dest / "masks").mkdir()
    for z in train + valid:
        img = np.flipud(t1[:, :, z].T)  # rows = anterior-posterior, top = anterior, as viewers show it
        Image.fromarray(np.ascontiguousarray(img)).save(dest / "images" / f"z{z:03d}.png")
        Image.fromarray(np.ascontiguousarray(np.flipud(lab[:, :, z].T))).save(dest / "masks" / f"z{z:03d}.png")
    (dest / "codes.txt").write_text("\n".join(CODES) + "\n")
    (dest / "valid.txt").write_text("".join(f"z{z:03d}.png\n" for z in valid))
    return [f"z{z:03d}.png" for z in train], [f"z{z:03d}.png" for z in valid]


def read_masks(data: Path, names: list[str]):
    """RGB slices and their class-index masks (0-3; ISBI's load_pairs would threshold them to 0/1)."""
    from PIL import Image

    imgs = [np.asarray(Image.open(data / "images" / n).convert("RGB")) for n in names]
    return imgs, [np.asarray(Image.open(data / "masks" / n)).astype(np.int64) for n in names]


@torch.inference_mode()
def evaluate_plain(model, imgs, masks) -> dict:
    """Whole slices, padded to a multiple of 32 (reflect, as fastseg.infer.predictor does), cropped back."""
    from fastseg.metrics import confusion_matrix, scores_from_confusion

    model.eval()
    cm = torch.zeros(len(CODES), len(CODES), dtype=torch.int64)
    for img, mask in zip(imgs, masks):
        x = to_input(img[None])
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 32, 0, (-h) % 32), mode="reflect")
        pred = model(x)[..., :h, :w].argmax(1)[0]
        cm += confusion_matrix(pred, torch.from_numpy(mask), len(CODES))
    return scores_from_confusion(cm).as_dict(CODES)


def run_fastseg(data: Path, work: Path, budget_s: float, seed: int) -> tuple[dict, float, dict]:
    from fastseg.config import FitConfig
    from fastseg.infer.evaluate import evaluate
    from fastseg.pipeline import fit

    cfg = FitConfig(data=str(data), time=budget_s, weights="none", runs_dir=str(work / "runs"), name="mni",
                    seed=seed, export=str(work / "mni.pkl"))  # `fastseg fit --time`, defaults otherwise
    t0 = time.perf_counter()
    result = fit(cfg)
    seconds = time.perf_counter() - t0
    scores = evaluate(result.export, data, split="valid").scores
    plan = json.loads((result.run / "plan.json").read_text())
    return scores, seconds, {"lr": result.lr, "best_epoch": result.best_epoch, "epochs": plan["epochs"],
                             "bs": result.bs, "aug": result.aug, "progressive": result.progressive,
                             "precision": plan["precision"], "size": plan["size"]}


def per_class(scores: dict) -> dict:
    return {k: round(v["iou"], 4) for k, v in scores["per_class"].items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="fastseg's --time budget; the plain loop gets what fastseg took")
    ap.add_argument("--seed", type=int, default=42, help="fastseg's seed (its default 42); the plain loop's is 0")
    args = ap.parse_args(argv)
    try:
        import nibabel  # noqa: F401
        import nilearn  # noqa: F401
    except ImportError:
        print("this benchmark reads the MNI template that nilearn ships: pip install nilearn", file=sys.stderr)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)
    budget = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="mni-bench-") as tmp:
        data = Path(tmp) / "data"
        train, valid = build_dataset(data)
        from fastseg.data.dataset import discover
        from fastseg.train.plan import auto_size

        crop = auto_size(discover(data).min_side, None)[0]
        print(f"data: {len(train)} train / {len(valid)} valid slices, crop {crop}", flush=True)
        fs_scores, fs_s, fs_info = run_fastseg(data, Path(tmp), budget, args.seed)
        print(f"fastseg: mIoU {fs_scores['miou']:.4f} in {fs_s:.0f} s ({fs_info})", flush=True)
        imgs, masks = read_masks(data, train)
        model, plain_s, plain_steps = plain_train(imgs, masks, fs_s, classes=len(CODES), crop=crop)  # fastseg's time
        plain_scores = evaluate_plain(model, *read_masks(data, valid))
        print(f"plain:   mIoU {plain_scores['miou']:.4f} in {plain_s:.0f} s ({plain_steps} steps)", flush=True)
    report = {
        "budget_s": budget, "train_slices": len(train), "valid_slices": len(valid), "crop": crop,
        "fastseg": {"miou": fs_scores["miou"], "pixel_accuracy": fs_scores["pixel_accuracy"],
                    "iou": per_class(fs_scores), "seconds": fs_s, "seed": args.seed, **fs_info},
        "plain": {"miou": plain_scores["miou"], "pixel_accuracy": plain_scores["pixel_accuracy"],
                  "iou": per_class(plain_scores), "seconds": plain_s, "steps": plain_steps},
        "load_average_1min": os.getloadavg()[0],
    }
    print(json.dumps(report, indent=2))
    ok = fs_scores["miou"] >= plain_scores["miou"]
    print("PASS" if ok else "FAIL", "(bar: fastseg's defaults reach at least the plain loop's mIoU in the same time)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
