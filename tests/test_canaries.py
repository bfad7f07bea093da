"""Live canaries: labelled samples judged beside every batch, never rewarded. Against a stand-in judge whose
answers are known (right, then swapped for one that is wrong half the time), and, in the integration test, a
real training run whose judge server is swapped mid-run for the policy checkpoint served under the judge's name."""
import asyncio
import json
import os
import re
import subprocess
import sys
import time

import pytest

from rlaif.config.judge import CanarySpec
from rlaif.config.recipe import load_recipe
from rlaif.config.rubric import load_rubric
from rlaif.errors import UserError
from rlaif.eval.health import check
from rlaif.judge.scorer import Verdict
from rlaif.rewards.canaries import Canaries, load_canaries

LABELS = "artifacts/tiny/data/judge_audit.jsonl"


class StandIn:
    """A judge that answers each canary right, or (once swapped) wrong on every other one."""

    def __init__(self):
        self.rubric = load_rubric("says_please")
        self.swapped = False
        self.gold = {f"canary:{json.loads(ln)['id']}": json.loads(ln)["labels"]["says_please"] for ln in open(LABELS)}
        self.asked = 0

    async def score_samples(self, samples, step=None):
        out = []
        for i, s in enumerate(samples):
            right = not (self.swapped and i % 2 == 0)
            passed = self.gold[s.id] == right
            out.append(Verdict(s.id, float(passed), {"says_please": 0.99 if passed else 0.01}))
        self.asked += len(samples)
        return out


def test_the_alarm_stays_quiet_for_the_same_judge_and_rings_within_two_batches_of_a_swap():
    judge = StandIn()
    c = Canaries(CanarySpec(file=LABELS), judge)
    quiet = [asyncio.run(c.batch(step)) for step in range(1, 11)]
    assert c.baseline == 1.0 and judge.asked == 200 + 10 * 8  # the baseline, then 8 a batch
    assert all(m["judge/canary_accuracy"] == 1.0 and m["judge/canary_alarm"] == 0.0 for m in quiet)
    judge.swapped = True
    after = [asyncio.run(c.batch(step)) for step in range(11, 13)]
    assert after[-1]["judge/canary_alarm"] == 1.0 and "at step 12" in c.alarm
    assert after[-1]["judge/canary_window_accuracy"] == 0.5
    history = [{"step": s, **m} for s, m in enumerate(quiet + after, start=1)]
    (w,) = [w for w in check(history) if w.code == "judge_changed"]
    assert w.step == 12 and "the judge changed under the run" in w.message


def test_canaries_rotate_through_the_file_and_are_marked(tmp_path):
    c = Canaries(CanarySpec(file=LABELS, per_batch=8), StandIn())
    first, second = c.draw(), c.draw()
    assert len({s.id for s, _ in first + second}) == 16 and all(s.id.startswith("canary:") for s, _ in first)


def labels_file(tmp_path, rows):
    f = tmp_path / "canaries.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(f)


def row(i, label):
    return {"id": f"c{i}", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}],
            "labels": {"says_please": label}}


def test_bad_canary_files_are_refused_naming_file_and_field(tmp_path):
    rubric = load_rubric("says_please")
    f = labels_file(tmp_path, [row(i, i % 2 == 0) for i in range(5)])
    with pytest.raises(UserError, match=f"judge.canaries: {f}: 5 sample\\(s\\) labelled .* at least 20"):
        load_canaries(CanarySpec(file=f), rubric)
    f = labels_file(tmp_path, [row(i, True) for i in range(30)] + [row(99, 4)])
    with pytest.raises(UserError, match="sample c99: labels.says_please: a canary needs a true/false label"):
        load_canaries(CanarySpec(file=f), rubric)
    (tmp_path / "broken.jsonl").write_text(json.dumps(row(0, True)) + "\n{not json\n")
    with pytest.raises(UserError, match="broken.jsonl:2: not JSON"):
        load_canaries(CanarySpec(file=str(tmp_path / "broken.jsonl")), rubric)
    with pytest.raises(UserError, match="judge.canaries.file: file not found: nope.jsonl"):
        load_recipe("recipes/smoke.yaml", ["judge.canaries=nope.jsonl"])
    assert load_recipe("recipes/smoke.yaml", [f"judge.canaries={LABELS}"]).judge.canaries.file == LABELS


