"""The judge pool's routing and health, without servers: least-loaded picks, retries elsewhere, waiting while no
replica is up (bounded, counted once), and a refused replica probed back (the whole path with real servers killed
mid-run: tests/faults/test_server_faults.py)."""
import asyncio
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from rlaif.judge.pool import Pool
from rlaif.judge.server import free_port

A, B, C = "http://a:1", "http://b:1", "http://c:1"


def test_requests_go_to_the_least_loaded_replica_and_equal_ones_take_turns():
    pool = Pool([A, B, C], 60)
    with pool.serving(A, 5), pool.serving(B, 1):
        assert pool.pick() == C  # nothing in flight there
        with pool.serving(C, 3):
            assert pool.pick() == B
    assert Counter(pool.pick() for _ in range(30)) == {A: 10, B: 10, C: 10}  # idle: turns, not one favourite


def test_a_retry_goes_to_another_replica_and_a_down_one_gets_nothing():
    pool = Pool([A, B], 60)
    assert {pool.pick(avoid=A) for _ in range(10)} == {B}
    pool.mark_down(B)
    assert {pool.pick(avoid=A) for _ in range(10)} == {A}  # the only one left, even if it just failed
    pool.mark_up(B)
    assert {pool.pick() for _ in range(10)} == {A, B}


def test_requests_wait_while_no_replica_is_up_and_the_outage_is_counted_once():
    pool = Pool([A, B], 60)
    pool.mark_down(A, was_up=True)
    pool.mark_down(B, was_up=True)

    async def run():
        waits = [asyncio.create_task(pool.wait()) for _ in range(8)]
        await asyncio.sleep(0.6)
        assert not any(w.done() for w in waits)  # none up: everyone waits
        pool.mark_up(B)  # one back is enough
        t = time.monotonic()
        await asyncio.gather(*waits)
        return time.monotonic() - t

    assert asyncio.run(run()) < 0.5  # back within a poll
    assert pool.waited_s == pytest.approx(0.6, abs=0.3)  # eight requests, one outage
    assert pool.pick() == B


def test_the_wait_is_bounded_and_ends_when_no_replica_can_come_back():
    pool = Pool([A], 0.3)
    pool.replicas[A].answered = True  # launched, and ready
    pool.replicas[A].dead = lambda: True  # the process is gone and its supervisor has not looked yet
    t = time.monotonic()
    asyncio.run(pool.wait())
    assert 0.25 < time.monotonic() - t < 1.0  # past the bound: the request goes on, and fails
    pool.give_up(A)
    assert not pool.recoverable()
    t = time.monotonic()
    asyncio.run(pool.wait())
    assert time.monotonic() - t < 0.1


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_a_refused_replica_is_probed_and_put_back_when_its_health_answers():
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    pool = Pool([url, A], 60, probe_s=0.1)
    pool.refused(url, "ConnectError")
    assert [r.url for r in pool.healthy()] == [A] and pool.replicas[url].downs == 1
    time.sleep(0.4)
    assert not pool.replicas[url].healthy()  # nothing answers there yet: still out
    server = HTTPServer(("127.0.0.1", port), _Health)  # the server is back
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        deadline = time.monotonic() + 5
        while not pool.replicas[url].healthy() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.replicas[url].healthy()
    finally:
        server.shutdown()
        server.server_close()
        pool.close()


def test_a_url_that_never_answered_is_not_waited_for():
    """A wrong URL, or a server not started: its requests fail at once (the self-test says so), not after
    max_outage_wait_s."""
    pool = Pool([A], 60)
    pool.mark_down(A, "ConnectError")
    assert not pool.recoverable()
    t = time.monotonic()
    asyncio.run(pool.wait())
    assert time.monotonic() - t < 0.1
    pool.mark_up(A)  # it answered once: from now on it is worth waiting for
    pool.mark_down(A, "ConnectError")
    assert pool.recoverable()
