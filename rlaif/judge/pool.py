"""The judge servers of a run as one pool: each request goes to the least-loaded healthy replica, a dead replica is
taken out until it is back, and when none is healthy requests wait for one instead of failing into fallbacks.

Why least-loaded, not round-robin: replicas differ (another GPU model, a replica still warming its prefix cache, a
restarted one), and batches differ in size; round-robin sends a slow replica as much as a fast one and the step
waits for the slowest. Requests in flight are the load (a batch POST counts its conversations).

Why each process starts its rotation at its rank: every training process has its own pool, and they pick in
lockstep (one batch POST a step each); rotations that all start at 0 send every process's POST to the same
replica (16 processes, 4 replicas: 16 POSTs to one, none to the others). Started at the rank, the busiest replica
gets ceil(processes / replicas).

Why wait: a failed judgment costs a training step its signal (with `on_failure: none` the sample is left out of
its group; with `neutral` the group gets no advantage), so a 30-60 s restart that requests fail through costs
dozens of steps. Waiting costs the same seconds and no step. The wait is bounded (`judge.max_outage_wait_s`),
once per request (its deadline is set at its first attempt, rlaif/judge/attempts.py): past it, the request fails
as before, and so do the requests after it, at once, until a replica is back (an outage that outlasted the
bound is not waited for again by every batch); the fail-rate stop then saves a checkpoint.

Only a replica that answered before is waited for: a URL that never answered is a wrong URL or a server not
started, and a run should say so at its self-test, not after `max_outage_wait_s`.

Who says a replica is down: for a server rlaif launched, its supervisor (it restarts the server, rlaif/judge/
server.py) and the server process itself (`dead`, seen before the supervisor's next look). For any server, a
connection it refuses, and the circuit breaker: `breaker_failures` timeouts or server errors in a row (a stuck
engine behind a live API server answers nothing, and each batch sent there would cost the whole timeout). rlaif
did not launch such a server, or another process of the run did, so nothing here can restart it: a probe thread
sends it a real one-token request each second and puts it back when that is answered. Not /health: a vLLM binds
its port before its model is loaded, vLLM's CPU backend answers /health before its first request can still crash
it, and a stuck engine's API server answers /health. A probe that got no answer for `max_outage_wait_s` gives
up: the replica is not waited for until a later refusal's probe is answered.

The pool's state changes under one lock: picks come from TRL's event loop and evaluation's, downs and ups from
the supervisor's thread and the probes'.
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

from rlaif.judge.urls import api_url, server_root

log = logging.getLogger("rlaif.judge")

POLL_S = 0.25  # how often a waiting request looks again
PROBE_S = 1.0  # how often a replica out of the pool is sent a probe request


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    down: bool = False  # known to be down: restarting (supervisor), refusing or unresponsive (probe running)
    given_up: bool = False  # will not come back (its supervisor gave up)
    dead: Callable[[], bool] = field(default=lambda: False)  # the launched server process has exited
    # it has answered before (or rlaif launched it, ready): worth waiting for. A URL that never answered is a
    # wrong URL or a server not started, and requests to it fail at once rather than wait
    answered: bool = False
    abandoned: bool = False  # its probe got no answer for max_outage_wait_s: not waited for until it answers
    strikes: int = 0  # timeouts or server errors in a row
    downs: int = 0  # times it was taken out

    def healthy(self) -> bool:
        return not self.given_up and not self.down and not self.dead()


class Pool:
    def __init__(self, urls: list[str], max_wait_s: float, api_key: str | None = None, probe_s: float = PROBE_S, *,
                 model: str | None = None, rank: int = 0, breaker_failures: int = 2, timeout_s: float = 30.0,
                 probe: tuple[str, dict] | None = None):
        """`model`: the served model name a probe's request names; `rank`: this process's in the run (where its
        rotation starts); `timeout_s`: a probe's request timeout; `probe`: (path at the server's root, body) of
        the probe request, for a server with no chat endpoint (a reward model's pooling server); default: a
        one-token chat completion."""
        self.replicas = {u: Replica(u) for u in urls}
        self.max_wait_s, self.api_key, self.probe_s = max_wait_s, api_key, probe_s
        self.model, self.breaker_failures, self.timeout_s = model, breaker_failures, timeout_s
        self.probe = probe
        self.waited_s = 0.0  # total time requests spent waiting (concurrent waits count once)
        self.expired = False  # a wait ran out with no replica up: requests fail at once until one is back
        self.expired_waits = 0  # waits that ran out (one per outage that outlasted the bound)
        self._longest = 0.0
        self._waiting = 0
        self._turn = rank  # rotates ties, so equally loaded replicas take turns; processes start apart
        self._lock = threading.RLock()
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
    def mark_down(self, url: str, why: str = "", was_up: bool = False) -> bool:
        """Take `url` out; whether it was in (the transition is counted and told once)."""
        with self._lock:
            r = self.replicas.get(url)
            if r is None:
                return False
            r.answered = r.answered or was_up
            if r.down:
                return False
            r.down, r.downs = True, r.downs + 1
            left = len(self.healthy())
            log.warning("judge replica %s is down%s; %s", url, f" ({why})" if why else "",
                        f"{left} healthy replica(s) carry its load" if left else "requests wait for a replica")
            return True

    def mark_up(self, url: str) -> bool:
        """Put `url` back; whether it was out. A replica back ends an expired outage: requests wait again."""
        with self._lock:
            r = self.replicas.get(url)
            if r is None:
                return False
            r.answered, r.abandoned, r.strikes = True, False, 0
            if not r.down:
                return False
            r.down, self.expired = False, False
            log.warning("judge replica %s is back", url)
            return True

    def give_up(self, url: str) -> None:
        with self._lock:
            if url in self.replicas:
                self.replicas[url].given_up = True

    def answered(self, url: str) -> None:
        """A request to `url` was answered: it is worth waiting for, its strikes are forgiven, and if it was out
        (a request that went there because none was up), it is back."""
        self.mark_up(url)

    def strike(self, url: str, why: str) -> None:
        """A timeout or a server error at `url`: `breaker_failures` in a row take it out until a probe is
        answered."""
        with self._lock:
            r = self.replicas[url]
            r.strikes += 1
            n = r.strikes
            if n < self.breaker_failures:
                return
        self.take_out(url, f"{n} timeouts or server errors in a row, the last: {why}")

    def refused(self, url: str, why: str) -> None:
        """A connection to `url` was refused: out of the pool until a probe is answered."""
        self.take_out(url, why)

    def take_out(self, url: str, why: str, was_up: bool = False) -> None:
        """Out of the pool until a probe thread's real request is answered."""
        with self._lock:
            if url not in self.replicas:
                return
            self.mark_down(url, why, was_up)
            if url in self._probing:
                return
            self._probing.add(url)
        threading.Thread(target=self._probe, args=(url,), daemon=True, name="judge-probe").start()

    def _answers(self, url: str) -> bool:
        """Whether `url` answers a real one-token request (what a judgment needs), within a request's timeout."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"messages": [{"role": "user", "content": "ready?"}], "max_tokens": 1, "temperature": 0.0}
        if self.model:
            body["model"] = self.model
        where = api_url(url) + "/chat/completions"
        if self.probe is not None:
            where, body = server_root(url) + self.probe[0], self.probe[1]
        try:
            return httpx.post(where, json=body, headers=headers, timeout=self.timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def _probe(self, url: str) -> None:
        t0 = time.monotonic()
        try:
            while not self.replicas[url].given_up and not self.closed:
                if self._answers(url):
                    self.mark_up(url)
                    return
                if time.monotonic() - t0 >= self.max_wait_s:
                    with self._lock:
                        self.replicas[url].abandoned = True
                    log.warning("judge replica %s did not answer for %.0fs: not waited for until it answers",
                                url, time.monotonic() - t0)
                    return
                time.sleep(self.probe_s)
        finally:
            with self._lock:
                self._probing.discard(url)

    def recoverable(self) -> bool:
        """Some replica may come back: it answered before, and its supervisor is restarting it or a probe is
        asking it."""
        return any(not r.given_up and not r.abandoned and r.answered for r in self.replicas.values())

    def deadline(self) -> float:
        """When a request that starts now stops waiting for a replica (its first attempt sets it)."""
        return time.monotonic() + self.max_wait_s

    async def wait(self, deadline: float | None = None) -> None:
        """Return once a replica is healthy; or at `deadline`, the request's one bound; or at once when none can
        come back, or when a wait of this outage ran out already (until a replica is back)."""
        deadline = self.deadline() if deadline is None else deadline
        with self._lock:
            if self.healthy() or not self.recoverable() or self.expired:
                return
            if self._waiting == 0:
                self._longest = 0.0  # a new outage: its waits are counted afresh
            self._waiting += 1
        t0 = time.monotonic()
        try:
            while not self.healthy() and self.recoverable() and not self.expired:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await asyncio.sleep(min(POLL_S, left))
        finally:
            waited = time.monotonic() - t0
            with self._lock:
                self._waiting -= 1
                if waited > self._longest:  # concurrent requests wait together: count the outage once
                    self.waited_s += waited - self._longest
                    self._longest = waited
                ran_out = time.monotonic() >= deadline
                if ran_out and not self.healthy() and self.recoverable() and not self.expired:
                    self.expired, self.expired_waits = True, self.expired_waits + 1
                    log.warning("no judge replica is up after %.1fs: requests fail and fall back until one is "
                                "back", waited)

    def close(self) -> None:
        self.closed = True