@pytest.mark.integration
def test_a_judge_swapped_mid_run_is_flagged_and_stops_the_run(judge_url, tmp_path):
    """Training against a proxy in front of the tiny judge; after step 3 the proxy sends everything to the policy
    checkpoint served as 'judge' (a model that was never a judge). The canaries ring after the swap, never before
    it, and, with stop: true, the run stops with a checkpoint and says why. How soon is statistical (a window of 2
    batches of 8 canaries: most runs here ring within two steps, one CI run took three), so the test asserts the
    order and leaves the run room to ring: it stops there, so the room costs nothing."""
    from faultproxy import FaultProxy

    from rlaif.factory import launch_replicas
    wrong = load_recipe("recipes/smoke.yaml", ["judge.model=artifacts/tiny/policy", "judge.served_model_name=judge",
                                               f"output_dir={tmp_path / 'wrong'}"])
    (server,) = launch_replicas(wrong, tmp_path / "wrong")
    proxy = FaultProxy(judge_url)
    run = tmp_path / "run"
    try:
        p = subprocess.Popen([sys.executable, "-m", "rlaif.cli", "train", "recipes/smoke.yaml",
                              "--set", f"judge.base_url={proxy.url}", "--set", f"output_dir={run}",
                              "--set", f"judge.canaries={{file: {LABELS}, stop: true}}", "--set", "grpo.max_steps=30",
                              "--set", "grpo.save_steps=2", "--set", "eval.every_steps=null", "--set",
                              "grpo.logging_steps=1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        log = run / "judgments.jsonl"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and p.poll() is None:
            if log.exists() and any(json.loads(ln)["step"] >= 3 for ln in log.read_text().splitlines() if ln):
                break
            time.sleep(0.2)
        proxy.upstream = server.base_url  # from now on the "judge" is the policy checkpoint
        swapped_at = max(json.loads(ln)["step"] for ln in log.read_text().splitlines() if ln)
        out, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, 9)
        proxy.close()
        server.stop()
    summary = json.loads((run / "train_summary.json").read_text())
    history = [h for h in summary["log_history"] if "judge/canary_accuracy" in h]
    before = [h for h in history if h["step"] <= swapped_at + 1]
    assert before and all(h["judge/canary_alarm"] == 0.0 for h in before)
    # TRL logs a step's metrics after its update: the batch judged at step N is logged as step N + 1; the alarm
    # names the judged step, as the judgment log does
    rang = min(h["step"] for h in history if h["judge/canary_alarm"] == 1.0)
    judged_at = int(re.search(r"at step (\d+)", summary["stopped_early"]).group(1))
    assert rang == judged_at + 1 and judged_at > swapped_at, (swapped_at, judged_at, history)
    assert summary["steps"] < 30 and "canary accuracy" in summary["stopped_early"]
    health = json.loads((run / "health.json").read_text())
    assert any(w["code"] == "judge_changed" for w in health["warnings"] + health.get("raised_during_training", []))
    assert (run / "canaries.jsonl").exists() and not any(
        json.loads(ln)["sample_id"].startswith("canary:") for ln in (run / "judgments.jsonl").read_text().splitlines())


class Broken(StandIn):
    """A canary judge that raises (a bug, or a judge that cannot be reached as the run starts)."""

    async def score_samples(self, samples, step=None):
        raise RuntimeError("the canary judge broke")


def test_a_canary_that_raises_never_fails_the_training_batch():
    from fake_replica import FakeReplica, http_judge
    from rlaif.data.samples import Sample
    from rlaif.rewards.judge_source import JudgeSource
    with FakeReplica(p_pass=0.9) as rep:
        source = JudgeSource(http_judge(rep.url), canaries=Canaries(CanarySpec(file=LABELS), Broken()))
        try:
            out = asyncio.run(source.score([Sample("s0", [{"role": "user", "content": "hi"}], "x")], step=1))
        finally:
            source.close()
    assert out.rewards == [pytest.approx(0.9)]  # the training batch is judged as if no canary rode with it
    assert out.metrics["judge/canary_errors"] == 1.0 and source.failures.stop_reason is None


class Failing(StandIn):
    """A judge that answers every canary right, or (once broken) fails to judge every other one."""

    async def score_samples(self, samples, step=None):
        out = await super().score_samples(samples, step)
        return [Verdict(v.id, None, {"says_please": None}, {"says_please": "parse: not a label"}, failed=True)
                if self.swapped and i % 2 == 0 else v for i, v in enumerate(out)]


def test_failed_canary_judgments_count_against_the_judge():
    """A swapped judge that mostly fails to answer in form is the change the canaries watch for: its failures
    count as wrong answers, not as no evidence."""
    judge = Failing()
    c = Canaries(CanarySpec(file=LABELS), judge)
    for step in range(1, 4):
        asyncio.run(c.batch(step))
    judge.swapped = True
    after = [asyncio.run(c.batch(step)) for step in range(4, 6)]
    assert after[-1]["judge/canary_window_accuracy"] == 0.5 and after[-1]["judge/canary_alarm"] == 1.0
    assert "8 of 16 canary judgments failed" in c.alarm


class Down(StandIn):
    """A judge that fails every canary while `down`."""

    def __init__(self):
        super().__init__()
        self.down = True

    async def score_samples(self, samples, step=None):
        if not self.down:
            return await super().score_samples(samples, step)
        return [Verdict(s.id, None, {"says_please": None}, {"says_please": "refused"}, failed=True) for s in samples]


def test_a_baseline_the_judge_could_not_answer_is_tried_again_not_raised():
    judge = Down()  # down as the run starts
    c = Canaries(CanarySpec(file=LABELS), judge)
    assert asyncio.run(c.batch(1)) == {"judge/canary_alarm": 0.0} and c.baseline is None
    judge.down = False  # it answers again
    assert asyncio.run(c.batch(2))["judge/canary_baseline"] == 1.0 and c.alarm is None
