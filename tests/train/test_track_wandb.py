"""``fit --log wandb`` (fastseg.train.track_wandb): the offline W&B run holds the config, per-epoch
metrics, the per-class table and the model artifact."""

import glob
import importlib.util
import json

import pytest

from fastseg.data.demo import DEMO_CODES

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                                                   reason="wandb is not installed (pip install 'fastseg[wandb]')")]


def test_wandb_offline_run_holds_config_epochs_table_and_model(tracked):
    """W&B's offline run files: the per-class table as JSON; config keys, metric names and the model artifact
    read from the run's record log (wandb ships no reader for it, so its protobuf strings are searched)."""
    result, _, _ = tracked
    (offline,) = glob.glob(str(result.run / "wandb" / "offline-run-*"))
    (table,) = glob.glob(f"{offline}/files/media/table/per_class_*.table.json")
    rows = json.loads(open(table).read())
    assert rows["columns"][:3] == ["class", "iou_full", "dice_full"] and [r[0] for r in rows["data"]] == list(DEMO_CODES)
    (records,) = glob.glob(f"{offline}/run-*.wandb")
    data = open(records, "rb").read()
    for key in (b"lr_find_iters", b"valid_loss", b"miou", b"final/full/miou", b"model.pkl", b"model-"):
        assert key in data, key
