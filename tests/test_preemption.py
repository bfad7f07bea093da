"""Stopping on a signal, without a trainer: the first SIGTERM or SIGINT asks for a checkpoint at the step's end,
a second stops at once, and so does a save that overruns its grace period. (The whole path, with a real GRPO run
and its judge, is in tests/faults/test_trainer_faults.py.)"""
import os
import signal
import time
from types import SimpleNamespace

import pytest

from rlaif.cli.guard import run_guarded
from rlaif.errors import Preempted
from rlaif.train.callbacks import run_callbacks
from rlaif.train.preemption import Preemption, resume_command


def test_the_first_signal_asks_for_a_checkpoint_and_the_second_stops_at_once():
    with Preemption(600, []) as pre:
        os.kill(os.getpid(), signal.SIGTERM)
        assert pre.signum == signal.SIGTERM  # asked, not yet stopped
        control = SimpleNamespace(should_training_stop=False, should_save=False)
        agreed_stop(pre, failing=False).on_step_end(None, None, control)
        assert control.should_training_stop and control.should_save
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is not pre._handle  # the handlers go with the run


def agreed_stop(pre, failing: bool):
    """The run's stop callback for one process whose reward is (or is not) failing too often."""
    rewards = [SimpleNamespace(should_stop=failing)]
    return next(cb for cb in run_callbacks(rewards, [], pre) if type(cb).__name__ == "AgreedStop")


def test_a_failing_reward_stops_at_the_step_end_and_a_quiet_step_goes_on():
    for failing in (False, True):
        control = SimpleNamespace(should_training_stop=False, should_save=False)
        agreed_stop(Preemption(600, []), failing).on_step_end(None, None, control)
        assert control.should_training_stop is failing and control.should_save is failing


def test_a_checkpoint_that_overruns_the_grace_period_is_abandoned():
    with pytest.raises(KeyboardInterrupt):
        with Preemption(1, []):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # a save that never ends


def test_the_grace_period_is_sized_from_the_run():
    assert Preemption(None, []).grace == 60
    assert Preemption(None, [2.0, 30.0]).grace == 120  # four slowest steps
    assert Preemption(5, [30.0]).grace == 5  # the recipe's word


def test_the_resume_command_is_the_run_with_resume():
    assert resume_command(["train", "r.yaml", "--set", "grpo.max_steps=8"]) == \
        "rlaif train r.yaml --set grpo.max_steps=8 --resume"
    assert resume_command(["train", "r.yaml", "--resume"]) == "rlaif train r.yaml --resume"


def test_a_run_started_as_a_module_resumes_with_the_train_command(monkeypatch):
    """`python -m rlaif.train RECIPE` (what torchrun and accelerate launch run) has no `train` in its arguments."""
    main = "/x/rlaif/train/__main__.py"
    assert resume_command(["r.yaml", "--set", "a=1"], main) == "rlaif train r.yaml --set a=1 --resume"
    monkeypatch.setenv("WORLD_SIZE", "2")  # under a launcher: its line, with the same module and arguments
    assert resume_command(["r.yaml"], main).startswith("-m rlaif.train r.yaml --resume")
    assert resume_command(["train", "r.yaml"], "/usr/bin/rlaif") == "rlaif train r.yaml --resume"


def test_a_preempted_command_exits_with_its_signals_code(capsys):
    old = signal.getsignal(signal.SIGTERM)

    def stopped():
        raise Preempted("preempted (SIGTERM): stopped cleanly at step 3", 143)
    try:
        assert run_guarded(stopped) == 143
    finally:
        signal.signal(signal.SIGTERM, old)  # run_guarded installs its own for the command's life
    assert "stopped cleanly at step 3" in capsys.readouterr().err
