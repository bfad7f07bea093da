"""Requests to a supervised judge server that is down wait for its restart, bounded, and the wait is counted
once however many requests waited (the whole path with a real server killed mid-run: tests/faults)."""
import asyncio
import time

import pytest

from rlaif.judge.outage import Outage


def test_requests_wait_for_the_restart_and_the_outage_is_counted_once():
    o = Outage(60)
    o.down = True

    async def run():
        waits = [asyncio.create_task(o.wait()) for _ in range(8)]
        await asyncio.sleep(0.6)
        assert not any(w.done() for w in waits)  # still down: everyone waits
        o.restarted()
        t = time.monotonic()
        await asyncio.gather(*waits)
        return time.monotonic() - t

    assert asyncio.run(run()) < 0.5  # back within a poll
    assert o.waited_s == pytest.approx(0.6, abs=0.3)  # eight requests, one outage


def test_the_wait_is_bounded_and_ends_when_the_supervisor_gives_up():
    o = Outage(0.3)
    o.dead = lambda: True  # the process is gone and nobody restarts it yet
    t = time.monotonic()
    asyncio.run(o.wait())
    assert 0.25 < time.monotonic() - t < 1.0 and o.is_down()  # past the bound: the request goes on and fails
    o.given_up = True
    assert not o.is_down()
    t = time.monotonic()
    asyncio.run(o.wait())
    assert time.monotonic() - t < 0.1
