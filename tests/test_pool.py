"""The judge pool's routing and health: least-loaded picks, retries elsewhere, no herding across processes,
waiting while no replica is up (bounded once per request, counted once), a refused or hung replica taken out and
probed back with a real request, against loopback fake replicas (tests/fake_replica.py; the whole path with real
servers killed mid-run: tests/faults/test_server_faults.py). Counts and orderings, not durations: a loaded
machine stretches every wait."""
import asyncio
import threading
import time
from collections import Counter


from fake_replica import FakeReplica, one_token_batch
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
        t0 = time.monotonic()
        waits = [asyncio.create_task(pool.wait()) for _ in range(8)]
        for _ in range(3):
            await asyncio.sleep(0.3)  # several polls: still waiting
        assert not any(w.done() for w in waits)  # none up: everyone waits
        pool.mark_up(B)  # one back is enough
        await asyncio.wait_for(asyncio.gather(*waits), 30)  # (only a hang takes 30 s)
        return time.monotonic() - t0

    outage = asyncio.run(run())
    assert 0.9 <= pool.waited_s <= outage  # eight requests, one outage: counted once, not eight times
    assert pool.expired_waits == 0 and pool.pick() == B


def test_the_wait_is_bounded_and_ends_when_no_replica_can_come_back():
    pool = Pool([A], 0.3)
    pool.replicas[A].answered = True  # launched, and ready
    pool.replicas[A].dead = lambda: True  # the process is gone and its supervisor has not looked yet
    asyncio.run(asyncio.wait_for(pool.wait(pool.deadline()), 30))
    assert pool.waited_s > 0 and pool.expired_waits == 1  # the bound ran out: the request goes on, and fails
    waited = pool.waited_s
    pool.expired = False  # (as a replica back would)
    pool.give_up(A)
    assert not pool.recoverable()
    asyncio.run(pool.wait(pool.deadline()))
    assert pool.waited_s == waited and pool.expired_waits == 1  # none can come back: nothing to wait for


def test_a_refused_replica_is_probed_and_put_back_when_it_answers_a_real_request():
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    pool = Pool([url, A], 60, probe_s=0.1, model="judge")
    pool.refused(url, "ConnectError")
    assert [r.url for r in pool.healthy()] == [A] and pool.replicas[url].downs == 1
    time.sleep(0.4)
    assert not pool.replicas[url].healthy()  # nothing answers there yet: still out
    with FakeReplica(port=port) as rep:  # the server is back
        deadline = time.monotonic() + 30
        while not pool.replicas[url].healthy() and time.monotonic() < deadline:
            time.sleep(0.05)
        pool.close()
        assert pool.replicas[url].healthy()
        assert rep.posts["/v1/chat/completions"] >= 1  # put back by a one-token request it answered


def test_a_url_that_never_answered_is_not_waited_for():
    """A wrong URL, or a server not started: its requests fail at once (the self-test says so), not after
    max_outage_wait_s."""
    pool = Pool([A], 60)
    pool.mark_down(A, "ConnectError")
    assert not pool.recoverable()
    asyncio.run(asyncio.wait_for(pool.wait(), 30))
    assert pool.waited_s == 0 and pool.expired_waits == 0
    pool.mark_up(A)  # it answered once: from now on it is worth waiting for
    pool.mark_down(A, "ConnectError")
    assert pool.recoverable()


def _client(urls, **kw):
    from rlaif.judge.http_client import ClientSettings, JudgeClient
    return JudgeClient(ClientSettings(urls, "judge", **({"backoff_base_s": 0.01, "backoff_max_s": 0.05} | kw)))


def test_a_request_waits_for_an_outage_once_and_later_requests_fail_fast_until_a_replica_is_back():
    """The bound is per request, not per retry: a replica that answered, then never returns, costs one wait of
    max_outage_wait_s (not one per retry), and the batches after it fail at once instead of waiting again, until
    the replica is back."""
    bound = 1.0
    rep = FakeReplica()
    port = rep.server.server_port
    client = _client(rep.url, max_retries=3, max_outage_wait_s=bound)
    pool = client.pool
    pool.probe_s = 0.05
    try:
        assert all(r.response is not None for r in one_token_batch(client))  # it answered: worth waiting for
        rep.stop()  # and never returns
        first = one_token_batch(client)
        assert all(r.response is None and r.attempts == 4 for r in first)  # every retry was made, and failed
        assert pool.waited_s < 1.9 * bound  # one wait; before: one per retry, (max_retries) x the bound
        assert pool.expired_waits <= 1  # (0 when its probe gave up first: then it is not waited for either)
        waited, expired = pool.waited_s, pool.expired_waits
        later = one_token_batch(client)
        assert all(r.response is None for r in later)
        assert pool.waited_s == waited and pool.expired_waits == expired  # failed fast: no second wait
        rep = FakeReplica(port=port)  # back on its port: the probe puts it back, and outages are waited for again
        deadline = time.monotonic() + 30
        while not pool.replicas[rep.url].healthy() and time.monotonic() < deadline:
            one_token_batch(client, 1)  # a refused request starts a probe if none is running
            time.sleep(0.05)
        assert pool.replicas[rep.url].healthy() and not pool.expired
        assert all(r.response is not None for r in one_token_batch(client))
    finally:
        rep.stop()
        pool.close()


