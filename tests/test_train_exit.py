"""How `rlaif train` leaves a multi-process run: its process group destroyed before the interpreter exits. Left
for interpreter shutdown, gloo's threads were torn down by C++ destructors, and one process of a finished two-process
run died of SIGABRT ("terminate called without an active exception"): torchrun then reported the whole run failed
(seen once in CI, tests/faults/test_multiprocess.py)."""
import argparse

import pytest
import torch.distributed as dist

from rlaif.cli import train as train_cli
from rlaif.common.dist import leave_process_group


@pytest.fixture()
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def summary():
    return {"steps": 1, "wall_s": 0.1, "adapter": None, "judge": {"calls": 0, "failed": 0}}


@pytest.mark.parametrize("ends", ["finished", "failed"])
def test_the_train_command_leaves_the_process_group_however_it_ends(one_process_group, monkeypatch, ends):
    def run_training(recipe, resume=False):
        if ends == "failed":
            raise RuntimeError("a failing run")
        return summary()

    monkeypatch.setattr(train_cli, "load_recipe", lambda path, overrides: object())
    monkeypatch.setattr(train_cli, "run_training", run_training)
    args = argparse.Namespace(recipe="r.yaml", overrides=[], resume=False)
    assert dist.is_initialized()
    if ends == "failed":
        with pytest.raises(RuntimeError):
            train_cli.cmd_train(args)
    else:
        assert train_cli.cmd_train(args) == 0
    assert not dist.is_initialized()


def test_leaving_without_a_process_group_is_nothing():
    assert not dist.is_initialized()
    leave_process_group()  # a one-process run never made one
    assert not dist.is_initialized()
