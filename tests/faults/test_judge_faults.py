"""Judge faults through a misbehaving proxy in front of the real vLLM server: fallbacks, exact counters, no
exception into the trainer, and a run that stops with a clear message when too many judgments fail."""
import asyncio
import json
import subprocess
import sys

import pytest
from faultproxy import FaultProxy

from rlaif.factory import judge_reward

pytestmark = pytest.mark.integration
USER = [{"role": "user", "content": "write a short note about the cat"}]


@pytest.fixture()
def proxy(judge_url):
    p = FaultProxy(judge_url)
    yield p
    p.close()


def reward_via(proxy, smoke_recipe, **judge):
    recipe = smoke_recipe.model_copy(deep=True)
    recipe.judge.cache = False
    judge.setdefault("batch_requests", False)  # these count faults per request; the batch path has its own test
    for k, v in judge.items():
        setattr(recipe.judge, k, v)
    r = judge_reward(recipe, proxy.url, None)  # the judge as TRL's reward function
    r.source.judge.backend.settings.backoff_base_s = 0.01
    return r


def call(reward, texts):
    """The reward exactly as TRL calls it, on a fresh loop."""
    return asyncio.run(reward(prompts=[USER] * len(texts),
                              completions=[[{"role": "assistant", "content": t}] for t in texts]))


def test_429_and_5xx_bursts_are_retried_and_counted(proxy, smoke_recipe):
    proxy.plan(["status:429", "status:503", "status:500", "status:502"])
    r = reward_via(proxy, smoke_recipe, max_retries=3)
    out = call(r, [" please a", "the b", " please c", "the d"])
    assert None not in out
    assert r.source.judge.totals["retries"] == 4 and r.source.judge.totals["failures"] == 0 and r.source.judge.totals["calls"] == 4


def test_a_server_error_past_the_retry_budget_gets_the_fallback(proxy, smoke_recipe):
    proxy.plan([], default="status:503")
    # the retry budget alone: the circuit breaker (two server errors in a row take a replica out until it answers
    # a probe's request, which this proxy would count) has its own test in test_pool.py
    r = reward_via(proxy, smoke_recipe, max_retries=2, breaker_failures=100)
    assert call(r, ["x", "y"]) == [None, None]
    assert r.source.judge.totals["failures"] == 2 and r.source.judge.totals["retries"] == 4 and proxy.served["status"] == 6
    r = reward_via(proxy, smoke_recipe, max_retries=0, on_failure="neutral")
    assert call(r, ["x"]) == [0.5]


def test_a_judge_slower_than_the_timeout_is_a_counted_failure(proxy, smoke_recipe):
    proxy.plan(["slow:3", "pass"])
    r = reward_via(proxy, smoke_recipe, timeout_s=1.0, max_retries=1)
    out = call(r, [" please sit"])
    assert out[0] is not None  # the retry went through
    assert r.source.judge.totals["retries"] == 1 and r.source.judge.totals["failures"] == 0
    proxy.plan([], default="slow:3")
    r = reward_via(proxy, smoke_recipe, timeout_s=1.0, max_retries=0)
    assert call(r, ["x"]) == [None] and r.source.judge.totals["failures"] == 1


def test_a_connection_dropped_mid_batch_is_retried(proxy, smoke_recipe):
    proxy.plan(["pass", "pass", "drop", "pass", "drop"])
    r = reward_via(proxy, smoke_recipe, max_retries=2)
    out = call(r, [f" please {i}" for i in range(6)])
    assert None not in out and r.source.judge.totals["retries"] == 2 and r.source.judge.totals["failures"] == 0


@pytest.mark.parametrize("fault", ["garbage", "empty", "notjson"])
def test_garbage_and_empty_replies_are_counted_never_raised(proxy, smoke_recipe, fault):
    proxy.plan([fault, fault])
    r = reward_via(proxy, smoke_recipe, max_retries=0)
    out = call(r, ["a", "b", "c"])
    assert out.count(None) == 2 and out.count(None) + sum(x is not None for x in out) == 3
    failed = r.source.judge.totals["parse_failures"] + r.source.judge.totals["failures"]
    assert failed == 2
    if fault != "notjson":
        assert r.source.judge.totals["parse_failures"] == 2  # a 200 without a usable answer is a parse failure


