"""Stopping when asked, without losing steps. Spot and preemptible machines, SLURM and Kubernetes stop a job with
SIGTERM and a grace period; a person presses Ctrl-C. Either way the step under way finishes, a complete checkpoint
is saved, and the run exits 143 (SIGTERM) or 130 (SIGINT) with the command that resumes it. A second signal
exits at once (the checkpoint before stays the one to resume); so does a save that overruns the grace period.
"""
from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path

from rlaif.common.console import say
from rlaif.common.dist import world_size
from rlaif.errors import Preempted

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}  # 128 + the signal, as shells report it
MIN_GRACE_S = 60.0


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
    """While active (a context manager around `trainer.train`): the first SIGTERM or SIGINT asks the trainer to
    stop at the end of the step and save (`signum` is set; rlaif/train/callbacks.py's AgreedStop stops every
    process at that step's end); a second, or the grace period running out,
    raises KeyboardInterrupt, as a signal did before. Only the main thread receives signals."""

    def __init__(self, grace_s: float | None, step_times: list[float]):
        self.grace_s, self.step_times = grace_s, step_times
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    @property
    def grace(self) -> float:
        if self.grace_s is not None:
            return self.grace_s
        return max(MIN_GRACE_S, 4 * max(self.step_times, default=0.0))

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt  # asked twice: at once
        self.signum = signum
        grace = self.grace
        say(f"[yellow]{signal_name(signum)}: finishing this step and saving a checkpoint (within "
            f"{grace:.0f}s; send it again to stop at once)[/]")
        self._old.setdefault(signal.SIGALRM, signal.signal(signal.SIGALRM, self._overrun))
        signal.alarm(max(1, int(grace + 0.999)))

    def _overrun(self, signum, frame):
        raise KeyboardInterrupt  # the grace period ran out before the checkpoint was saved

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in EXIT_CODES:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        signal.alarm(0)
        for s, old in self._old.items():
            signal.signal(s, old)
        return False

    def stopped(self, step: int, checkpoint: str | None) -> Preempted:
        """The error that ends the command once training stopped on the signal."""
        name = signal_name(self.signum)
        what = "interrupted" if self.signum == signal.SIGINT else f"preempted ({name})"
        saved = f"{checkpoint} is complete" if checkpoint else "no checkpoint was saved"
        return Preempted(f"{what}: stopped cleanly at step {step}; {saved}. Resume with:\n  {resume_command()}",
                         EXIT_CODES[self.signum])
