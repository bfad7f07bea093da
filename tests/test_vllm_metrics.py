"""The prefix-cache meter reads vLLM's /metrics at most every min_interval_s (a read costs ~0.1 s of a step)."""
import asyncio
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from rlaif.judge.vllm_metrics import PrefixCacheMeter, kv_block_size


def metrics_server(counters: dict):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            if "hold" in counters:  # answer only once the test lets it
                counters["hold"].wait()
            counters["reads"] += 1
            body = (f'vllm:prefix_cache_queries_total{{engine="0",model_name="judge"}} {counters["q"]}\n'
                    f'vllm:prefix_cache_hits_total{{engine="0",model_name="judge"}} {counters["h"]}\n').encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_meter_reads_at_most_every_interval_and_keeps_the_last_rate():
    c = {"reads": 0, "q": 100.0, "h": 80.0}
    srv = metrics_server(c)
    url = f"http://127.0.0.1:{srv.server_port}"

    async def go():
        m = PrefixCacheMeter([url], min_interval_s=3600)
        first = await m.rate()
        c["q"], c["h"] = 200.0, 100.0
        again = [await m.rate() for _ in range(5)]
        m.min_interval_s = 0.0
        fresh = await m.rate()
        return first, again, fresh
    try:
        first, again, fresh = asyncio.run(go())
    finally:
        srv.shutdown()
    assert first == 0.8 and again == [0.8] * 5  # the last rate, no new reads
    assert fresh == 0.2  # (100 - 80) / (200 - 100): the rate since the last reading
    assert c["reads"] == 2


def test_latest_never_waits_for_a_slow_metrics_endpoint():
    """The endpoint answers only when the test lets it: `latest()` returns before that (it never waits for the
    reading), and the reading, finished in the background meanwhile, is what the next call logs."""
    hold = threading.Event()
    c = {"reads": 0, "q": 100.0, "h": 80.0, "hold": hold}
    srv = metrics_server(c)
    safety = threading.Timer(60, hold.set)  # only a latest() that waits for the reply would need it
    safety.start()

    async def go():
        m = PrefixCacheMeter([f"http://127.0.0.1:{srv.server_port}"], min_interval_s=3600)
        first = m.latest()  # starts the reading, returns at once
        answered_first = hold.is_set()
        hold.set()  # the endpoint answers now: the trainer's optimisation step, say
        await asyncio.wait_for(m._task, 30)
        return first, answered_first, m.latest(), m.readings
    try:
        first, answered_first, later, readings = asyncio.run(go())
    finally:
        safety.cancel()
        srv.shutdown()
    assert first is None and not answered_first  # nothing measured yet, and the reply was not waited for
    assert later == 0.8 and readings == 1 and c["reads"] == 1


def test_meter_without_counters_says_none():
    async def go():
        return await PrefixCacheMeter(["http://127.0.0.1:9"], min_interval_s=0).rate()
    assert asyncio.run(go()) is None


@pytest.mark.integration
def test_kv_block_size_is_read_from_the_real_server(judge_url):
    """The benchmark's prefix-cache ceiling needs the block size; the smoke recipe serves with 32-token blocks."""
    assert asyncio.run(kv_block_size(judge_url)) == 32
    assert asyncio.run(kv_block_size("http://127.0.0.1:9")) is None  # nothing listens: None, not an exception
