"""runs/<name>/report.html: self-contained, rebuilt by ``fastseg report``, and right in a real browser."""

import base64
import io
import os
import re
import shutil

import pytest
from click.testing import CliRunner
from PIL import Image

from fastseg.cli import main

from browser import check_page, chromium_path

SECTIONS = ("worst", "classes", "curves", "confusion", "samples", "lr", "timings", "commands", "config", "env")


def _copy_run(run, dest):
    """The run folder less its checkpoints (the report reads only JSON, CSV and PNG files)."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("*.pth", "tensorboard", "wandb"))
    return dest


def _need_browser():
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium (.ci/run does: apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs it")
    pytest.importorskip("websockets.sync.client", reason="the DevTools client needs websockets (the test extra)")


@pytest.mark.slow
def test_report_is_one_self_contained_page(trained):
    page = (trained.run / "report.html").read_text()
    assert not re.search(r"<script|<link|<iframe|@import|url\(", page, re.I)  # nothing to fetch, nothing to run
    assert not re.search(r"(src|href)=\"(?!data:|#)", page)
    for key in SECTIONS:
        assert f'<section id="{key}">' in page
    assert page.index('id="worst"') < page.index('id="classes"') < page.index('id="curves"')  # failures first
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert {a for a, _ in images} >= {"worst validation images", "confusion matrix", "validation samples",
                                      "loss per epoch", "validation mIoU and Dice"}
    for _, data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 100
    run = str(trained.run)
    for command in (f"fastseg fit --resume {run}", f"fastseg evaluate {trained.export} --data",
                    f"fastseg predict {trained.export}", f"fastseg export {trained.export} --format onnx",
                    f"fastseg fit --config {run}/config.json", f"fastseg report {run}"):
        assert command in page, command
    assert "shapes_" in page and "<td>fp32</td>" in page and "<td>lr_find_iters</td>" in page


@pytest.mark.slow
def test_report_command_rebuilds_the_page_also_for_an_unfinished_run(trained, tmp_path):
    run = _copy_run(trained.run, tmp_path / "run")
    (run / "report.html").unlink()
    res = CliRunner().invoke(main, ["report", str(run)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"wrote {run / 'report.html'}"
    assert "worst validation images" in (run / "report.html").read_text()
    for name in ("metrics.json", "per_image.json", "worst.png", "env.json", "confusion.png", "samples.png"):
        (run / name).unlink()  # as after a kill -9 mid-run
    assert CliRunner().invoke(main, ["report", str(run)]).exit_code == 0
    page = (run / "report.html").read_text()
    assert "This run has not finished" in page and "loss per epoch" in page


def test_report_of_a_folder_that_is_not_a_run_is_one_line_error(tmp_path):
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 1
    assert res.output.strip() == (f"Error: {tmp_path}: not a run folder (no readable config.json; "
                                  "pass a folder under runs/)")


def test_report_help_has_an_example():
    res = CliRunner().invoke(main, ["report", "--help"])
    assert res.exit_code == 0 and "fastseg report runs/" in res.output


def test_browser_check_sees_console_errors_and_broken_images(tmp_path):
    """The checker itself: a page with a console error, a script error and an undecodable image fails it."""
    _need_browser()
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><p>x</p><img src="data:image/png;base64,AAAA">'
                   '<script>console.error("boom"); undefined_function();</script></body></html>')
    check = check_page(bad, height=300)
    assert any("boom" in e for e in check.errors) and any("undefined_function" in e for e in check.errors)
    assert check.images[0]["width"] == 0


@pytest.mark.slow
def test_report_renders_in_headless_chromium(trained, tmp_path):
    _need_browser()
    check = check_page(trained.run / "report.html", width=1280, height=2200)
    assert check.errors == []
    assert check.title == f"fastseg run {trained.run.name}"
    assert len(check.images) >= 5 and all(i["complete"] and i["width"] > 0 for i in check.images), check.images
    shot = Image.open(io.BytesIO(check.screenshot)).convert("RGB")
    assert shot.size == (1280, 2200)
    colours = shot.getcolors(maxcolors=1 << 20)
    assert len(colours) > 500  # text, tables, plots and images, not a blank or error page
    assert max(n for n, _ in colours) < 0.8 * 1280 * 2200  # no single colour fills the page
