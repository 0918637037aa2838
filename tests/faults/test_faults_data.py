"""No wrong number, no silent mislabel: EXIF orientation, one pixel scaling per data set, test splits that
never train, evaluation with training's data options, too few classes, too many classes, binary masks with
varying foreground values, GIF masks."""

import pickle

import numpy as np
import pytest
from PIL import Image

from fastseg.data.check import check
from fastseg.data.dataset import discover
from fastseg.errors import DataError
from fastseg.infer.evaluate import select_split
from fastseg.data.images import IGNORE_INDEX, image_size, read_image, read_mask
from layout_sets import make_folders, make_segnet, save_image, save_mask

SIDE = 32


def _stripes(side: int = SIDE) -> np.ndarray:
    m = np.zeros((side, side), np.uint8)
    m[:, side // 2:] = 1
    return m


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _phone_set(root, orientation: int):
    """Images saved as a phone does (pixels stored turned, EXIF says how to show them) + upright masks."""
    shown = np.zeros((40, 24, 3), np.uint8)  # as viewers show it: 24 wide, 40 tall, object at the top
    shown[:10] = 255
    mask = (shown[..., 0] > 0).astype(np.uint8)
    stored = {3: np.rot90(shown, 2), 6: np.rot90(shown, 1)}[orientation]  # what the camera wrote
    for i in range(4):
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(stored)).save(root / "images" / f"p{i}.jpg", exif=_exif(orientation),
                                                           quality=95)
        save_mask(root / "masks" / f"p{i}.png", mask)
    (root / "valid.txt").write_text("p3\n")
    return root, shown, mask


@pytest.mark.parametrize("orientation", [3, 6])
def test_exif_orientation_is_applied_by_every_reader(tmp_path, orientation):
    root, shown, mask = _phone_set(tmp_path / "d", orientation)
    img = root / "images" / "p0.jpg"
    assert image_size(img) == (24, 40)
    arr = read_image(img)
    assert arr.shape == (40, 24, 3) and np.abs(arr.astype(int) - shown.astype(int)).max() < 40
    rep = check(root)
    assert rep.ok, rep.problems
    spec = discover(root)
    assert (spec.decoder(spec.train[0].mask) == mask).all()
    turned = tmp_path / "turned_mask.png"  # a mask carrying an EXIF orientation is read upright too
    Image.fromarray(np.ascontiguousarray(np.rot90(mask, 1))).save(turned, exif=_exif(6))
    assert (read_mask(turned) == mask).all() and image_size(turned) == (24, 40)


@pytest.mark.slow
def test_prediction_of_a_rotated_photo_has_the_displayed_size(trained, tmp_path):
    from fastseg.infer.predictor import load, load_image, predict_paths

    root, shown, _ = _phone_set(tmp_path / "d", 6)
    predictor = load(trained.export, backend="torch")
    report = predict_paths(predictor, [str(root / "images" / "p0.jpg")], tmp_path / "out")
    with Image.open(report.written[0]) as im:
        assert im.size == (24, 40)
    with Image.open(root / "images" / "p0.jpg") as im:
        assert load_image(im).shape == (40, 24, 3)  # PIL images given to predict are turned as well


PEAKS = {"a": 300, "b": 4000, "c": 60000, "v": 1000}


def _wide_set(root):
    """16-bit greys with very different maxima (a 9-bit, a 12-bit and a 16-bit image), 2-class masks."""
    ramp = np.linspace(0, 1, SIDE * SIDE).reshape(SIDE, SIDE)
    for name, peak in PEAKS.items():
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(ramp * peak).astype(np.uint16)).save(root / "images" / f"{name}.png")
        save_mask(root / "masks" / f"{name}.png", _stripes())
    (root / "valid.txt").write_text("v\n")
    return root


def test_16bit_images_of_one_set_are_scaled_by_one_rule(tmp_path):
    from fastseg.train.loaders import Getters, ImageForPath

    notes = []
    spec = discover(_wide_set(tmp_path / "d"), notify=notes.append)
    assert spec.scaling.top == 65535
    assert check(spec.root).image_values == spec.scaling.why
    assert ("image values: 3 training image(s) wider than 8 bits, largest value 60000: every image scaled by "
            "255/65535 (the 16-bit range), in training and prediction alike") in notes
    get_x = Getters.for_spec(spec, cache=False).x
    for name, peak in PEAKS.items():
        got = get_x(spec.root / "images" / f"{name}.png")
        # not 255 for each image, as per-image scaling gave; one grey channel in float32, no rounding to 8 bits
        assert got.shape[0] == 1 and float(got.max()) == pytest.approx(peak * 255 / 65535, rel=1e-6)
    again = pickle.loads(pickle.dumps(get_x))  # the export carries the rule ...
    assert again.scaling == spec.scaling
    old = ImageForPath.__new__(ImageForPath)
    old.__setstate__({})  # ... and learners pickled before it existed keep the per-image rule
    assert old.scaling is None and old(spec.root / "images" / "a.png").max() == 19  # 300 of 4095, per image


