"""Several reward sources in one real GRPO + LoRA run: the judge on the real vLLM server, a verifiable rule and a
Python function, combined into one reward (their weighted sum, or gated); each source's numbers in the log, its
lines in the judgment log, its curve in the report, its pass rates before and after in `rlaif eval`."""
import json
import subprocess

import pytest
from conftest import RLAIF

pytestmark = pytest.mark.integration

SOURCES = [{"kind": "judge", "name": "polite", "weight": 1.0},
           {"kind": "verifiable", "name": "topic", "check": "reference_contained", "field": "topic", "weight": 0.5},
           {"kind": "python", "name": "named", "function": "tests.fixtures.reward_functions:topic_named",
            "weight": 0.25}]


def run(judge_url, out, sources, *extra):
    cmd = RLAIF + ["train", "recipes/smoke.yaml", "--set", f"judge.base_url={judge_url}", "--set", f"output_dir={out}",
                   "--set", f"rewards={json.dumps(sources)}", "--set", "grpo.max_steps=3", "--set", "grpo.logging_steps=1",
                   "--set", "grpo.save_strategy=no", "--set", "eval.every_steps=null", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "train_summary.json").read_text()), r.stderr


def test_three_sources_in_one_run(judge_url, tiny, tmp_path):
    out = tmp_path / "run"
    summary, err = run(judge_url, out, SOURCES)
    logged = [h for h in summary["log_history"] if "reward" in h]
    for name in ("polite", "topic", "named"):
        assert {f"reward/{name}/mean", f"reward/{name}/pass_rate", f"reward/{name}/fail_rate"} <= set(logged[0]), \
            sorted(logged[0])
    # one reward function for TRL, the weighted sum of the three: with every sample scored, the mean reward is
    # the weighted sum of the sources' means
    h = logged[-1]
    assert h["reward/polite/fail_rate"] == 0.0 and "rewards/combined/mean" in h
    assert h["reward"] == pytest.approx(h["reward/polite/mean"] + 0.5 * h["reward/topic/mean"]
                                        + 0.25 * h["reward/named/mean"], abs=1e-4)
    assert h["reward/topic/mean"] == pytest.approx(h["reward/named/mean"])  # the same rule, two ways
    assert set(summary["rewards"]) == {"combined"}
    assert set(summary["rewards"]["combined"]["sources"]) == {"polite", "topic", "named"}
    assert summary["judge"] == summary["rewards"]["combined"]["sources"]["polite"] and summary["judge"]["calls"] > 0
    rows = [json.loads(x) for x in (out / "judgments.jsonl").read_text().splitlines()]
    assert {r["source"] for r in rows} == {"polite", "topic", "named"}
    assert {r["criterion"] for r in rows} == {"says_please", "verifiable:reference_contained",
                                              "python:tests.fixtures.reward_functions:topic_named"}
    lines = " ".join(err.split())  # the console wraps long lines
    assert "polite pass" in lines and "topic pass" in lines  # each source's pass rate in the progress lines
    report = subprocess.run(RLAIF + ["report", str(out)], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0 and "Reward per source" in (out / "report.html").read_text()
    # before and after, per source, from `rlaif eval`
    ev = subprocess.run(RLAIF + ["eval", "recipes/smoke.yaml", "--set", f"judge.base_url={judge_url}",
                                 "--set", f"rewards={json.dumps(SOURCES)}", "--set", "eval.max_prompts=8",
                                 "--adapter", str(out / "adapter"), "--output", str(tmp_path / "eval.json")],
                        capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-2000:]
    res = json.loads((tmp_path / "eval.json").read_text())
    for side in ("base", "adapter"):
        assert set(res[side]["sources"]) == {"polite", "topic", "named"}
        assert res[side]["sources"]["topic"]["pass_rate"] == res[side]["sources"]["named"]["pass_rate"]
        assert 0.0 <= res[side]["all_sources_pass_rate"] <= 1.0
    assert "source topic pass rate" in ev.stdout and "all sources pass" in ev.stdout


def test_an_essential_source_gates_the_reward(judge_url, tiny, tmp_path):
    gated = [SOURCES[0], SOURCES[1] | {"essential": True}]
    summary, _ = run(judge_url, tmp_path / "run", gated)
    h = [h for h in summary["log_history"] if "reward" in h][-1]
    assert "rewards/combined/mean" in h and "reward/gated_rate" in h  # one reward function for TRL, gated
    assert {"reward/polite/mean", "reward/topic/mean"} <= set(h)
    # a sample without its topic gets 0: the share gated is the share that missed the topic
    assert h["reward/gated_rate"] == pytest.approx(1 - h["reward/topic/pass_rate"], abs=1e-6)
    assert set(summary["rewards"]["combined"]["sources"]) == {"polite", "topic"} and summary["judge"]["calls"] > 0


def test_a_verifiable_field_the_data_lacks_stops_training_before_it_starts(tiny, tmp_path):
    bad = [SOURCES[0], {"kind": "verifiable", "name": "exact", "check": "exact_match"}]
    r = subprocess.run(RLAIF + ["train", "recipes/smoke.yaml", "--set", f"rewards={json.dumps(bad)}",
                                "--set", f"output_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "rewards[1].field:" in r.stderr and "has no 'reference_answer'" in r.stderr
    assert "Traceback" not in r.stderr and "starting the vLLM judge server" not in r.stderr