def test_sixteen_processes_spread_their_batches_over_four_replicas(monkeypatch):
    """Each training process has its own pool and they pick in lockstep (one batch POST a step each): every
    process starting its rotation at its rank keeps the busiest replica at ceil(16 / 4) POSTs a step, not 16."""
    urls = [f"http://r{i}:1" for i in range(4)]
    pools = []
    for rank in range(16):
        monkeypatch.setenv("RANK", str(rank))
        pools.append(_client(urls).pool)
    for step in range(8):
        busiest = Counter(p.pick() for p in pools).most_common(1)[0][1]
        assert busiest <= 4, f"step {step}: one replica got {busiest} of 16 batch POSTs"
    assert Counter(pools[5].pick() for _ in range(40)) == {u: 10 for u in urls}  # one process still takes turns


def test_concurrent_downs_and_ups_count_each_real_transition_once():
    """The supervisor thread, probe threads and the event loops mark replicas down and up at once: each real
    transition is counted and told once, down and back alternate."""
    import logging
    import sys
    told: list[str] = []

    class Tell(logging.Handler):
        def emit(self, record):
            told.append("down" if " is down" in record.getMessage() else "back")

    pool = Pool([A, B], 60)
    logger, handler = logging.getLogger("rlaif.judge"), Tell()
    logger.addHandler(handler)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, as a busy machine does

    def hammer():
        for _ in range(300):
            pool.mark_down(A, "x")
            pool.mark_up(A)
    try:
        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
        logger.removeHandler(handler)
    assert pool.replicas[A].downs == told.count("down")
    assert all(a != b for a, b in zip(told, told[1:])), "a transition told twice"
    assert told.count("down") - told.count("back") == int(pool.replicas[A].down)


def test_a_hung_replica_is_taken_out_after_two_timeouts_and_back_once_it_answers_a_real_request():
    """A replica whose engine is stuck while its API server lives (it accepts, never answers, and its /health
    still says 200): two timeouts in a row take it out, its batches go to the other replica, and it is put back
    only when a real one-token request is answered. No judgment falls back throughout."""
    hung, good = FakeReplica(mode="hang"), FakeReplica()
    client = _client([hung.url, good.url], timeout_s=2.0, max_retries=3)
    client.pool.probe_s = 0.05
    results = []
    try:
        while client.pool.replicas[hung.url].healthy() and hung.posts["/v1/chat/completions/batch"] <= 2:
            results += one_token_batch(client)
        assert client.pool.replicas[hung.url].downs == 1  # out after two timeouts in a row
        assert hung.posts["/v1/chat/completions/batch"] == 2
        for _ in range(10):
            results += one_token_batch(client)
        assert hung.posts["/v1/chat/completions/batch"] == 2  # no batch went there while it was out
        assert not client.pool.replicas[hung.url].healthy()  # its /health answers 200; that is not enough
        hung.mode = "ok"  # the engine answers again
        deadline = time.monotonic() + 30
        while not client.pool.replicas[hung.url].healthy() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.pool.replicas[hung.url].healthy()
        batches = hung.posts["/v1/chat/completions/batch"]
        for _ in range(4):
            results += one_token_batch(client)
        assert hung.posts["/v1/chat/completions/batch"] > batches  # back in the rotation
    finally:
        hung.stop()
        good.stop()
        client.pool.close()
    assert all(r.response is not None for r in results)  # zero fallbacks


def test_a_router_with_no_workers_is_an_outage_to_wait_for_not_a_failure():
    """One base_url in front of the replicas (vllm-router, smg) answers 503 "No available workers" while they
    restart: requests wait for it (bounded) instead of failing into fallbacks."""
    router = FakeReplica(status_text="No available workers")
    client = _client(router.url, max_retries=3, max_outage_wait_s=60)
    client.pool.probe_s = 0.05
    try:
        assert all(r.response is not None for r in one_token_batch(client))
        router.mode = 503
        threading.Timer(1.0, setattr, (router, "mode", "ok")).start()  # the workers are back a second later
        assert all(r.response is not None for r in one_token_batch(client))  # no fallback
        assert client.pool.waited_s > 0 and client.pool.replicas[router.url].downs == 1
        short = _client(router.url, max_retries=3, max_outage_wait_s=0.2)
        assert all(r.response is not None for r in one_token_batch(short))
        router.mode = 503  # and this time they do not come back within the bound: the calls fail, counted
        failed = one_token_batch(short)
        assert all(r.response is None and "503" in r.error for r in failed)
        assert short.per_url[router.url]["failures"] >= len(failed)
        short.pool.close()
    finally:
        router.stop()
        client.pool.close()


def test_a_restart_holds_the_failure_stop_only_for_the_url_restarting():
    """While one replica restarts, its failures do not stop the run; another replica failing does."""
    from fake_replica import http_judge
    from rlaif.data.samples import Sample
    batch = [Sample(f"s{i}", [{"role": "user", "content": "hi"}], "x") for i in range(8)]
    with FakeReplica() as restarting, FakeReplica(mode=500) as broken:
        judge = http_judge([restarting.url, broken.url], min_calls=4, max_outage_wait_s=0.2)
        try:
            judge.server_down(restarting.url, exit_code=-9)  # its supervisor restarts it
            judge.score_sync(batch)  # every judgment goes to the other replica, which fails them
            assert judge.totals["failures"] == 8
            assert judge.stop_reason is not None  # those failures are not the restart's
        finally:
            judge.close()
    with FakeReplica(mode=500) as alone:
        judge = http_judge(alone.url, min_calls=4, max_outage_wait_s=0.2)
        try:
            judge.server_down(alone.url, exit_code=-9)  # the only replica restarts: its failures wait for it
            judge.score_sync(batch)
            assert judge.totals["failures"] == 8 and judge.stop_reason is None
        finally:
            judge.close()
