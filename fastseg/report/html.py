"""The run report: ``runs/<name>/report.html``, one self-contained page about a trained model.

``finish_run`` is what ``fit`` calls once the best epoch is exported: it scores that model on every
validation image at full resolution (per_image.csv/.json, worst.png: validation during training
scores centre crops), records the environment (env.json) and writes the page. ``write_report``
rebuilds the page from the run folder's files alone (``fastseg report RUN``); it works on
unfinished runs too. Images are inlined as data: URIs, styles inline, no script and no network.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import TrainingError
from ..io import atomic_write_bytes

__all__ = ["RunOutputs", "finish_run", "environment", "write_report", "WORST_K"]

WORST_K = 8  # enough failure cases to see a pattern, few enough to look at each one


@dataclass
class RunOutputs:
    """What ``finish_run`` wrote: full-resolution validation scores and the files."""

    scores: dict  # validation scores of the exported model at full resolution (fastseg.metrics.Scores.as_dict)
    files: list[Path]
    report: Path
    seconds: float  # the full-resolution validation pass


def finish_run(learn, spec, run: str | Path, best_epoch: int, crop_scores: dict, export: str | Path) -> RunOutputs:
    """Score the exported (best) model on each validation image at full size, then write env.json and report.html."""
    from ..infer.per_image import image_confusions, per_image_scores, write_details
    from ..infer.predictor import Predictor
    from ..train.runs import write_json

    run = Path(run)
    t0 = time.perf_counter()
    predictor = Predictor.from_learner(learn)
    samples = list(spec.valid)
    images = per_image_scores([s.image.name for s in samples],
                              image_confusions(predictor, samples, spec.decoder, spec.n_classes, workers=0), spec.codes)
    extra = {"model": str(export), "split": "valid", "resolution": "full", "epoch": best_epoch,
             "crop_scores": {k: crop_scores.get(k) for k in ("miou", "dice", "pixel_accuracy")}}
    files = write_details(predictor, samples, images, spec.decoder, run, min(WORST_K, len(samples)), extra)
    seconds = time.perf_counter() - t0
    files.append(write_json(run / "env.json", {**environment(learn), "full_resolution_eval_s": round(seconds, 2)}))
    return RunOutputs(scores=images.scores, files=files, report=write_report(run), seconds=seconds)


def environment(learn=None) -> dict:
    """Versions, device and precision of this process (and of ``learn``, when given)."""
    import fastai
    import segmentation_models_pytorch as smp
    import timm
    import torch

    from .. import __version__

    device = learn.dls.device if learn is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = {"fastseg": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "fastai": fastai.__version__, "segmentation_models_pytorch": smp.__version__, "timm": timm.__version__,
           "platform": platform.platform(), "device": str(device), "cpu_count": __import__("os").cpu_count()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    env["precision"] = "mixed (fp16)" if learn is not None and hasattr(learn, "mixed_precision") else "fp32"
    return env


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def write_report(run: str | Path) -> Path:
    """(Re)build ``run/report.html`` from the run folder's files; returns its path."""
    run = Path(run)
    config = _read_json(run / "config.json")
    if config is None:
        raise TrainingError(f"{run}: not a run folder (no readable config.json; pass a folder under runs/)")
    from ..train.loop import read_history

    page = _page(run, config, read_history(run / "history.csv"))
    return atomic_write_bytes(run / "report.html", page.encode("utf-8"))


