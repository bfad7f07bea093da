"""A judge server rlaif supervises is down: its requests wait for the restart instead of failing into fallbacks.

A failed judgment costs a training step its signal (with `on_failure: none` the sample is left out of its group;
with `neutral` the group gets no advantage), so a 30-60 s restart that requests fail through costs dozens of
steps. Waiting costs the same seconds and no step. The wait is bounded (`judge.max_outage_wait_s`): past it,
requests fail as before and the fail-rate stop saves a checkpoint. A server rlaif did not launch is not
supervised, and its requests fail and retry as before.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

log = logging.getLogger("rlaif.judge")

POLL_S = 0.25


class Outage:
    def __init__(self, max_wait_s: float):
        self.max_wait_s = max_wait_s
        self.down = False  # the supervisor saw the server die, and is restarting it
        self.given_up = False  # the supervisor will not restart it again
        self.dead: Callable[[], bool] = lambda: False  # the server process has exited (seen before the supervisor)
        self.waited_s = 0.0  # total time requests spent waiting (the longest wait of concurrent requests counts)
        self._longest = 0.0
        self._waiting = 0  # requests waiting now

    def is_down(self) -> bool:
        return not self.given_up and (self.down or self.dead())

    async def wait(self) -> None:
        """Return once the server is up again, or the bound has passed, or the supervisor has given up."""
        if not self.is_down():
            return
        if self._waiting == 0:
            self._longest = 0.0  # a new outage: its waits are counted afresh
        self._waiting += 1
        t0 = time.monotonic()
        while self.is_down() and time.monotonic() - t0 < self.max_wait_s:
            await asyncio.sleep(POLL_S)
        self._waiting -= 1
        waited = time.monotonic() - t0
        if waited > self._longest:  # concurrent requests wait together: count the outage once
            self.waited_s += waited - self._longest
            self._longest = waited
        if self.is_down():
            log.warning("the judge server is still down after %.0fs: requests fail and fall back", waited)

    def restarted(self) -> None:
        self.down = False
