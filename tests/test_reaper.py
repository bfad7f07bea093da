"""The judge server's reaper, with plain processes standing in for the trainer and the server's process group
(the real server, killed with its trainer, is in tests/faults/test_trainer_faults.py)."""
import os
import signal
import subprocess
import sys
import time

from rlaif.judge import reaper


def group(n: int = 3) -> subprocess.Popen:
    """A process group of n sleeping processes, as vLLM's API server and its engine processes are."""
    return subprocess.Popen(["bash", "-c", " & ".join(["sleep 300"] * n) + " & wait"], start_new_session=True)


def reapers_of(pgid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"rlaif.judge.reaper .* {pgid}$"], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def wait_until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_when_the_trainer_dies_the_whole_group_goes_and_so_does_the_reaper():
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    g = group()
    try:
        reaper.spawn(trainer.pid, g.pid)
        assert wait_until(lambda: reapers_of(g.pid), 5)
        [r] = reapers_of(g.pid)
        assert os.getsid(r) == r and os.getsid(r) not in (os.getsid(0), os.getsid(g.pid))  # a session of its own
        time.sleep(1)
        assert reaper.group_alive(g.pid)  # the trainer lives: nothing happens
        trainer.kill()
        trainer.wait()
        assert wait_until(lambda: not reaper.group_alive(g.pid), 15), "the group outlived its trainer"
        assert wait_until(lambda: not reapers_of(g.pid), 5)
    finally:
        trainer.kill()
        try:
            os.killpg(g.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        g.wait()


def test_a_group_stopped_as_usual_lets_its_reaper_go():
    g = group(1)
    reaper.spawn(os.getpid(), g.pid)
    assert wait_until(lambda: reapers_of(g.pid), 5)
    os.killpg(g.pid, signal.SIGKILL)
    g.wait()
    assert wait_until(lambda: not reapers_of(g.pid), 5)  # and this process, its trainer, lives on


def test_a_pid_names_one_process_only_with_its_start_time():
    assert reaper.start_time(os.getpid()) is not None
    p = subprocess.Popen(["true"])
    p.wait()
    assert reaper.start_time(p.pid) is None  # gone


def test_a_trainer_already_gone_when_its_reaper_starts_still_costs_its_group():
    """The narrow window: the trainer dies between launching the server and the reaper reading its start time."""
    trainer = subprocess.Popen(["true"])
    trainer.wait()
    g = group()
    try:
        reaper.spawn(trainer.pid, g.pid)
        assert wait_until(lambda: not reaper.group_alive(g.pid), 60), "the group outlived a trainer already gone"
        assert wait_until(lambda: not reapers_of(g.pid), 60)
    finally:
        try:
            os.killpg(g.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        g.wait()
