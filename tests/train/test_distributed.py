"""fastseg.train.distributed in one process: the helpers every rank calls must be no-ops that return what
one process would compute (the torchrun runs themselves are in tests/e2e/test_torchrun.py)."""

from fastseg.train import distributed as D


def test_one_process_is_rank_0_of_1_and_the_main_one(monkeypatch):
    for var in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    assert (D.world_size(), D.local_world_size(), D.rank()) == (1, 1, 0)
    assert D.is_main_process() and not D.is_distributed()


def test_rank_and_sizes_come_from_torchruns_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "3")
    assert (D.world_size(), D.local_world_size(), D.rank()) == (4, 2, 3)
    assert not D.is_main_process()


def test_main_only_notifies_on_rank_0_alone(monkeypatch):
    said = []
    monkeypatch.setenv("RANK", "1")
    D.main_only(said.append)("from rank 1")
    monkeypatch.setenv("RANK", "0")
    D.main_only(said.append)("from rank 0")
    assert said == ["from rank 0"]


def test_collectives_without_a_process_group_return_the_local_result():
    assert D.broadcast_value({"plan": 1}) == {"plan": 1}
    assert D.run_on_main(lambda a, b=0: a + b, 2, b=3) == 5
    D.barrier()  # nothing to wait for
