"""Stopping on a signal, without a trainer: the first SIGTERM or SIGINT asks for a checkpoint at the step's end,
a second stops at once, and so does a save that overruns its grace period; the exit codes are the signal's, seen
from a real process that gets real signals. (The whole path, with a real GRPO run and its judge, is in
tests/faults/test_trainer_faults.py.)"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlaif.train import callbacks
from rlaif.train.callbacks import run_callbacks
from rlaif.train.preemption import Preemption, resume_command

ROOT = Path(__file__).resolve().parents[1]

# A command whose "step" never ends until a signal asks it to stop: with `clean`, it stops as training does at the
# step's end (a checkpoint saved); without, the step and its checkpoint never end (a hung save).
STEP = """
import sys, time
from rlaif.cli.guard import run_guarded
from rlaif.train.preemption import Preemption

def main():
    with Preemption(float(sys.argv[1]), []) as pre:
        print("ready", flush=True)
        while pre.signum is None:
            time.sleep(0.02)
        print("asked", flush=True)
        while sys.argv[2] != "clean":
            time.sleep(0.02)
    raise pre.stopped(3, None)

sys.exit(run_guarded(main))
"""


def command(grace: float, mode: str):
    p = subprocess.Popen([sys.executable, "-c", STEP, str(grace), mode], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.readline().strip() == "ready", p.communicate(timeout=60)
    return p


def finish(p):
    try:
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, err


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


LAUNCHER_ENV = ("TORCHELASTIC_RUN_ID", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "PET_SHUTDOWN_TIMEOUT")


def test_the_grace_period_fits_inside_the_launchers_kill(monkeypatch, capsys):
    for k in LAUNCHER_ENV:
        monkeypatch.delenv(k, raising=False)
    # Ctrl-C: a person, nobody kills after it; sized from the run
    assert Preemption(None, []).grace(signal.SIGINT) == 60
    assert Preemption(None, [2.0, 30.0]).grace(signal.SIGINT) == 120  # four slowest steps
    # SIGTERM: torchrun, Kubernetes and SLURM send SIGKILL 30 s later unless told otherwise; 5 s are left to exit
    assert Preemption(None, [2.0, 30.0]).grace(signal.SIGTERM) == 25
    assert Preemption(5, [30.0]).grace(signal.SIGTERM) == 5  # the recipe's word
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run")  # under torchrun: it kills 30 s after any signal it passes on
    assert Preemption(None, [2.0, 30.0]).grace(signal.SIGINT) == 25
    monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "300")  # torchrun told to wait longer
    assert Preemption(None, [2.0, 30.0]).grace(signal.SIGTERM) == 120
    monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "30")
    with Preemption(120, []):  # a recipe's grace that torchrun would cut short: said when the run starts
        pass
    assert "--shutdown_timeout" in " ".join(capsys.readouterr().err.split())


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


def test_a_clean_stop_on_sigterm_exits_143_with_the_resume_command():
    p = command(600, "clean")
    p.send_signal(signal.SIGTERM)
    code, err = finish(p)
    assert code == 143, err
    assert "preempted (SIGTERM): stopped cleanly at step 3" in err and "--resume" in err


def test_a_second_sigterm_exits_at_once_with_143():
    p = command(600, "hang")
    p.send_signal(signal.SIGTERM)
    assert p.stdout.readline().strip() == "asked"  # the first was taken as a request
    p.send_signal(signal.SIGTERM)
    code, err = finish(p)
    assert code == 143, err  # SIGTERM's code, as the launcher and the shell expect
    assert "SIGTERM a second time: stopped at once" in " ".join(err.split()) and "Traceback" not in err


def test_a_checkpoint_that_overruns_the_grace_period_exits_143():
    p = command(1, "hang")
    p.send_signal(signal.SIGTERM)
    code, err = finish(p)
    assert code == 143, err
    assert "within the grace period of 1 s" in " ".join(err.split()) and "Traceback" not in err


def test_ctrl_c_twice_exits_130():
    p = command(600, "hang")
    p.send_signal(signal.SIGINT)
    assert p.stdout.readline().strip() == "asked"
    p.send_signal(signal.SIGINT)
    code, err = finish(p)
    assert code == 130, err


def test_a_stop_learned_from_another_process_leaves_its_own_first_signal_a_first(monkeypatch, capsys):
    """Rank 1 learns at a step's end that rank 0 got SIGTERM; the scheduler's SIGTERM then reaches rank 1 too
    (staggered delivery, srun signalling each task). That is rank 1's first signal: it goes on saving the agreed
    checkpoint, within the grace period armed when it learned of the stop."""
    monkeypatch.setattr(callbacks, "gather_objects", lambda mine: [(signal.SIGTERM, False), mine])  # rank 0's
    with Preemption(600, []) as pre:
        control = SimpleNamespace(should_training_stop=False, should_save=False)
        agreed_stop(pre, failing=False).on_step_end(None, None, control)
        assert control.should_training_stop and control.should_save and pre.signum == signal.SIGTERM
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 600  # the grace period runs here too
        os.kill(os.getpid(), signal.SIGTERM)  # no KeyboardInterrupt: not a second signal
        time.sleep(0.2)
        assert pre.received == [signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt):  # its own second one is
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0  # the alarm goes with the run
    assert "SIGTERM in another process: finishing this step" in " ".join(capsys.readouterr().err.split())


def test_the_signal_handler_prints_nothing_the_step_end_does(capsys):
    """A handler that writes to stderr can land while the main thread writes there (a reentrant-call error at a
    random point of training): it only sets flags."""
    with Preemption(600, []) as pre:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        assert capsys.readouterr().err == ""
        agreed_stop(pre, failing=False).on_step_end(None, None, SimpleNamespace())
    assert "SIGTERM: finishing this step and saving a checkpoint" in " ".join(capsys.readouterr().err.split())
