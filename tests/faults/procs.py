"""Helpers for fault tests that drive real processes: wait for a condition, read a file that may not exist yet,
list a session's live processes, kill a process tree."""
import os
import sys
import time

RLAIF = [sys.executable, "-m", "rlaif.cli"]


def wait_for(cond, timeout, what, poll_s=0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def session(sid):
    """Every live process of a session (the judge server's: it leads its own, with its engine processes)."""
    import psutil
    out = []
    for proc in psutil.process_iter(["pid", "name", "status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (ProcessLookupError, PermissionError):
            pass
    return out


def kill_tree(pid):
    """torchrun starts its workers in sessions of their own: a kill of its group would leave them."""
    import psutil
    try:
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for q in procs:
        try:
            q.kill()
        except psutil.NoSuchProcess:
            pass


def without_tiny_models(tmp_path):
    """Overrides that let recipes/smoke.yaml load before `make models` (the unit lane): hub-style model ids that are
    never loaded and an empty training file, for tests whose servers are stand-ins."""
    train = tmp_path / "train.jsonl"
    train.touch()
    return [f"data.train={train}", "data.eval=null", "judge.canaries=null", "policy.model=tiny/policy",
            "judge.model=tiny/judge"]
