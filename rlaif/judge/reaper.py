"""The judge server's reaper: a small process that outlives whatever kills the trainer, and then ends the judge.

vLLM's API server starts its engine (`VLLM::EngineCore`, `VLLM::Worker`) as children in its process group. The
server gets a parent-death signal, but its engine does not: SIGKILL to the trainer *and* its direct children (the
server among them) left the engine running, 1.7 GB resident, re-parented to init. So each server rlaif launches
gets a reaper, started by a double fork (it is nobody's direct child, and in a session of its own, so neither a
kill of the trainer's children nor a terminal's Ctrl-C reaches it). It watches the trainer; when the trainer is
gone it sends SIGTERM to the server's whole process group, then SIGKILL after a grace, and exits. It exits at once
when the group is gone (the server stopped as usual). Standard library only: it must start in milliseconds.

    python -m rlaif.judge.reaper WATCHED_PID PROCESS_GROUP
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5
GRACE_S = 5.0


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22): a pid and its start time name
    one process, even after the pid is reused. None when it is gone or a zombie."""
    fields = _stat(str(pid))
    return None if fields is None or fields[0] in ("Z", "X") else fields[19]


def _stat(pid: str) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def group_alive(pgid: int) -> bool:
    """Whether a live process (not a zombie: its parent has yet to collect it, but it holds nothing) is left in
    the process group. kill(-pgid, 0) would count zombies."""
    for pid in os.listdir("/proc"):
        if pid.isdigit() and (f := _stat(pid)) is not None and f[2] == str(pgid) and f[0] not in ("Z", "X"):
            return True
    return False


def watch(watched: int, started: str | None, pgid: int) -> None:
    """`started`: the watched process's start time when the reaper began, None when it was gone already (then
    the group goes at once: a gone trainer's start time, None, would otherwise equal it for ever)."""
    while group_alive(pgid):
        if started is None or start_time(watched) != started:  # the trainer is gone: only we will stop its judge
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(pgid, sig)
                except (ProcessLookupError, PermissionError):
                    return
                deadline = time.monotonic() + GRACE_S
                while group_alive(pgid) and time.monotonic() < deadline:
                    time.sleep(0.1)
            return
        time.sleep(POLL_S)


def spawn(watched: int, pgid: int) -> None:
    """Start a reaper for the process group `pgid` on behalf of process `watched` (this one)."""
    subprocess.run([sys.executable, "-m", "rlaif.judge.reaper", str(watched), str(pgid)], check=False, timeout=30,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str]) -> None:
    watched, pgid = int(argv[0]), int(argv[1])
    started = start_time(watched)
    if os.fork():  # the first child returns at once to `spawn`; the grandchild, nobody's child, watches
        os._exit(0)
    os.setsid()
    watch(watched, started, pgid)


if __name__ == "__main__":
    main(sys.argv[1:])
