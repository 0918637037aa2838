"""The bundle's README.md (fastseg.export.readme): a Hugging Face model card written from the ModelCard."""

from fastseg.card import ModelCard
from fastseg.export.readme import readme_text

TINY = "tu-test_efficientnet"
FINAL = {"miou": 0.61, "dice": 0.7, "pixel_accuracy": 0.9,
         "per_class": {"bg": {"iou": 0.9, "dice": 0.95, "support": 900}, "cell": {"iou": 0.32, "dice": 0.45, "support": 100}}}
CARD = {"arch": "Linknet", "encoder": TINY, "codes": ["bg", "cell"], "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "size": 64, "final": FINAL, "best_epoch": 3, "lr": 2e-3, "epochs": 4,
        "data": "/data/cells", "images": {"train": 8, "valid": 2}, "split": {"valid_pct": 0.2, "seed": 42},
        "config": {"epochs": 4, "loss": "ce+dice", "data": "/secret/path"}}


def _hub(card: dict, name: str = "cells"):
    from huggingface_hub import ModelCard as HubCard

    return HubCard(readme_text(ModelCard.from_dict(card), name))


def test_readme_is_a_hugging_face_model_card():
    hub = _hub(CARD)
    data = hub.data.to_dict()
    assert data["pipeline_tag"] == "image-segmentation" and data["library_name"] == "segmentation-models-pytorch"
    assert data["classes"] == ["bg", "cell"] and {"fastseg", "linknet", TINY} <= set(data["tags"])
    assert data["fastseg"]["per_class"]["cell"] == {"iou": 0.32, "dice": 0.45, "support": 100}
    metrics = data["model-index"][0]["results"][0]["metrics"]
    assert {"type": "miou", "value": 0.61, "name": "valid mean IoU"} in metrics
    assert "| cell | 0.3200 | 0.4500 | 10.00% |" in hub.text
    assert "`cells` (8 train, 2 valid images)" in hub.text and "loss=ce+dice" in hub.text
    assert "## Intended use and limits" in hub.text and "/secret/path" not in hub.content


def test_a_model_without_scores_says_how_to_measure_them():
    bare = {k: v for k, v in CARD.items() if k not in ("final", "data", "images", "split", "config")}
    hub = _hub({**bare, "input": "resize"}, name="plain")
    assert "model-index" not in hub.data.to_dict() and "No validation scores were recorded" in hub.text
    assert "- input: whole images resized to 64 px; 3 channel(s)" in hub.text and "- data:" not in hub.text
    assert 'fastseg.load("plain")' in hub.text and 'smp.from_pretrained("plain")' in hub.text
