"""The judge servers of a run as one pool: each request goes to the least-loaded healthy replica, a dead replica is
taken out until it is back, and when none is healthy requests wait for one instead of failing into fallbacks.

Why least-loaded, not round-robin: replicas differ (another GPU model, a replica still warming its prefix cache, a
restarted one), and batches differ in size; round-robin sends a slow replica as much as a fast one and the step
waits for the slowest. Requests in flight are the load (a batch POST counts its conversations).

Why wait: a failed judgment costs a training step its signal (with `on_failure: none` the sample is left out of
its group; with `neutral` the group gets no advantage), so a 30-60 s restart that requests fail through costs
dozens of steps. Waiting costs the same seconds and no step. The wait is bounded (`judge.max_outage_wait_s`):
past it, requests fail as before and the fail-rate stop saves a checkpoint.

Only a replica that answered before is waited for: a URL that never answered is a wrong URL or a server not
started, and a run should say so at its self-test, not after `max_outage_wait_s`.

Who says a replica is down: for a server rlaif launched, its supervisor (it restarts the server, rlaif/judge/
server.py) and the server process itself (`dead`, seen before the supervisor's next look). For any server, a
connection it refuses: rlaif did not launch it, or another process of the run launched it, so nothing here can
restart it; a probe thread asks its /health each second and puts it back when it answers 200 (a vLLM server binds
its port before its model is loaded, so an open port is not an answer).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx

from rlaif.judge.urls import server_root

log = logging.getLogger("rlaif.judge")

POLL_S = 0.25  # how often a waiting request looks again
PROBE_S = 1.0  # how often a refused replica's /health is asked


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    down: bool = False  # known to be down: restarting (supervisor) or refusing connections (probe running)
    given_up: bool = False  # will not come back (its supervisor gave up)
    dead: Callable[[], bool] = field(default=lambda: False)  # the launched server process has exited
    # it has answered before (or rlaif launched it, ready): worth waiting for. A URL that never answered is a
    # wrong URL or a server not started, and requests to it fail at once rather than wait
    answered: bool = False
    downs: int = 0  # times it was taken out

    def healthy(self) -> bool:
        return not self.given_up and not self.down and not self.dead()


class Pool:
    def __init__(self, urls: list[str], max_wait_s: float, api_key: str | None = None, probe_s: float = PROBE_S):
        self.replicas = {u: Replica(u) for u in urls}
        self.max_wait_s, self.api_key, self.probe_s = max_wait_s, api_key, probe_s
        self.waited_s = 0.0  # total time requests spent waiting (concurrent waits count once)
        self._longest = 0.0
        self._waiting = 0
        self._turn = 0  # rotates ties, so equally loaded replicas take turns
        self._lock = threading.Lock()  # picks come from TRL's loop thread and evaluation's; probes from threads
        self._probing: set[str] = set()
        self.closed = False  # the run is over: probes stop

    # --- routing ---------------------------------------------------------------------------------------------
    def healthy(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.healthy()]

    def pick(self, avoid: str | None = None) -> str:
        """The least-loaded healthy replica, other than `avoid` (the one a retry just failed on) when there is
        another; when none is healthy (the caller waited already), the next one in turn, whose failure is then
        counted as before."""
        with self._lock:
            self._turn += 1
            cands = self.healthy() or [r for r in self.replicas.values() if not r.given_up] \
                or list(self.replicas.values())
            if avoid is not None and len(cands) > 1:
                cands = [r for r in cands if r.url != avoid]
            n = len(cands)
            best = min(range(n), key=lambda i: (cands[i].in_flight, (i - self._turn) % n))
            return cands[best].url

    @contextlib.contextmanager
    def serving(self, url: str, n: int = 1):
        """`n` requests in flight at `url` for the duration (a batch POST carries n conversations)."""
        with self._lock:
            self.replicas[url].in_flight += n
        try:
            yield
        finally:
            with self._lock:
                self.replicas[url].in_flight -= n

    # --- health ----------------------------------------------------------------------------------------------
    def mark_down(self, url: str, why: str = "", was_up: bool = False) -> None:
        r = self.replicas.get(url)
        if r is None or r.down:
            return
        r.answered = r.answered or was_up
        r.down, r.downs = True, r.downs + 1
        left = len(self.healthy())
        log.warning("judge replica %s is down%s; %s", url, f" ({why})" if why else "",
                    f"{left} healthy replica(s) carry its load" if left else "requests wait for a replica")

    def mark_up(self, url: str) -> None:
        r = self.replicas.get(url)
        if r is not None:
            r.answered = True
        if r is not None and r.down:
            r.down = False
            log.warning("judge replica %s is back", url)

    def give_up(self, url: str) -> None:
        if url in self.replicas:
            self.replicas[url].given_up = True

    def refused(self, url: str, why: str) -> None:
        """A connection to `url` was refused: out of the pool until its /health answers (a probe thread)."""
        with self._lock:
            if url in self._probing or url not in self.replicas:
                return
            self._probing.add(url)
        self.mark_down(url, why)
        threading.Thread(target=self._probe, args=(url,), daemon=True, name="judge-probe").start()

    def _probe(self, url: str) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            while not self.replicas[url].given_up and not self.closed:
                try:
                    if httpx.get(server_root(url) + "/health", timeout=2.0, headers=headers).status_code == 200:
                        self.mark_up(url)
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(self.probe_s)
        finally:
            with self._lock:
                self._probing.discard(url)

    def recoverable(self) -> bool:
        """Some replica may come back: it answered before, and its supervisor is restarting it or a probe is
        asking it."""
        return any(not r.given_up and r.answered for r in self.replicas.values())

    async def wait(self) -> None:
        """Return once a replica is healthy, or the bound has passed, or none can come back."""
        if self.healthy() or not self.recoverable():
            return
        if self._waiting == 0:
            self._longest = 0.0  # a new outage: its waits are counted afresh
        self._waiting += 1
        t0 = time.monotonic()
        while not self.healthy() and self.recoverable() and time.monotonic() - t0 < self.max_wait_s:
            await asyncio.sleep(POLL_S)
        self._waiting -= 1
        waited = time.monotonic() - t0
        if waited > self._longest:  # concurrent requests wait together: count the outage once
            self.waited_s += waited - self._longest
            self._longest = waited
        if not self.healthy():
            log.warning("no judge replica is up after %.0fs: requests fail and fall back", waited)

    def close(self) -> None:
        self.closed = True
