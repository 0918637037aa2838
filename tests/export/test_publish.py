"""Publishing a run's model to --export (fastseg.export.publish): a checked copy of the pair, replacing only
what fastseg can account for (kills, concurrent fits and foreign files: tests/faults/test_faults_runs.py)."""

import pytest
from fake_runs import assert_pair, fake_run

from fastseg.errors import ConfigError
from fastseg.export.bundle import bundle_path_for
from fastseg.export.publish import Occupant, check_destination, publish
from fastseg.io import sha256_file


def test_publish_copies_the_pair_and_says_whose_model_it_replaced(tmp_path):
    first, second = fake_run(tmp_path / "runs" / "a", "a"), fake_run(tmp_path / "runs" / "b", "b")
    dest = tmp_path / "exports" / "model.pkl"
    said = []
    assert check_destination(dest) is None
    assert publish(first, dest, notify=said.append) == dest and said == []
    assert_pair(dest, first)
    assert check_destination(dest) == Occupant(first.parent, kept=True)  # its run folder holds the same model
    assert check_destination(dest, own=first) is None  # a resumed finish meets its own earlier copy
    publish(second, dest, notify=said.append)
    assert_pair(dest, second)
    assert said == [f"replaced {dest} and {bundle_path_for(dest)}/ (the model of run {first.parent})"]
    assert first.is_file() and (first.parent / "model").is_dir()  # the replaced model's run keeps its copy


def test_publishing_onto_the_runs_own_model_is_a_no_op(tmp_path):
    pkl = fake_run(tmp_path / "runs" / "a", "a")
    before = sha256_file(pkl)
    assert publish(pkl, pkl) == pkl and sha256_file(pkl) == before
    assert not list(pkl.parent.glob(".*.lock"))


def test_an_export_inside_a_run_folder_is_refused(tmp_path):
    run = fake_run(tmp_path / "runs" / "a", "a").parent
    (run / "last.pth").write_bytes(b"checkpoint")
    with pytest.raises(ConfigError) as e:
        check_destination(run / "export.pkl")
    assert str(e.value) == f"{run / 'export.pkl'}: is inside the run folder {run}; --export must be outside run folders"