def _img(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _curves(history: list[dict]) -> str:
    """Loss, mIoU/Dice and (when history.csv has one) learning-rate curves, drawn from history.csv."""
    from .plots import plot_history

    if not history:
        return "<p>No epoch has finished yet.</p>"
    sets = [(["train_loss", "valid_loss"], "loss", "loss per epoch"), (["miou", "dice"], "score", "validation mIoU and Dice")]
    if "lr" in history[0]:
        sets.append((["lr"], "learning rate", "learning rate per epoch"))
    with tempfile.TemporaryDirectory(prefix="fastseg-report-") as tmp:
        return '<div class="pair">' + "".join(_img(plot_history(history, keys, Path(tmp) / f"{i}.png", label, title), title)
                                              for i, (keys, label, title) in enumerate(sets)) + "</div>"


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else html.escape(str(x))


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _summary(metrics: dict | None, full: dict | None) -> str:
    """The headline: best epoch and its scores on centre crops (how it was chosen) and at full resolution."""
    if metrics is None:
        return '<p class="warn">This run has not finished: no metrics.json yet (curves show the epochs so far).</p>'
    best = metrics["best"]
    cards = [("best epoch", f"{best['epoch']} of {metrics.get('epochs_run', '?')}"
              + (" (stopped early)" if metrics.get("stopped_early") else "")),
             ("valid mIoU, centre crops", _fmt(best["miou"])), ("valid Dice, centre crops", _fmt(best["dice"]))]
    if full is not None:
        g = full["global"]
        cards += [("valid mIoU, full images", _fmt(g["miou"])), ("valid Dice, full images", _fmt(g["dice"])),
                  ("pixel accuracy, full images", _fmt(g["pixel_accuracy"]))]
    cards.append(("learning rate", f"{metrics['lr']:.2e} ({html.escape(metrics.get('lr_source', ''))})"))
    out = "".join(f'<div class="card"><div class="k">{html.escape(k)}</div><div class="v">{v}</div></div>'
                  for k, v in cards)
    note = ""
    if full is not None and abs((full["global"]["miou"] or 0) - (best["miou"] or 0)) > 5e-5:
        note = ("<p>The best epoch was chosen on centre crops of the validation images; the exported model scores "
                f"{_fmt(full['global']['miou'])} mIoU on the whole images (per_image.json).</p>")
    return f'<div class="cards">{out}</div>{note}'


def _worst(run: Path, full: dict | None) -> str:
    if full is None:
        return "<p>No per-image scores yet (written when the run finishes, or by <code>fastseg evaluate --per-image</code>).</p>"
    from ..infer.per_image import worst_indices

    rows = full["images"]
    picks = worst_indices(rows, WORST_K)
    table = _table(["image", "mIoU", "Dice", "pixel accuracy"],
                   [[rows[i]["image"], rows[i]["miou"], rows[i]["dice"], rows[i]["pixel_accuracy"]] for i in picks])
    mean = full["mean_per_image"]
    return (f"<p>The {len(picks)} validation images with the lowest mIoU, at full resolution: image | truth | "
            f"prediction | pixels where they disagree (red). Mean per-image mIoU {_fmt(mean['miou'])} over "
            f"{full['n_images']} images; every image is in per_image.csv.</p>"
            f"{_img(run / 'worst.png', 'worst validation images')}{table}")


def _per_class(metrics: dict | None, full: dict | None) -> str:
    crop = (metrics or {}).get("best", {}).get("per_class", {})
    glob = (full or {}).get("global", {}).get("per_class", {})
    mean = (full or {}).get("mean_per_image", {}).get("per_class", {})
    names = list(glob or crop)
    if not names:
        return "<p>No scores yet.</p>"
    total = sum(c["support"] for c in glob.values()) or None
    rows = [[n, glob.get(n, {}).get("iou"), glob.get(n, {}).get("dice"), crop.get(n, {}).get("iou"),
             crop.get(n, {}).get("dice"), mean.get(n, {}).get("iou"),
             f"{glob[n]['support'] / total:.2%}" if total and n in glob else "n/a"] for n in names]
    return _table(["class", "IoU (full)", "Dice (full)", "IoU (crops)", "Dice (crops)", "mean IoU per image",
                   "share of pixels"], rows, "num")


def _seconds(text: str) -> float:
    """fastai's ``mm:ss`` / ``hh:mm:ss`` epoch time in seconds."""
    total = 0.0
    for part in str(text).split(":"):
        total = total * 60 + float(part or 0)
    return total


def _timings(run: Path, history: list[dict], env: dict | None) -> str:
    times = [_seconds(r["time"]) for r in history if r.get("time")]
    rows = [["epochs finished", len(history)], ["training, all epochs", f"{sum(times):.0f} s"]]
    if times:
        rows.append(["mean epoch", f"{sum(times) / len(times):.1f} s"])
    if env and env.get("full_resolution_eval_s") is not None:
        rows.append(["full-resolution validation (per-image scores)", f"{env['full_resolution_eval_s']:.1f} s"])
    if (run / "metrics.json").is_file():
        wall = (run / "metrics.json").stat().st_mtime - (run / "config.json").stat().st_mtime
        rows.append(["wall time, start to export (incl. LR finder)", f"{wall:.0f} s"])
    return _table(["what", "time"], rows)


def _commands(run: Path, config: dict, metrics: dict | None) -> str:
    q = shlex.quote
    export = (metrics or {}).get("export") or config.get("export", "exports/model.pkl")
    data = config.get("data", "data")
    lines = [("reproduce this run (a new run folder)", f"fastseg fit --config {q(str(run / 'config.json'))}"),
             ("resume it after a crash (unfinished runs)", f"fastseg fit --resume {q(str(run))}"),
             ("evaluate the model, with per-image scores", f"fastseg evaluate {q(export)} --data {q(data)} --per-image --worst 8"),
             ("predict masks", f"fastseg predict {q(export)} {q(str(Path(data) / 'images'))} --out predictions/"),
             ("export for deployment", f"fastseg export {q(export)} --format onnx"),
             ("rebuild this page", f"fastseg report {q(str(run))}")]
    return "".join(f"<p>{html.escape(what)}</p><pre>{html.escape(cmd)}</pre>" for what, cmd in lines)


def _kv(values: dict | None) -> str:
    if not values:
        return "<p>Not recorded.</p>"
    return _table(["key", "value"], [[k, v if isinstance(v, str) else json.dumps(v)] for k, v in values.items()])


STYLE = """
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2733;background:#f4f6f8}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 10px;border-bottom:2px solid #d5dde5;padding-bottom:4px}
.sub{color:#5b6b7b;margin:0 0 18px}.warn{background:#fff4d6;border:1px solid #e9c46a;padding:8px 12px;border-radius:6px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #d5dde5;border-radius:8px;padding:10px 14px;min-width:150px}
.card .k{font-size:12px;color:#5b6b7b;text-transform:uppercase;letter-spacing:.03em}.card .v{font-size:21px;font-weight:600}
img{max-width:100%;height:auto;background:#fff;border:1px solid #d5dde5;border-radius:6px;margin:6px 8px 6px 0}
table{border-collapse:collapse;background:#fff;margin:8px 0;font-size:14px}
th,td{border:1px solid #d5dde5;padding:4px 10px;text-align:left;vertical-align:top}th{background:#e8eef4}
table.num td+td{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#1d2733;color:#e8eef4;padding:8px 12px;border-radius:6px;overflow-x:auto;margin:2px 0 10px}
nav a{margin-right:12px;color:#1f5f99}.pair img{max-width:48%}
"""

SECTIONS = (("worst", "Worst images"), ("classes", "Per-class scores"), ("curves", "Curves"),
            ("confusion", "Confusion matrix"), ("samples", "Samples"), ("lr", "LR finder"), ("timings", "Timings"),
            ("commands", "Commands"), ("config", "Configuration"), ("env", "Environment"))


def _page(run: Path, config: dict, history: list[dict]) -> str:
    metrics, full = _read_json(run / "metrics.json"), _read_json(run / "per_image.json")
    env, plan = _read_json(run / "env.json"), _read_json(run / "plan.json")
    body = {
        "worst": _worst(run, full),
        "classes": _per_class(metrics, full),
        "curves": _curves(history),
        "confusion": _img(run / "confusion.png", "confusion matrix") or "<p>Not written yet.</p>",
        "samples": _img(run / "samples.png", "validation samples") or "<p>Not written yet.</p>",
        "lr": _img(run / "lr_find.png", "LR finder") or "<p>No LR finder in this run (the learning rate was given).</p>",
        "timings": _timings(run, history, env),
        "commands": _commands(run, config, metrics),
        "config": _kv(config) + ("<h3>plan.json</h3>" + _kv(plan) if plan else ""),
        "env": _kv(env),
    }
    nav = "".join(f'<a href="#{key}">{title}</a>' for key, title in SECTIONS)
    sections = "".join(f'<section id="{key}"><h2>{title}</h2>{body[key]}</section>' for key, title in SECTIONS)
    title = f"fastseg run {html.escape(run.name)}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f'<body><main><h1>{title}</h1><p class="sub">{html.escape(str(run))} &middot; data '
            f'{html.escape(str(config.get("data")))} &middot; {html.escape(str(config.get("encoder")))}</p>'
            f"{_summary(metrics, full)}<nav>{nav}</nav>{sections}</main></body></html>\n")
