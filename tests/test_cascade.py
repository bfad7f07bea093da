"""The judge cascade: only the verdicts the first judge is unsure of (or failed) go to the larger judge, whose
verdicts replace them, unless it failed (then the first judge's stand, counted); what it reports. Stand-in judges with known answers; the real two-judge measurement is
benchmarks/cascade.py (docs/judge-trust.md)."""
import asyncio

import pytest

from fake_replica import http_judge
from rlaif.config.recipe import load_recipe
from rlaif.data.samples import Sample
from rlaif.errors import UserError
from rlaif.judge.cascade import Cascade, unsure
from rlaif.judge.scorer import Verdict


class Large:
    def __init__(self):
        self.asked: list[str] = []
        self.backend = type("B", (), {"name": "large"})()

    async def score_samples(self, samples, step=None):
        self.asked += [s.id for s in samples]
        return [Verdict(s.id, 1.0, {"says_please": 1.0}) for s in samples]


def v(sid, p, **kw):
    return Verdict(sid, p, {"says_please": p}, **kw)


def test_only_the_unsure_and_the_failed_go_up_and_their_verdicts_are_replaced():
    large = Large()
    c = Cascade(large, band=0.3)
    samples = [Sample(f"s{i}", [{"role": "user", "content": "hi"}], "x") for i in range(6)]
    small = [v("s0", 0.95), v("s1", 0.03), v("s2", 0.6), v("s3", 0.25),
             Verdict("s4", None, {"says_please": None}, failed=True), Verdict("s5", 0.0, {}, gated=True)]
    merged, m = asyncio.run(c.refine(samples, small, step=3))
    assert large.asked == ["s2", "s3", "s4"]  # |p - 0.5| < 0.3, and the failed one; not the gated one
    assert [x.reward for x in merged] == [0.95, 0.03, 1.0, 1.0, 1.0, 0.0]
    assert m["judge/cascade_escalation_rate"] == 0.5 and m["judge/cascade_large_calls_saved"] == 3.0
    assert m["judge/cascade_agreement"] == 0.5  # s2 (0.6) agreed with the large judge's PASS, s3 (0.25) did not
    assert c.summary() | {"large_judge": "large"} == {"large_judge": "large", "band": 0.3, "samples": 6,
                                                       "escalated": 3, "escalation_rate": 0.5,
                                                       "large_calls_saved": 3, "agreement_on_escalated": 0.5,
                                                       "large_failed": 0, "kept_small": 0, "fail_rate": 0.0}
    assert m["judge/cascade_fail_rate"] == 0.0


@pytest.mark.parametrize("p, band, up", [(0.5, 0.01, True), (0.79, 0.3, True), (0.8, 0.3, False),
                                         (0.2, 0.3, False), (0.999, 0.5, True)])
def test_the_band_is_around_one_half(p, band, up):
    assert unsure(v("s", p), band) is up


def test_the_cascade_recipe_block_is_checked():
    r = load_recipe("recipes/smoke.yaml", ["judge.cascade={judge: {model: artifacts/tiny/judge}, band: 0.2}"])
    assert r.judge.cascade.judge.model == "artifacts/tiny/judge" and r.judge.cascade.band == 0.2
    with pytest.raises(UserError, match="judge.cascade.judge.model: model folder not found: artifacts/tiny/nope"):
        load_recipe("recipes/smoke.yaml", ["judge.cascade={judge: {model: artifacts/tiny/nope}}"])
    with pytest.raises(UserError, match="band"):
        load_recipe("recipes/smoke.yaml", ["judge.cascade={judge: {model: artifacts/tiny/judge}, band: 0.7}"])


