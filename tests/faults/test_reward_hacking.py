"""A judge that rewards a forbidden phrase, and a recipe's must-not check that keeps its reward at zero.

The tiny judge rewards saying "please". Here "please" is declared forbidden (a `regex_must_not` gate), as a team
would forbid a phrase their judge is known to like: the policy trains against that judge, and no completion with
the phrase is ever rewarded, so the policy does not learn it.
"""
import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration
RLAIF = [sys.executable, "-m", "rlaif.cli"]
FORBIDDEN = re.compile(r"(?i)please")


def test_a_must_not_check_keeps_the_forbidden_phrase_at_zero_reward(tiny, judge_url, tmp_path):
    out = tmp_path / "run"
    checks = json.dumps([{"kind": "regex_must_not", "name": "no_please", "pattern": "(?i)please"}])
    r = subprocess.run(RLAIF + ["train", "recipes/smoke.yaml", "--set", f"judge.base_url={judge_url}",
                                "--set", f"output_dir={out}", "--set", f"checks={checks}", "--set", "grpo.max_steps=30",
                                "--set", "grpo.logging_steps=1", "--set", "grpo.save_strategy=no",
                                "--set", "eval.every_steps=null"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(ln) for ln in (out / "judgments.jsonl").read_text().splitlines()]
    by_sample = {}
    for row in rows:
        by_sample.setdefault((row["step"], row["sample_id"]), []).append(row)
    forbidden = [rs for rs in by_sample.values() if FORBIDDEN.search(rs[0]["completion"])]
    allowed = [rs for rs in by_sample.values() if not FORBIDDEN.search(rs[0]["completion"])]
    assert forbidden, "the judge's favourite phrase should come up while the policy explores"
    for rs in forbidden:
        assert all(x["reward"] == 0.0 for x in rs)  # zero, every time
        assert [x["criterion"] for x in rs] == ["check:no_please"]  # decided by the rule; the judge never asked
    assert any(x["reward"] > 0 for rs in allowed for x in rs)  # the rest is judged as usual
    # what the judge likes is not learnt: the phrase is no more frequent at the end than at the start
    steps = sorted({k[0] for k in by_sample})

    def rate(sel):
        keys = [k for k in by_sample if k[0] in sel]
        return sum(bool(FORBIDDEN.search(by_sample[k][0]["completion"])) for k in keys) / len(keys)
    first, last = rate(steps[:5]), rate(steps[-5:])
    print(f"forbidden-phrase completions: {len(forbidden)} of {len(by_sample)}, all rewarded 0; "
          f"rate in the first 5 steps {first:.3f}, in the last 5 {last:.3f}")
    assert last <= first + 0.05, (first, last)
    summary = json.loads((out / "train_summary.json").read_text())
    gated = [h["checks/gated_rate"] for h in summary["log_history"] if "checks/gated_rate" in h]
    assert gated and max(gated) > 0  # the metrics show the rule at work
