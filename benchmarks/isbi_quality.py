"""ISBI 2012 membranes: fastseg vs a plain PyTorch loop with the same SMP model, same wall time.

Slices 0-23 train, 24-29 valid (a valid.txt in a temporary folder whose images/ and masks/ are
symlinks to the shared files: nothing is copied into the project). Both train from random
initialisation (``--weights none``) and are evaluated the same way: the 6 validation slices at full
512x512 resolution, one confusion matrix, mIoU over membrane/interior. fastseg runs with its
defaults as ``fastseg fit --time 4m`` (bs 8, precision auto, aug auto, progressive auto, LR finder,
ce+dice): its plan times real steps and picks the epochs that fill the budget, everything ``fit`` does
included (LR finder, validation, export, plots). The plain loop then gets the wall time fastseg
actually took, so a wrong plan cannot favour either side.

    python benchmarks/isbi_quality.py                 # ~4 minutes each, ~9 minutes in all
    python benchmarks/isbi_quality.py --minutes 0.5   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "isbi2012-membrane"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
CROP, BS, ENCODER = 256, 8, "timm-efficientnet-b0"


def linked_dataset(src: Path, dest: Path) -> Path:
    """images/ and masks/ as symlinks to ``src``'s files, plus valid.txt (slices 24-29) and codes.txt."""
    for sub in ("images", "masks"):
        (dest / sub).mkdir(parents=True)
        for f in sorted((src / sub).iterdir()):
            os.symlink(f.resolve(), dest / sub / f.name)
    (dest / "valid.txt").write_text("".join(f"{i}.png\n" for i in range(24, 30)))
    (dest / "codes.txt").write_text("membrane\ninterior\n")  # mask 0 = membrane, 255 = interior (mapped to 1)
    return dest


def load_pairs(data: Path, names: list[str]):
    from PIL import Image

    imgs = [np.asarray(Image.open(data / "images" / n).convert("RGB")) for n in names]
    masks = [(np.asarray(Image.open(data / "masks" / n)) > 127).astype(np.int64) for n in names]  # 255 -> 1
    return imgs, masks


def to_input(batch: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.array(batch)).permute(0, 3, 1, 2).float().div(255)  # a copy: PIL arrays are read-only
    return (x - MEAN) / STD


def random_crops(imgs, masks, n: int, rng: np.random.Generator, crop: int = CROP):
    xs, ys = [], []
    for _ in range(n):
        i = rng.integers(len(imgs))
        h, w = masks[i].shape
        r, c = rng.integers(h - crop + 1), rng.integers(w - crop + 1)
        x, y = imgs[i][r:r + crop, c:c + crop], masks[i][r:r + crop, c:c + crop]
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        if rng.random() < 0.5:
            x, y = x[::-1], y[::-1]
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
    return to_input(np.stack(xs)), torch.from_numpy(np.stack(ys))


def one_cycle_lr(frac: float, max_lr: float = 1e-3, pct_start: float = 0.3, div: float = 25.0,
                 final_div: float = 1e4) -> float:
    """torch's OneCycleLR (cosine) at ``frac`` of the run: up from max_lr/div, then down to max_lr/div/final_div."""
    if frac < pct_start:
        lo, hi, t = max_lr / div, max_lr, frac / pct_start
    else:
        lo, hi, t = max_lr, max_lr / div / final_div, (frac - pct_start) / (1 - pct_start)
    return hi + (lo - hi) * (1 + math.cos(math.pi * min(t, 1.0))) / 2


def plain_loop(data: Path, seconds: float, seed: int = 0) -> tuple[torch.nn.Module, float, int]:
    """AdamW + one-cycle + cross-entropy, random 256 crops + flips, bs 8, for ``seconds`` of wall time."""
    imgs, masks = load_pairs(data, [f"{i}.png" for i in range(24)])
    return plain_train(imgs, masks, seconds, classes=2, crop=CROP, seed=seed)


