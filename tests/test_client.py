import asyncio
import json
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


def test_a_single_call_posts_what_the_sdk_would_and_reads_the_reply():
    """Single calls (verdict mode, or a server without the batch endpoint) are POSTed with the loop's HTTP client,
    not the openai SDK: the body is the SDK's (extra_body merged at the top), the key goes in the Authorization
    header and nowhere else, and the reply reads as the SDK's models do."""
    with FakeReplica(p_pass=0.8) as rep:
        client = JudgeClient(ClientSettings(rep.url, "judge", api_key="sk-secret-123", batch_requests=False))

        async def go():
            try:
                return await client.chat([{"role": "user", "content": "q"}], max_tokens=64, temperature=0.0,
                                         response_format={"type": "json_object"},
                                         extra_body={"chat_template_kwargs": {"enable_thinking": False}})
            finally:
                await client.aclose()
        res = asyncio.run(go())
    assert res.error is None and res.attempts == 1 and res.base_url == rep.url
    msg = res.response.choices[0].message
    assert msg.content == "PASS" and getattr(msg, "reasoning_content", None) is None
    assert res.response.choices[0].logprobs.content[0].top_logprobs[0].token == "PASS"
    (path, headers, body), = rep.seen
    assert path == "/v1/chat/completions"
    assert body == {"model": "judge", "messages": [{"role": "user", "content": "q"}], "max_tokens": 64,
                    "temperature": 0.0, "response_format": {"type": "json_object"},
                    "chat_template_kwargs": {"enable_thinking": False}}
    assert {k.lower(): v for k, v in headers.items()}["authorization"] == "Bearer sk-secret-123"


def test_a_failed_single_call_is_retried_and_its_error_never_holds_the_key():
    """A 5xx to a single call is a failed attempt, retried with backoff; the error names the status and the
    server's words, never the key."""
    with FakeReplica(mode=500, status_text="engine dead") as rep:
        client = JudgeClient(ClientSettings(rep.url, "judge", api_key="sk-secret-123", max_retries=2,
                                            backoff_base_s=0.01, batch_requests=False, breaker_failures=99))

        async def go():
            try:
                return await client.chat([{"role": "user", "content": "q"}], max_tokens=64)
            finally:
                await client.aclose()
        res = asyncio.run(go())
    assert res.response is None and res.attempts == 3 and rep.posts["/v1/chat/completions"] == 3
    assert res.error.startswith("HTTP 500") and "engine dead" in res.error and "sk-secret" not in res.error
    assert client.per_url[rep.url] == {"calls": 3, "failures": 3}


@pytest.mark.parametrize("batch", [False, True])
def test_a_key_that_no_header_can_carry_never_reaches_the_error(batch):
    """A pasted key with a newline: httpx refuses the header and says what it refused. Single calls (verdict mode)
    and batch POSTs (logprob) must both keep the key out of the error, which goes to judgments.jsonl and the report."""
    with FakeReplica() as rep:
        client = JudgeClient(ClientSettings(rep.url, "judge", api_key="sk-secret-123\n", max_retries=0,
                                            batch_requests=batch, breaker_failures=99))

        async def go():
            try:
                if batch:
                    return (await client.chat_many([([{"role": "user", "content": "q"}], {"max_tokens": 1})] * 2))[0]
                return await client.chat([{"role": "user", "content": "q"}], max_tokens=64)
            finally:
                await client.aclose()
        res = asyncio.run(go())
    assert res.response is None and res.error, res
    assert "secret" not in res.error, res.error


@pytest.mark.parametrize("key", ["sk-1\n", " sk-1", "sk\x00-1", "sk-1 "])
def test_a_judge_key_with_whitespace_or_control_characters_is_refused_at_load_without_showing_it(key):
    from rlaif.config.recipe import load_recipe
    from rlaif.errors import UserError

    with pytest.raises(UserError) as e:
        load_recipe("recipes/smoke.yaml", [f"judge.api_key={json.dumps(key)}"])
    assert "judge.api_key" in str(e.value) and "sk" not in str(e.value).replace("judge.api_key", "")


def test_a_reply_copies_and_pickles_like_the_dict_it_wraps():
    import copy
    import pickle

    from rlaif.judge.backend import Reply

    r = Reply({"choices": [{"message": {"content": "PASS"}}]})
    for twin in (copy.copy(r), copy.deepcopy(r), pickle.loads(pickle.dumps(r))):
        assert twin.choices[0].message.content == "PASS"
    assert getattr(Reply({"choices": [{"message": {}}]}).choices[0].message, "content", None) is None