@pytest.mark.integration
def test_a_training_run_with_a_cascade_logs_and_counts_it(judge_url, tmp_path):
    """Wiring, against the real server: the larger judge here is the same tiny judge reached by URL, so every
    escalated verdict is confirmed; band 0.5 sends every judged sample up (none is exactly 0 or 1), so the test
    cannot pass without escalations. The run logs the cascade's metrics per step and counts it in its summary."""
    import json
    import subprocess
    import sys
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "rlaif.cli", "train", "recipes/smoke.yaml",
                        "--set", f"judge.base_url={judge_url}", "--set", f"output_dir={run}",
                        "--set", f"judge.cascade={{judge: {{model: artifacts/tiny/judge, base_url: {judge_url}}}, "
                                 "band: 0.5}", "--set", "grpo.max_steps=3", "--set", "grpo.logging_steps=1",
                        "--set", "grpo.save_strategy=no", "--set", "eval.every_steps=null"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "train_summary.json").read_text())
    c = summary["judge"]["cascade"]
    assert c["samples"] == 3 * 32 and c["band"] == 0.5 and 0 < c["escalated"] <= c["samples"]
    assert c["large_calls_saved"] == c["samples"] - c["escalated"]
    assert c["large_failed"] == 0 and c["fail_rate"] == 0.0  # the large judge answered every escalation
    assert c["agreement_on_escalated"] is not None and c["agreement_on_escalated"] > 0.9  # the same judge
    logs = [h for h in summary["log_history"] if "judge/cascade_escalation_rate" in h]
    assert len(logs) == 3 and all(h["judge/cascade_fail_rate"] == 0.0 for h in logs)
    escalated = (run / "cascade.jsonl").read_text().splitlines()
    assert len(escalated) == c["escalated"]
    assert "judge cascade: verdicts of 'judge' within 0.5 of 0.5 go to 'judge'" in " ".join(r.stderr.split())


def samples(n: int) -> list[Sample]:
    return [Sample(f"s{i}", [{"role": "user", "content": "ask nicely"}], f"answer {i}") for i in range(n)]


def test_a_large_judge_that_cannot_be_reached_keeps_every_small_verdict_and_is_counted():
    from rlaif.judge.server import free_port
    large = http_judge(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    c = Cascade(large, band=0.3)
    small = [v(f"s{i}", p) for i, p in enumerate([0.55, 0.45, 0.95, 0.6])]
    try:
        merged, m = asyncio.run(c.refine(samples(4), small, step=1))
    finally:
        large.close()
    assert [x.reward for x in merged] == [0.55, 0.45, 0.95, 0.6]  # the small judge's, not the failure's None
    assert not any(x.failed for x in merged)
    assert m["judge/cascade_fail_rate"] == 1.0 and m["judge/cascade_escalation_rate"] == 0.75
    s = c.summary()
    assert s["escalated"] == 3 and s["large_failed"] == 3 and s["kept_small"] == 3
    assert s["agreement_on_escalated"] is None  # nothing was compared


def test_the_large_judges_failures_stop_the_run_and_the_metrics_are_the_rewards_used():
    """The rewards used are the merged verdicts, so the health signals are too; and a large judge that keeps
    failing stops the run as the first judge's failures would."""
    from fake_replica import FakeReplica
    from rlaif.rewards.judge_source import JudgeSource
    with FakeReplica(p_pass=0.55) as unsure_small, FakeReplica(p_pass=0.1) as large_rep:
        small = http_judge(unsure_small.url)
        large = http_judge(large_rep.url, min_calls=4, max_outage_wait_s=0.5)
        source = JudgeSource(small, cascade=Cascade(large, band=0.3))
        try:
            out = asyncio.run(source.score(samples(4), step=1))
            assert out.rewards == pytest.approx([0.1] * 4)  # every verdict was unsure: the large judge's
            assert out.metrics["judge/positive_rate"] == 0.0 and out.metrics["judge/reward_max"] == pytest.approx(0.1)
            assert out.metrics["judge/says_please/pass_rate"] == 0.0
            assert source.failures.stop_reason is None
            large_rep.mode = 500  # the large judge breaks
            for step in range(2, 8):
                out = asyncio.run(source.score(samples(4), step=step))
                assert out.rewards == pytest.approx([0.55] * 4)  # the small judge's verdicts stand
                assert out.metrics["judge/cascade_fail_rate"] == 1.0
                if source.failures.stop_reason:
                    break
            assert source.failures.stop_reason.startswith("the cascade's larger judge: judge failure rate")
            assert small.failures.stop_reason is None and step <= 4  # its own window, not the first judge's
        finally:
            source.close()