def _bundle(cfg, dest):
    """The model ``fit`` would export for ``cfg``, untrained (no epochs needed to test what it stores)."""
    import shutil

    from fastseg.export.bundle import write_bundle
    from fastseg.infer.predictor import Predictor
    from fastseg.train.loop import prepare

    session = prepare(cfg)
    learn, spec = session.learn, session.spec
    shutil.rmtree(learn.path, ignore_errors=True)
    return write_bundle(learn.model, Predictor.from_learner(learn, backend="torch").info(), dest), spec


def test_predict_scales_arrays_and_files_by_the_stored_rule(tmp_path):
    import json

    from fastseg.config import FitConfig
    from fastseg.infer.predictor import load

    root = _wide_set(tmp_path / "d")
    bundle, spec = _bundle(FitConfig(data=str(root), weights="none", bs=2, num_workers=0, cache="none"),
                           tmp_path / "model")
    assert json.loads((bundle / "fastseg.json").read_text())["scaling"]["top"] == 65535
    predictor = load(bundle, backend="torch")
    png = root / "images" / "a.png"
    arr = np.asarray(Image.open(png))
    assert arr.dtype == np.uint16
    masks, probs = predictor.predict([arr, png, arr.astype(np.float32)], probs=True)
    assert np.array_equal(probs[0], probs[1]) and np.array_equal(probs[0], probs[2])


def test_test_txt_images_never_train_and_are_the_test_split(tmp_path):
    root = make_folders(tmp_path / "d", n=8, codes=["bg", "a", "b"], valid=["im6"])
    (root / "test.txt").write_text("im0.png\nim7\n")
    spec = discover(root)
    assert {s.image.stem for s in spec.test} == {"im0", "im7"}
    assert not {"im0", "im7"} & {s.image.stem for s in (*spec.train, *spec.valid)}
    assert [s.image.stem for s in select_split(spec, "test")] == ["im0", "im7"]
    rep = check(root)
    assert rep.ok and rep.counts == {"train": 5, "valid": 1, "test": 2}
    assert rep.split_source == "valid.txt (1 images); test.txt (2 images, never trained on)"
    (root / "valid.txt").write_text("im6\nim7\n")
    with pytest.raises(DataError) as e:
        discover(root)
    assert str(e.value) == (f"{root / 'valid.txt'}: names 1 image(s) that test.txt also names, e.g. im7.png "
                            "(an image is either validation or test: remove it from one list)")
    (root / "valid.txt").unlink()  # a random validation share is drawn from what test.txt leaves
    spec = discover(root)
    assert len(spec.train) + len(spec.valid) == 6 and len(spec.test) == 2


def test_a_layouts_own_test_split_is_reachable(tmp_path):
    spec = discover(make_segnet(tmp_path / "sn"))
    assert {s.image.parent.name for s in select_split(spec, "test")} == {"test"}
    assert len(select_split(spec, "all")) == 8


def _colour_set(root):
    colours = {"bg": (0, 0, 0), "cell": (255, 0, 0), "edge": (0, 255, 0)}
    lut = np.array(list(colours.values()), np.uint8)
    for i in range(4):
        save_image(root / "images" / f"c{i}.png", i)
        m = _stripes()
        m[:4] = 2
        save_mask(root / "masks" / f"c{i}.png", lut[m])
    (root / "valid.txt").write_text("c3\n")
    table = root.parent / "colours.csv"  # outside the data folder: gone by evaluation time
    table.write_text("".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in colours.items()))
    return root, table


def _void_set(root):
    for i in range(4):
        save_image(root / "images" / f"v{i}.png", i)
        m = _stripes()
        m[:4] = 7  # the labelling tool's "unlabelled" value
        save_mask(root / "masks" / f"v{i}.png", m)
    (root / "valid.txt").write_text("v3\n")
    return root


