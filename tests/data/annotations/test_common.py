"""What every labelling-tool reader shares (fastseg.data.annotations.common): the render cache, split
names, format sniffing and class tables."""

import json

import pytest

from fastseg.data.annotations.common import cache_dir, class_table, merge_splits, sniff, split_of
from fastseg.data.dataset import discover
from fastseg.errors import DataError
from label_sets import make_labelme, masks_by_image

pytestmark = pytest.mark.usefixtures("label_cache")  # rendered masks go under tmp, never ~/.cache


def test_cache_reused_and_refreshed_when_annotations_change(tmp_path, label_cache):
    root = make_labelme(tmp_path / "d", n=3)
    notes = [n for n in discover(root).notices if n.startswith("labelme: ")]
    assert notes and notes[0].startswith("labelme: rendered 3 mask(s) in ")
    assert any(n.startswith("labelme: reused 3 mask(s) in ") for n in discover(root).notices)
    doc = json.loads((root / "img0.json").read_text())
    doc["shapes"] = []  # an explicitly empty image: all background
    (root / "img0.json").write_text(json.dumps(doc))
    spec = discover(root)
    assert any(n.startswith("labelme: rendered 3 mask(s) in ") for n in spec.notices)
    assert (masks_by_image(spec)["img0.png"] == 0).all()
    assert len(list(label_cache.iterdir())) == 2



@pytest.mark.parametrize("name, split", [
    ("instances_train2017.json", "train"), ("valid/_annotations.coco.json", "valid"), ("Validation.json", "valid"),
    ("instances_test.json", "test"), ("instances_default.json", "all"), ("trainee.json", "all"),
])
def test_split_of_reads_whole_words_of_the_file_name(name, split):
    assert split_of(name) == split


def test_merge_splits_keeps_train_valid_test_only_with_a_validation_part(tmp_path):
    assert merge_splits(tmp_path, {"train": [1], "all": [2], "valid": [3]}) == {"train": [1, 2], "valid": [3]}
    assert merge_splits(tmp_path, {"train": [1], "all": [2], "test": [4]}) == {"all": [1, 2], "test": [4]}
    with pytest.raises(DataError, match=r"no annotated training images \(only a test part\)"):
        merge_splits(tmp_path, {"test": [4], "train": []})


def test_sniff_tells_labelme_from_coco_by_keys_or_name(tmp_path):
    files = {"a.json": '{"version": "5", "shapes": []}', "b.json": '{"images": [], "annotations": []}',
             "instances_x.json": "", "other.json": '{"x": 1}'}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert [sniff(tmp_path / n) for n in files] == ["labelme", "coco", "coco", None]
    assert sniff(tmp_path / "missing.json") is None


def test_class_table_puts_background_first_and_merges_its_spellings():
    codes, index = class_table(["cat", "_background_", "dog", "cat", "Background"])
    assert codes == ("background", "cat", "dog")
    assert index == {"cat": 1, "_background_": 0, "dog": 2, "Background": 0}


def test_cache_dir_changes_with_any_source_and_lives_under_the_cache(label_cache):
    a = cache_dir("coco", [("x.json", b"1"), ("y.json", b"2")])
    assert a.parent == label_cache and a.name.startswith("coco-")
    assert cache_dir("coco", [("y.json", b"2"), ("x.json", b"1")]) == a  # order does not matter
    assert len({a, cache_dir("coco", [("x.json", b"1"), ("y.json", b"3")]), cache_dir("labelme", [("x.json", b"1"),
                ("y.json", b"2")])}) == 3
