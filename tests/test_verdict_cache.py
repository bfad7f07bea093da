"""The verdict cache over a real HTTP judge (a loopback fake replica, tests/fake_replica.py): a batch's identical
requests are judged once and the rest count as cache hits, a request another call is judging is waited for, not
sent again, and a failed judgment is not kept, so the next call asks again. Counts, not durations."""
import asyncio
import json

from fake_replica import FakeReplica
from rlaif.config.checks import Length
from rlaif.config.rubric import load_rubric
from rlaif.data.samples import Sample
from rlaif.judge.http_client import ClientSettings, JudgeClient
from rlaif.judge.scorer import FailureSettings, Judge

PROMPT = [{"role": "user", "content": "Say hi."}]


def judge(url: str, log=None) -> Judge:
    client = JudgeClient(ClientSettings(url, "judge", max_retries=0, backoff_base_s=0.01))
    return Judge(load_rubric("says_please"), client, on_failure=FailureSettings(min_calls=1000),
                 judgment_log=log, cache=True, checks=[Length(kind="length", max_chars=1000)])


def run(j: Judge, *batches: list[Sample]) -> list:
    async def go():
        try:
            return await asyncio.gather(*[j.score_samples(b) for b in batches])
        finally:
            await j.backend.aclose()
    return asyncio.run(go())


def test_identical_requests_of_a_batch_are_judged_once_and_count_as_hits(tmp_path):
    samples = [Sample("a", PROMPT, "Hi, please."), Sample("b", PROMPT, "Hello."), Sample("c", PROMPT, "Hi, please.")]
    with FakeReplica(p_pass=0.75) as rep:
        j = judge(rep.url, tmp_path / "j.jsonl")
        (verdicts,) = run(j, samples)
    assert rep.conversations == 2
    assert j.totals["calls"] == 2 and j.totals["cache_hits"] == 1
    assert [v.reward for v in verdicts] == [verdicts[0].reward, verdicts[1].reward, verdicts[0].reward]
    assert verdicts[0].reward is not None and abs(verdicts[0].reward - 0.75) < 1e-9
    rows = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    judged = {r["sample_id"]: r for r in rows if not r["criterion"].startswith("check:")}
    assert [judged[k]["cached"] for k in "abc"] == [False, False, True]
    assert judged["c"]["attempts"] == 0 and judged["a"]["attempts"] == 1
    # the log's lines keep their fields and order (readers, `rlaif report`, people's own scripts)
    assert list(judged["a"]) == ["time", "step", "sample_id", "completion_sha1", "completion", "criterion", "score",
                                 "rationale", "latency_s", "attempts", "error", "cached", "neutralised", "reward"]
    checks = [r for r in rows if r["criterion"].startswith("check:")]
    assert all(list(r) == ["time", "step", "sample_id", "completion_sha1", "completion", "criterion", "score",
                           "rationale", "error", "reward"] for r in checks)


def test_a_request_another_call_is_judging_is_waited_for_not_sent_again():
    with FakeReplica(p_pass=0.6) as rep:
        j = judge(rep.url)
        first, second = run(j, [Sample("a", PROMPT, "Hi, please.")], [Sample("b", PROMPT, "Hi, please.")])
    assert rep.conversations == 1 and j.totals["calls"] == 1 and j.totals["cache_hits"] == 1
    assert first[0].reward == second[0].reward and first[0].reward is not None


def test_a_failed_judgment_is_not_kept_and_the_next_call_asks_again():
    samples = [Sample("a", PROMPT, "Hi, please."), Sample("b", PROMPT, "Hi, please.")]
    with FakeReplica(mode=500) as rep:
        j = judge(rep.url)
        (failed,) = run(j, samples)
        rep.mode = "ok"
        (judged,) = run(j, samples)
    assert [v.failed for v in failed] == [True, True] and [v.failed for v in judged] == [False, False]
    assert rep.chat_posts() == 2 and rep.conversations == 1  # one failed POST, then one answered conversation
    assert j.totals["cache_hits"] == 2 and j.totals["failures"] == 1 and j.totals["calls"] == 2