def test_a_run_stops_with_a_clear_message_past_the_failure_limit(proxy, tmp_path):
    # self-test and the first step pass; then every judge call fails
    proxy.plan(["pass"] * 9, default="status:503")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlaif.cli", "train", "recipes/smoke.yaml", "--set", f"judge.base_url={proxy.url}",
           "--set", f"output_dir={out}", "--set", "grpo.max_steps=6", "--set", "grpo.per_device_train_batch_size=8",
           "--set", "grpo.save_strategy=no", "--set", "judge.max_retries=0", "--set", "judge.max_fail_rate=0.3",
           "--set", "judge.fail_min_calls=16", "--set", "eval.every_steps=null",  # no validation calls at step 0
           "--set", "judge.batch_requests=false",  # the plan counts requests,
           "--set", "judge.canaries=null"]  # so no canaries beside the batches
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1
    assert "judge failure rate" in r.stderr and "max_fail_rate" in r.stderr and "--resume" in r.stderr
    assert "Traceback" not in r.stderr
    s = json.loads((out / "train_summary.json").read_text())
    assert s["steps"] < 6 and s["judge"]["failures"] >= 8
    assert (out / f"checkpoint-{s['steps']}").exists()  # stopped with a checkpoint, nothing lost
    logged = (out / "judgments.jsonl").read_text().splitlines()
    assert len(logged) == s["judge"]["calls"]


def test_a_batched_call_is_retried_as_a_whole(proxy, smoke_recipe):
    proxy.plan(["status:503", "status:429"])
    r = reward_via(proxy, smoke_recipe, max_retries=3, batch_requests=True)
    out = call(r, ["please help", "the cat sat", "please sit", "no"])
    assert None not in out and r.source.judge.backend.batches == 3  # four requests in one POST, sent three times
    assert proxy.served["status"] == 2 and proxy.served["pass"] == 1
    assert r.source.judge.totals["calls"] == 4 and r.source.judge.totals["retries"] == 8 and r.source.judge.totals["failures"] == 0


def test_a_server_without_the_batch_endpoint_gets_single_calls(proxy, smoke_recipe):
    proxy.plan(["status:404", "status:404"])  # neither /v1/completions (token ids) nor /v1/chat/completions/batch
    r = reward_via(proxy, smoke_recipe, max_retries=0, batch_requests=True)
    out = call(r, ["please help", "the cat sat", "please sit"])
    assert None not in out and r.source.judge.totals["failures"] == 0 and r.source.judge.totals["calls"] == 3
    assert r.source.judge.backend.no_batch == {proxy.url} and proxy.served["pass"] == 3  # and it is not asked again
    call(r, ["please go"])
    assert r.source.judge.backend.batches == 1 and proxy.served["pass"] == 4


def test_a_server_without_token_completions_gets_chat_batches(proxy, smoke_recipe):
    proxy.plan(["status:404"])  # /tokenize answers, /v1/completions does not
    r = reward_via(proxy, smoke_recipe, max_retries=0, batch_requests=True)
    out = call(r, ["please help", "the cat sat", "please sit"])
    assert None not in out and r.source.judge.totals["failures"] == 0 and r.source.judge.totals["calls"] == 3
    assert r.source.judge.backend.token_prompts.usable == {proxy.url: False} and not r.source.judge.backend.no_batch
    assert r.source.judge.backend.batches == 1 and proxy.served["pass"] == 1  # the chat batch, in the same attempt
    call(r, ["please go", "go"])
    assert r.source.judge.backend.batches == 2 and proxy.served["pass"] == 2 and proxy.served["status"] == 1


def test_a_server_that_ignores_logprob_token_ids_gets_chat_batches(proxy, smoke_recipe):
    """An older vLLM ignores request fields it does not know: the first token-id reply has no logprobs for the
    label tokens, so rlaif switches that server to the chat batch endpoint instead of scoring a wrong top-k."""
    proxy.drop_fields = {"logprob_token_ids"}
    r = reward_via(proxy, smoke_recipe, max_retries=0, batch_requests=True)
    texts = ["please help", "the cat sat", "please sit"]
    out = call(r, texts)
    assert None not in out and r.source.judge.totals["failures"] == 0 and r.source.judge.totals["calls"] == 3
    assert r.source.judge.backend.token_prompts.usable == {proxy.url: False} and proxy.served["pass"] == 2
    assert r.source.judge.backend.per_url[proxy.url]["calls"] == 3  # the resent batch is not counted twice
    want = call(reward_via(proxy, smoke_recipe, batch_requests=True, token_prompts=False), texts)
    assert out == want
