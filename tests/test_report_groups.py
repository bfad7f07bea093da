"""The report's first tables: grouped as a reader asks (what was trained, did it learn, can the judge be trusted,
what it cost), each fact once."""
import json
import re
import subprocess

from conftest import RLAIF

from rlaif.eval.report import build_html, fact_groups

TRAIN = {"steps": 150, "s_per_step": 0.4, "judge": {"calls": 4800, "failed": 0}, "stopped_early": None,
         "log_history": [{"step": 1, "reward": 0.1}, {"step": 2, "reward": 0.3}]}
SUMMARY = {"judge_audit_agreement": 0.971, "pass_rate_before": 0.07, "pass_rate_after": 0.77, "judge_calls": 6462,
           "judge_failures": 0, "steps": 150, "s_per_step": 0.4, "recipe": "recipes/smoke.yaml", "sampling": {"k": 4},
           "health_warnings": [], "bars_missed": [], "something_new": 3}
RECIPE = {"policy": {"model": "artifacts/tiny/policy"}, "judge": {"model": "artifacts/tiny/judge"},
          "rubric": "says_please"}


def test_each_fact_once_in_the_readers_order():
    groups = fact_groups(TRAIN, SUMMARY, RECIPE)
    assert [t for t, _ in groups] == ["What was trained", "Did it learn", "Can the judge be trusted", "What it cost",
                                      "More"]
    keys = [k for _, rows in groups for k, _ in rows]
    assert len(keys) == len(set(keys))  # judge_failures and s_per_step were listed twice before
    assert dict(groups)["What was trained"] == [["recipe", "recipes/smoke.yaml"], ["policy", "artifacts/tiny/policy"],
                                                ["judge", "artifacts/tiny/judge"], ["rubric", "says_please"]]
    cost = dict(dict(groups)["What it cost"])
    assert cost["judge_calls"] == 6462 and cost["judge_calls_in_training"] == 4800 and cost["steps"] == 150
    assert dict(groups)["More"] == [["something_new", 3]]  # a key no group knows is shown, not lost


def test_the_report_opens_with_the_groups_and_shows_a_rescore(tmp_path):
    (tmp_path / "train_summary.json").write_text(json.dumps(TRAIN))
    (tmp_path / "summary.json").write_text(json.dumps(SUMMARY))
    (tmp_path / "recipe.resolved.json").write_text(json.dumps(RECIPE))
    steps = [{"step": s, "samples": 8, "other_failures": 0, "train_pass_rate": p, "other_pass_rate": p - 0.1,
              "agreement": 0.9, "train_mean_reward": p, "other_mean_reward": p} for s, p in [(1, 0.2), (2, 0.8)]]
    part = {"steps": [1, 1], "samples": 8, "train_pass_rate": 0.2, "other_pass_rate": 0.1, "agreement": 0.9}
    (tmp_path / "rescore" / "early").mkdir(parents=True)
    (tmp_path / "rescore" / "early" / "rescore.json").write_text(json.dumps({"steps": steps, "summary": {
        "other_judge": "artifacts/tiny/judge_early", "samples": 16, "agreement": 0.9,
        "before_after": {"first": part, "last": part | {"steps": [2, 2]}}}}))
    heads = re.findall(r"<h2>(.*?)</h2>", build_html(tmp_path))
    assert heads[:4] == ["What was trained", "Did it learn", "Can the judge be trusted", "What it cost"]
    assert "Re-scored by another judge: artifacts/tiny/judge_early (16 samples, agreement 0.9)" in heads


def test_the_report_names_the_ranks_whose_judgment_logs_it_did_not_find(tmp_path, capsys):
    """Four processes wrote logs; rank 2's stayed on another node: the report says so, on screen and in the page."""
    (tmp_path / "train_summary.json").write_text(json.dumps(TRAIN | {"world_size": 4}))
    row = {"step": 1, "sample_id": "a#0", "completion": "hi please", "criterion": "says_please", "score": 0.9,
           "reward": 0.9}
    for name in ("judgments.jsonl", "judgments.rank1.jsonl", "judgments.rank3.jsonl"):
        (tmp_path / name).write_text(json.dumps(row) + "\n")
    r = subprocess.run(RLAIF + ["report", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    said = r.stdout + r.stderr
    assert "judgments.rank2.jsonl" in said and "1 of 4" in said
    page = (tmp_path / "report.html").read_text()
    assert "judgments.rank2.jsonl" in page
    (tmp_path / "judgments.rank2.jsonl").write_text(json.dumps(row) + "\n")  # every rank's log: nothing to say
    r = subprocess.run(RLAIF + ["report", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert "not in" not in r.stdout + r.stderr and "judgment logs are not" not in (tmp_path / "report.html").read_text()