def plain_train(imgs, masks, seconds: float, classes: int, crop: int, seed: int = 0) -> tuple[torch.nn.Module, float, int]:
    """The plain PyTorch loop: AdamW + a one-cycle LR (max 1e-3, cosine, as torch's OneCycleLR) + cross-entropy,
    random crops + flips, bs 8. Its schedule runs on wall time: it trains for exactly ``seconds`` (the time
    fastseg took), whatever a step costs, so no estimate can favour either side. Returns (model, seconds, steps)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = smp.Unet(ENCODER, encoder_weights=None, classes=classes)
    opt = torch.optim.AdamW(model.parameters(), lr=one_cycle_lr(0.0), weight_decay=1e-2)
    t0, steps = time.perf_counter(), 0
    model.train()
    while (frac := (time.perf_counter() - t0) / seconds) < 1.0:
        for group in opt.param_groups:
            group["lr"] = one_cycle_lr(frac)
        x, y = random_crops(imgs, masks, BS, rng, crop)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    return model, time.perf_counter() - t0, steps


@torch.inference_mode()
def evaluate_model(model, data: Path) -> dict:
    from fastseg.metrics import confusion_matrix, scores_from_confusion

    model.eval()
    imgs, masks = load_pairs(data, [f"{i}.png" for i in range(24, 30)])
    cm = torch.zeros(2, 2, dtype=torch.int64)
    for img, mask in zip(imgs, masks):
        pred = model(to_input(img[None])).argmax(1)[0]  # 512 is a multiple of 32: full size, no padding
        cm += confusion_matrix(pred, torch.from_numpy(mask), 2)
    return scores_from_confusion(cm).as_dict(["membrane", "interior"])


def run_fastseg(data: Path, work: Path, budget_s: float, seed: int = 42,
                precision: str = "auto") -> tuple[dict, float, dict]:
    """``fastseg fit --time`` with its defaults (random init: nothing can be downloaded here)."""
    from fastseg.config import FitConfig
    from fastseg.infer.evaluate import evaluate
    from fastseg.pipeline import fit

    cfg = FitConfig(data=str(data), time=budget_s, weights="none", runs_dir=str(work / "runs"),
                    name=f"isbi-{precision}-{seed}", seed=seed, precision=precision, export=str(work / "isbi.pkl"))
    t0 = time.perf_counter()
    result = fit(cfg)
    seconds = time.perf_counter() - t0
    scores = evaluate(result.export, data, split="valid").scores
    plan = json.loads((result.run / "plan.json").read_text())
    return scores, seconds, {"lr": result.lr, "lr_source": result.lr_source, "best_epoch": result.best_epoch,
                             "epochs": plan["epochs"], "bs": result.bs, "aug": result.aug,
                             "precision": plan["precision"], "progressive": result.progressive,
                             "run": str(result.run)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0, help="fastseg's --time budget; the plain loop gets what fastseg took")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=42, help="fastseg's seed (fastseg's default 42); the plain loop's is 0")
    ap.add_argument("--precision", default="auto", help="fastseg --precision [auto]")
    ap.add_argument("--keep", type=Path, help="keep the fastseg run folder and export here instead of a temp dir")
    ap.add_argument("--no-plain", action="store_true", help="fastseg only (more seeds or precisions; the plain "
                                                              "loop's result does not depend on them)")
    args = ap.parse_args(argv)
    if not (args.data / "images").is_dir():
        print(f"{args.data}: ISBI data not found", file=sys.stderr)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)
    budget = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="isbi-bench-") as tmp:
        work = args.keep or Path(tmp)
        data = linked_dataset(args.data, Path(tmp) / "data")
        fs_scores, fs_s, fs_info = run_fastseg(data, work, budget, args.seed, args.precision)
        print(f"fastseg: mIoU {fs_scores['miou']:.4f} in {fs_s:.0f} s of a {budget:.0f} s budget "
              f"({fs_s / budget:.2f}x) ({fs_info})", flush=True)
        if args.no_plain:
            print(json.dumps({"budget_s": budget, "fastseg": {"miou": fs_scores["miou"], "seconds": fs_s,
                                                              "budget_ratio": fs_s / budget, "seed": args.seed,
                                                              **fs_info}}, indent=2))
            return 0 if fs_scores["miou"] >= 0.75 and abs(fs_s / budget - 1) <= 0.10 else 1
        model, plain_s, plain_steps = plain_loop(data, fs_s)  # the wall time fastseg took
        plain_scores = evaluate_model(model, data)
        print(f"plain:   mIoU {plain_scores['miou']:.4f} in {plain_s:.0f} s ({plain_steps} steps)", flush=True)
    report = {
        "budget_s": budget,
        "fastseg": {"miou": fs_scores["miou"], "membrane_iou": fs_scores["per_class"]["membrane"]["iou"],
                    "seconds": fs_s, "budget_ratio": fs_s / budget, "seed": args.seed, **fs_info},
        "plain": {"miou": plain_scores["miou"], "membrane_iou": plain_scores["per_class"]["membrane"]["iou"],
                  "seconds": plain_s, "steps": plain_steps},
        "load_average_1min": os.getloadavg()[0],
    }
    print(json.dumps(report, indent=2))
    in_budget = abs(fs_s / budget - 1) <= 0.10
    ok = fs_scores["miou"] >= 0.75 and fs_scores["miou"] > plain_scores["miou"] and in_budget
    print("PASS" if ok else "FAIL", "(bar: fastseg mIoU >= 0.75, above the plain loop, and within 10% of --time)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
