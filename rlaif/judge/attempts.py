"""One judge request's attempts: the retry policy both of the client's ways of sending (single calls and batch
POSTs, rlaif/judge/http_client.py) share, so that a fix to it is made once.

Each attempt waits for a healthy replica (rlaif/judge/pool.py), against one deadline for the whole request: the
outage bound, `judge.max_outage_wait_s`, is per request, not per retry (with a deadline per retry, 3 retries made
a 10-minute bound 40 minutes). Then it picks the least-loaded replica, another than the one a retry just failed
on. Between attempts, exponential backoff with full jitter, so the retries of a burst do not arrive together.

What a failed attempt says about its replica, which the pool acts on:
- the connection was refused (nothing listens there): out of the pool until a probe is answered;
- a router in front of the replicas (vllm-router, smg) answered 503 "No available workers": an outage, waited
  for like a restart, not a failure of the router;
- a timeout or another 5xx: a strike; `judge.breaker_failures` in a row take the replica out (a stuck engine
  behind a live API server costs every batch sent to it the whole timeout);
- anything else (429, a malformed reply): this request's problem only.
Retried: transport errors, 408, 429 and 5xx; another 4xx is the caller's mistake and would answer the same again.
"""
from __future__ import annotations

import asyncio
import random

from rlaif.judge.pool import Pool

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}  # a timeout, a rate limit, a server error
NO_WORKERS = "no available workers"  # what vllm-router and smg answer (503) while no worker behind them is up


def _chain(e: BaseException | None):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def refused(e: BaseException) -> bool:
    """Whether the server was not there at all (connection refused or not made), as opposed to slow or rude."""
    return any(type(x).__name__ in ("ConnectError", "ConnectTimeout", "ConnectionRefusedError") for x in _chain(e))


def timed_out(e: BaseException) -> bool:
    """Whether the server took the connection and then did not answer in time (read, write or SDK timeout)."""
    return any("Timeout" in type(x).__name__ for x in _chain(e)) and not refused(e)


class Attempts:
    """`while (url := await tries.next()) is not None:` send to url; then `tries.succeeded()` and return, or
    `if not tries.failed(error, ...): break`. `attempt` counts the attempts made, `error` says the last failure."""

    def __init__(self, pool: Pool, max_retries: int, backoff_base_s: float, backoff_max_s: float):
        self.pool, self.max_retries = pool, max_retries
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.deadline = pool.deadline()  # one outage bound for the whole request, from its first attempt
        self.attempt = 0
        self.url: str | None = None
        self.error: str | None = None
        self.spent = False  # no more attempts: a failure that another would repeat

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * (2 ** attempt)))

    async def next(self) -> str | None:
        """The replica for the next attempt (after the backoff, and a wait while none is up); None when spent."""
        if self.spent or self.attempt > self.max_retries:
            return None
        if self.attempt:
            await asyncio.sleep(self.backoff(self.attempt - 1))
        await self.pool.wait(self.deadline)  # no replica up (a restart, say): wait for one rather than fail
        self.url = self.pool.pick(avoid=self.url)  # the least loaded; a retry goes elsewhere when it can
        self.attempt += 1
        return self.url

    def succeeded(self) -> None:
        self.pool.answered(self.url)

    def failed(self, error: str, *, status: int | None = None, body: str = "",
               exc: BaseException | None = None) -> bool:
        """Record a failed attempt at `self.url`, tell the pool what it says about the replica, and say whether
        the request is worth another attempt."""
        self.error = error
        if exc is not None and refused(exc):
            self.pool.refused(self.url, error)
        elif status == 503 and NO_WORKERS in body.lower():
            self.pool.take_out(self.url, "a router with no worker up", was_up=True)
        elif (exc is not None and timed_out(exc)) or (status is not None and status >= 500):
            self.pool.strike(self.url, error)
        if status is not None and status not in RETRYABLE_STATUS:
            self.spent = True  # the caller's mistake: it would answer the same again
            return False
        return True
