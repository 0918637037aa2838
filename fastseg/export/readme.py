"""The bundle's ``README.md``: the model card for people, in the Hugging Face layout.

YAML front matter (library, tags, ``pipeline_tag: image-segmentation``, the classes, a ``model-index`` with
the validation scores per class, and fastseg's own summary) and a body saying how to load the model, what it
was trained on and how, and what it is (not) for. Everything comes from the ``ModelCard``, so the README
says what fastseg.json says.
"""

from __future__ import annotations

from pathlib import Path

from ..card import ModelCard
from .hub import TAGS

__all__ = ["readme_text"]

CONFIG_SHOWN = ("epochs", "lr", "bs", "size", "loss", "class_weights", "aug", "progressive", "precision", "freeze_epochs",
                "weights", "valid_pct", "seed", "grad_clip", "patience")  # the recipe; paths and run names stay private


def _metadata(card: ModelCard, name: str):
    from huggingface_hub import EvalResult, ModelCardData

    data = Path(card.data).name if card.data else "training data"
    results = []
    for key, label in (("miou", "mean IoU"), ("dice", "mean Dice"), ("pixel_accuracy", "pixel accuracy")):
        if (card.final or {}).get(key) is not None:
            results.append(EvalResult(task_type="image-segmentation", dataset_type=data, dataset_name=data,
                                      dataset_split="validation", metric_type=key, metric_value=round(card.final[key], 4),
                                      metric_name=f"valid {label}"))
    summary = {"arch": card.arch, "encoder": card.encoder, "in_channels": card.in_channels, "input": card.input,
               "size": card.size, "pad_multiple": card.pad_multiple, "min_side": card.min_side,
               "mean": list(card.mean), "std": list(card.std), "per_class": _per_class(card)}
    return ModelCardData(library_name="segmentation-models-pytorch", pipeline_tag="image-segmentation",
                         tags=[*TAGS, card.arch.lower(), card.encoder], metrics=["mean_iou"] if results else None,
                         model_name=name, eval_results=results or None, classes=list(card.codes), fastseg=summary)


def _per_class(card: ModelCard) -> dict:
    per = (card.final or {}).get("per_class") or {}
    return {c: {k: per[c].get(k) for k in ("iou", "dice", "support")} for c in card.codes if isinstance(per.get(c), dict)}


def _score(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _scores_table(card: ModelCard) -> list[str]:
    per = _per_class(card)
    if not per:
        return ["No validation scores were recorded with this model (`fastseg evaluate` measures them)."]
    total = sum(p.get("support") or 0 for p in per.values()) or 1
    lines = ["| class | IoU | Dice | pixel share |", "|---|---|---|---|"]
    lines += [f"| {c} | {_score(p.get('iou'))} | {_score(p.get('dice'))} | {(p.get('support') or 0) / total:.2%} |"
              for c, p in per.items()]
    f = card.final
    lines += ["", f"mIoU {_score(f.get('miou'))}, mean Dice {_score(f.get('dice'))}, pixel accuracy "
                  f"{_score(f.get('pixel_accuracy'))} on the validation images (epoch {card.best_epoch}, centre crops "
                  "of the training size; `fastseg evaluate` scores whole images)."]
    return lines


def _training(card: ModelCard) -> list[str]:
    lines = []
    if card.data:
        counts = ", ".join(f"{n} {split}" for split, n in (card.images or {}).items())
        split = card.split or {}
        held = (f"; validation: the data set's own split, else {split['valid_pct']:.0%} at random (seed "
                f"{split.get('seed')})" if "valid_pct" in split else "")
        lines.append(f"- data: `{Path(card.data).name}`{f' ({counts} images)' if counts else ''}{held}")
    how = "crops of" if card.input == "crop" else "whole images resized to"
    lines.append(f"- input: {how} {card.size} px; {card.in_channels} channel(s), mean {list(card.mean)}, "
                 f"std {list(card.std)}" if card.size else f"- input: {card.in_channels} channel(s), mean "
                 f"{list(card.mean)}, std {list(card.std)}")
    if card.weights:
        loaded = "" if card.weights.get("loaded", True) else " (not loaded: random initialisation)"
        lines.append(f"- encoder weights: {card.weights.get('requested')}{loaded}")
    if card.lr is not None:
        lines.append(f"- learning rate {card.lr:.2e}, {card.epochs} epochs; exported epoch {card.best_epoch}")
    if card.precision:
        lines.append(f"- precision: {card.precision.get('train')}")
    shown = {k: card.config[k] for k in CONFIG_SHOWN if k in (card.config or {})}
    if shown:
        lines.append("- recipe: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    versions = ", ".join(f"{k} {v}" for k, v in (card.versions or {}).items())
    return lines + ([f"- versions: {versions}"] if versions else [])


def readme_text(card: ModelCard, name: str) -> str:
    """The README.md of the bundle folder ``name``."""
    from huggingface_hub import ModelCard as HubCard

    meta = _metadata(card, name).to_yaml()
    side = f"multiples of {card.pad_multiple}" + (f", at least {card.min_side}" if card.min_side > card.pad_multiple else "")
    body = [
        f"# {name}: {card.arch} + {card.encoder} semantic segmentation",
        "",
        f"{card.n_classes} classes: {', '.join(card.codes)}. Trained with fastseg "
        "(fastai + segmentation_models_pytorch).",
        "",
        "## Use",
        "",
        "```python",
        "import fastseg",
        f'masks = fastseg.load("{name}").predict(["image.png"])  # H x W class indices, at each image\'s size',
        "",
        "import segmentation_models_pytorch as smp",
        f'model = smp.from_pretrained("{name}").eval()  # the same weights, no fastseg needed',
        "```",
        "",
        f"Command line: `fastseg predict {name} images/ --out masks/`. The raw model takes N x {card.in_channels} x H x W "
        f"inputs scaled to 0-1, then (x - mean) / std, with H and W {side} (fastseg pads and crops back).",
        "",
        "## Classes and validation scores",
        "",
        *_scores_table(card),
        "",
        "## Training",
        "",
        *_training(card),
        "",
        "## Intended use and limits",
        "",
        f"- For images like the training data: the same kind of scene, sensor, scale ({card.size} px "
        f"{'crops' if card.input == 'crop' else 'resized images'}) and channels. Scores on other images are unknown: "
        "measure them with `fastseg evaluate` on a labelled sample first.",
        f"- It labels every pixel with one of its {card.n_classes} classes; it cannot say \"none of these\".",
        "- The validation scores above come from a small held-out split of the same data set; they are not a "
        "guarantee for new data.",
        "- Not for decisions about people (medical, legal, safety) without independent validation.",
        "",
    ]
    return HubCard(f"---\n{meta}\n---\n" + "\n".join(body)).content