def test_evaluate_reads_masks_with_the_options_training_used(tmp_path):
    from fastseg.config import FitConfig
    from fastseg.infer.evaluate import evaluate

    root, table = _colour_set(tmp_path / "colour")
    cfg = FitConfig(data=str(root), weights="none", bs=2, num_workers=0, cache="none", colors=str(table))
    bundle, spec = _bundle(cfg, tmp_path / "m1")
    table.unlink()
    res = evaluate(bundle, root, plot=None)
    assert list(res.scores["per_class"]) == ["bg", "cell", "edge"] and res.n_images == 1
    root = _void_set(tmp_path / "void")
    cfg = FitConfig(data=str(root), weights="none", bs=2, num_workers=0, cache="none", ignore_index=7)
    bundle, spec = _bundle(cfg, tmp_path / "m2")
    res = evaluate(bundle, root, split="all", plot=None)
    assert list(res.scores["per_class"]) == list(spec.codes) == ["class_0", "class_1"]
    assert sum(c["support"] for c in res.scores["per_class"].values()) == 4 * (SIDE - 4) * SIDE  # value 7 is void


def _expect_problem(root, line):
    rep = check(root)
    assert not rep.ok and rep.problems == (line,)
    with pytest.raises(DataError) as e:
        discover(root)
    assert str(e.value) == line


def test_masks_holding_one_class_are_a_problem(tmp_path):
    root = make_folders(tmp_path / "zero", n=4)
    for m in (root / "masks").iterdir():
        save_mask(m, np.zeros((SIDE, SIDE), np.uint8))
    _expect_problem(root, f"{root}: the training masks hold only class 'class_0'; a model needs at least 2 classes "
                          "to learn (label the objects with mask values 1, 2, ...; labels kept only in an alpha "
                          "channel are not read)")
    root = make_folders(tmp_path / "alpha", n=4)
    for m in (root / "masks").iterdir():  # labels drawn into the alpha channel of an otherwise black mask
        rgba = np.zeros((SIDE, SIDE, 4), np.uint8)
        rgba[..., 3] = _stripes() * 255
        Image.fromarray(rgba).save(m)
    assert "the training masks hold only class 'class_0'" in check(root).problems[0]


@pytest.mark.parametrize("n", [256, 300])
def test_more_than_255_classes_is_one_clear_error(tmp_path, n):
    root = make_folders(tmp_path / "d", n=4, codes=[f"c{i}" for i in range(n)])
    _expect_problem(root, f"{root / 'codes.txt'}: {n} classes, but at most 255 are possible because mask value 255 "
                          "is void (merge or drop classes)")


def test_binary_masks_with_varying_foreground_values_are_one_class(tmp_path):
    root = make_folders(tmp_path / "drive", n=4)
    for i, m in enumerate(sorted((root / "masks").iterdir())):
        save_mask(m, _stripes() * (251 if i % 2 else 255))  # as DRIVE's manual annotations ship
    notes = []
    spec = discover(root, notify=notes.append)
    assert spec.codes == ("background", "foreground")
    assert ("binary masks with foreground values 251, 255 in different files: every non-zero value mapped to 1 "
            "(classes: background, foreground; add codes.txt if they are different classes)") in notes
    assert all((spec.decoder(s.mask) == _stripes()).all() for s in (*spec.train, *spec.valid))


def test_gif_masks_are_read(tmp_path):
    root = make_folders(tmp_path / "d", n=4)
    for m in list((root / "masks").iterdir()):
        Image.fromarray(_stripes() * 255).save(m.with_suffix(".gif"))
        m.unlink()
    spec = discover(root)
    assert spec.codes == ("background", "foreground") and spec.train[0].mask.suffix == ".gif"
    assert (spec.decoder(spec.train[0].mask) == _stripes()).all()


def test_masks_of_types_not_read_are_named(tmp_path):
    root = tmp_path / "d"
    save_image(root / "images" / "a.png", 0)
    (root / "masks").mkdir()
    np.save(root / "masks" / "a.npy", np.zeros((4, 4)))
    (root / "masks" / "a.xml").write_text("<annotation/>")
    rep = check(root)
    assert rep.problems == (f"{root / 'masks'}: no mask of a type fastseg reads (found .npy, .xml; masks are read "
                            "from .png, .jpg, .jpeg, .tif, .tiff, .bmp, .gif) (convert the masks to PNG)",)
