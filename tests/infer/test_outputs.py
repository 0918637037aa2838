"""Predict's output folder (fastseg.infer.outputs): which files a prediction writes, the record of what
fastseg wrote, and the bounded background writer (faults around them: tests/faults/test_faults_outputs.py)."""

import json
from pathlib import Path

import pytest

from fastseg.errors import FastsegError
from fastseg.infer.outputs import LOG_NAME, BackgroundWriter, OutputFolder, output_files


def test_output_files_per_option():
    rel = Path("sub/a.png")
    assert output_files(rel) == [rel]
    assert output_files(rel, overlay=True, probs=True) == [rel, Path("sub/a_overlay.jpg"), Path("sub/a_probs.npy")]
    assert output_files(rel, overlay=True, mask=False) == [Path("sub/a_overlay.jpg")]  # coco/cvat: no PNG mask


def test_the_record_lets_a_later_run_replace_only_its_own_files(tmp_path):
    folder = OutputFolder(tmp_path / "out")
    folder.claim([Path("a.png"), Path("sub/b.png")])
    folder.write(Path("a.png"), b"mask a")
    folder.write(Path("sub/b.png"), b"mask b")
    (tmp_path / "out" / "sub" / "b.png").unlink()  # gone since: its entry is dropped at the next claim
    again = OutputFolder(tmp_path / "out")
    again.claim([Path("a.png"), Path("sub/b.png")])
    assert [json.loads(line)["path"] for line in again.log.read_text().splitlines()] == ["a.png"]
    again.write(Path("a.png"), b"new mask a")
    (tmp_path / "out" / "c.png").write_bytes(b"someone's")  # appeared after the claim
    with pytest.raises(FastsegError, match=r"c.png appeared during the run and was not written by fastseg"):
        again.write(Path("c.png"), b"mask c")
    assert (tmp_path / "out" / "c.png").read_bytes() == b"someone's"
    assert (tmp_path / "out" / "a.png").read_bytes() == b"new mask a"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [LOG_NAME, "a.png", "c.png", "sub"]


def test_claim_refuses_a_folder_in_the_way(tmp_path):
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    with pytest.raises(FastsegError, match=r"out/a.png is a folder; predicting would replace it \(1 output file in"):
        OutputFolder(tmp_path / "out").claim([Path("a.png")])


def test_background_writer_keeps_order_and_raises_the_first_failure():
    with BackgroundWriter(lambda item: item * 2, max_pending=2) as w:
        for i in range(5):
            w.put(i)
    assert w.results == [0, 2, 4, 6, 8]

    def write(item):
        if item == 1:
            raise OSError("disk full")
        return item

    w = BackgroundWriter(write, max_pending=1)
    w.put(0)
    w.put(1)  # cannot raise yet: item 1 fails only once it is taken
    with pytest.raises(OSError, match="disk full"):
        w.close()  # waits for the pending writes, then raises
    with pytest.raises(OSError, match="disk full"):
        w.put(2)  # later items are refused at once
    assert w.results == [0]  # nothing written after the failure
