"""Helpers for fault tests that drive real processes: wait for a condition, read a file that may not exist yet."""
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
