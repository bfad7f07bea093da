import asyncio
import time

from rlaif.judge.http_client import ClientSettings, RateLimiter, estimate_tokens


def test_rate_limiter_spaces_requests():
    async def run():
        lim = RateLimiter(rate=20.0, capacity=1.0)
        t0 = time.monotonic()
        for _ in range(6):
            await lim.acquire()
        return time.monotonic() - t0
    assert asyncio.run(run()) >= 5 / 20 * 0.9  # the first is free, the next five wait 1/20 s each


def test_settings_accept_one_or_several_urls():
    assert ClientSettings("http://a:1/", "m").urls == ["http://a:1"]
    assert ClientSettings(["http://a:1", "http://b:2/"], "m").urls == ["http://a:1", "http://b:2"]
    assert estimate_tokens([{"role": "user", "content": "x" * 400}], 10) == 110
