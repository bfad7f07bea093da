"""Stopping when asked, without losing steps. Spot and preemptible machines, SLURM and Kubernetes stop a job with
SIGTERM and a grace period; a person presses Ctrl-C. Either way the step under way finishes, a complete checkpoint
is saved, and the run exits 143 (SIGTERM) or 130 (SIGINT) with the command that resumes it. A second signal
exits at once with the same code (the checkpoint before stays the one to resume); so does a save that overruns
the grace period.

The grace period ends before the launcher's SIGKILL, so that the run still exits cleanly: torchrun kills its workers
`--shutdown_timeout` seconds (default 30) after it passes a signal on, Kubernetes after
`terminationGracePeriodSeconds` (default 30), SLURM after its `KillWait` (default 30).
"""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from rlaif.common.console import say
from rlaif.common.dist import world_size
from rlaif.errors import Preempted, StoppedAtOnce

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}  # 128 + the signal, as shells report it
MIN_GRACE_S = 60.0
LAUNCHER_KILL_S = 30.0  # SIGTERM to SIGKILL: torchrun, Kubernetes and SLURM, unless told otherwise
EXIT_S = 5.0  # left between the grace period's end and the launcher's SIGKILL, to exit cleanly


def launcher_kill_s() -> float | None:
    """Seconds from torchrun's signal to its SIGKILL when this process runs under torchrun, else None: its
    --shutdown_timeout, from its command line (this process's parent), else its environment, else 30."""
    if not os.environ.get("TORCHELASTIC_RUN_ID"):
        return None
    try:
        args = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        args = []
    values = []
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in ("--shutdown_timeout", "--shutdown-timeout"):
            values.append(value if eq else (args[i + 1] if i + 1 < len(args) else ""))
    values += [os.environ.get("PET_SHUTDOWN_TIMEOUT", ""), os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "")]
    for value in values:  # torchrun's own precedence: the flag, then its PET_ variable, then the other
        with contextlib.suppress(ValueError):
            return float(value)
    return LAUNCHER_KILL_S


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def resume_command(argv: list[str] | None = None, prog: str | None = None) -> str:
    """The command line that continues this run: the one that started it, with --resume. Started as
    `python -m rlaif.train` (what torchrun and `accelerate launch` run), the arguments are `rlaif train`'s; under a
    launcher, the same launch line continues it."""
    args = list(sys.argv[1:] if argv is None else argv)
    args += [] if "--resume" in args else ["--resume"]
    prog = sys.argv[0] if prog is None else prog
    if Path(prog).parent.name == "train" and Path(prog).name == "__main__.py":
        if world_size() > 1:
            return shlex.join(["-m", "rlaif.train", *args]) + "   (after your launcher and its options, as before)"
        return shlex.join(["rlaif", "train", *args])
    return shlex.join(["rlaif", *args])


