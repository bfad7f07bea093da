import asyncio
import time

import pytest

from fake_replica import FakeReplica, one_token_batch
from rlaif.judge.http_client import ClientSettings, JudgeClient, RateLimiter, estimate_tokens


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


@pytest.mark.parametrize("batch", [True, False])
def test_a_409_is_the_callers_mistake_and_not_retried(batch):
    """The docs promise retries on 408, 429 and 5xx only: a 409 (conflict) would answer the same again."""
    with FakeReplica(mode=409, status_text="conflict") as rep:
        client = JudgeClient(ClientSettings(rep.url, "judge", max_retries=3, backoff_base_s=0.01,
                                            batch_requests=batch))
        (res,) = one_token_batch(client, 1)
    assert res.response is None and "409" in res.error
    assert res.attempts == 1 and rep.chat_posts() == 1