class Preemption:
    """While active (a context manager around `trainer.train`): the first SIGTERM or SIGINT this process gets asks
    the trainer to stop at the end of the step and save. rlaif/train/callbacks.py's AgreedStop shares the request
    with every process at that step's end (`agree`), and all of them stop there.

    `signum` is the signal that asked for the stop, in this process or another; `received`, the signals this
    process got. A second signal received here, or the grace period running out, raises StoppedAtOnce (exit 143
    or 130). A stop learned from another process starts the grace period here too, and leaves this process's own
    first signal a first. Only the main thread receives signals. The handler only sets flags (a handler that
    writes to stderr can land in the middle of another write there and break it); `announce` says it at the
    step's end."""

    def __init__(self, grace_s: float | None, step_times: list[float]):
        self.grace_s, self.step_times = grace_s, step_times
        self.signum: int | None = None
        self.received: list[int] = []
        self.armed_s: float | None = None  # the grace period, once started
        self._said = False
        self._active = False
        self._old: dict[int, object] = {}

    def grace(self, signum: int) -> float:
        """Seconds to finish the step and save after `signum`: the recipe's, else four slowest steps (at least 60 s),
        cut to end 5 s before the launcher's SIGKILL (torchrun's, after any signal it passes on; a SIGTERM's sender
        otherwise, 30 s by default)."""
        if self.grace_s is not None:
            return self.grace_s
        run = max(MIN_GRACE_S, 4 * max(self.step_times, default=0.0))
        kill = launcher_kill_s()
        if kill is None and signum == signal.SIGTERM:
            kill = LAUNCHER_KILL_S
        return run if kill is None else max(1.0, min(run, kill - EXIT_S))

    def _handle(self, signum, frame):
        self.received.append(signum)
        if len(self.received) > 1:
            raise StoppedAtOnce(self._at_once(f"{signal_name(signum)} a second time"), EXIT_CODES[signum])
        if self.signum is None:
            self.signum = signum
        self._arm()

    def agree(self, signum: int | None) -> None:
        """The stop every process agreed on at a step's end (the first signal any of them got): a request here too,
        with its grace period; not a signal this process received."""
        if signum is not None and self.signum is None:
            self.signum = signum
            self._arm()

    def _arm(self) -> None:
        """Start the grace period, once: a later signal does not extend it."""
        if not self._active or self.armed_s is not None:
            return
        self.armed_s = self.grace(self.signum)
        self._old.setdefault(signal.SIGALRM, signal.signal(signal.SIGALRM, self._overrun))
        signal.alarm(max(1, int(self.armed_s + 0.999)))

    def _overrun(self, signum, frame):
        raise StoppedAtOnce(self._at_once(f"the checkpoint did not finish within the grace period of "
                                          f"{self.armed_s:.0f} s (train.preempt_grace_s)"), EXIT_CODES[self.signum])

    def _at_once(self, why: str) -> str:
        what = "interrupted" if self.signum == signal.SIGINT else "preempted"
        return (f"{what}: {why}: stopped at once, without this step's checkpoint (the judge server and child "
                f"processes are gone). Resume from the last complete checkpoint with:\n  {resume_command()}")

    def announce(self) -> None:
        """Say, once, that the run stops at this step's end and why (from the step's end, not the handler)."""
        if self.signum is None or self._said:
            return
        self._said = True
        where = "" if self.received else " in another process"
        grace = self.armed_s if self.armed_s is not None else self.grace(self.signum)
        say(f"[yellow]{signal_name(self.signum)}{where}: finishing this step and saving a checkpoint (within "
            f"{grace:.0f}s; send it again to stop at once)[/]")

    def __enter__(self):
        self._active = threading.current_thread() is threading.main_thread()
        if self._active:
            for s in EXIT_CODES:
                self._old[s] = signal.signal(s, self._handle)
        kill = launcher_kill_s()
        if self.grace_s is not None and kill is not None and self.grace_s > kill - EXIT_S:
            say(f"[yellow]train.preempt_grace_s is {self.grace_s:.0f} s, but torchrun SIGKILLs its workers {kill:.0f} s "
                f"after a signal: a checkpoint that needs the grace period would be cut off. Give torchrun "
                f"--shutdown_timeout {self.grace_s + EXIT_S:.0f} (or more), or a shorter grace[/]")
        return self

    def __exit__(self, *exc):
        if self._active:
            signal.alarm(0)
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
        self._active = False
        return False

    def stopped(self, step: int, checkpoint: str | None) -> Preempted:
        """The error that ends the command once training stopped on the signal."""
        name = signal_name(self.signum)
        what = "interrupted" if self.signum == signal.SIGINT else f"preempted ({name})"
        saved = f"{checkpoint} is complete" if checkpoint else "no checkpoint was saved"
        return Preempted(f"{what}: stopped cleanly at step {step}; {saved}. Resume with:\n  {resume_command()}",
                         EXIT_CODES[self.signum])
