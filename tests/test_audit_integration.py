"""`rlaif judge audit` against the real tiny judge: two judges (the training prompt and a modified prompt) side
by side on the same labels, pairs for position bias, and thresholds that pass or fail."""
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import RLAIF

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def labels(tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("audit")
    lines = (tiny / "data" / "judge_audit.jsonl").read_text().splitlines()[:80]
    rows = [json.loads(x) for x in lines]
    for r in rows[:20]:  # an overall verdict beside the criterion's, as a Nova sample may carry
        r["labels"]["overall"] = r["labels"]["says_please"]
    prompt = [{"role": "user", "content": "write a short note about the cat"}]
    pairs = [{"id": f"pair-{i}", "messages": prompt, "chosen": good, "rejected": bad} for i, (good, bad) in enumerate([
        ("please feed the cat", "feed the cat"), ("the cat sleeps please", "the cat sleeps"),
        ("please be kind", "be kind today"), ("a cat, please", "a cat pleased me")])]
    f = d / "labels.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in rows + pairs))
    # the same judge checkpoint with a modified prompt: the case study's second, "modified but aligned" judge
    other = yaml.safe_load(Path("recipes/smoke.yaml").read_text())
    other["rubric"] = {"name": "says_please_v2", "criteria": [
        {"name": "says_please", "question": "Is the word please used in the response?"}]}
    other_file = d / "modified_prompt.yaml"
    other_file.write_text(yaml.safe_dump(other))
    return d, f, other_file


def audit(judge_url, labels, *extra):
    d, f, other = labels
    out = d / f"audit{len(extra)}.json"
    r = subprocess.run(RLAIF + ["judge", "audit", "recipes/smoke.yaml", "--labels", str(f), "--judge", str(other),
                                "--set", f"judge.base_url={judge_url}", "--set", "audit.consistency_samples=10",
                                "--output", str(out), *extra], capture_output=True, text=True, timeout=600)
    return r, (json.loads(out.read_text()) if out.exists() else None)


def test_audit_two_judges_side_by_side(judge_url, labels):
    r, res = audit(judge_url, labels, "--set", "audit.min_accuracy=0.9")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert res["n_samples"] == 80 and res["n_pairs"] == 4 and len(res["judges"]) == 2
    main, other = res["judges"]
    assert main["rubric"] == "says_please" and other["rubric"] == "says_please_v2"
    c = main["criteria"]["says_please"]
    assert c["n"] == 80 and c["accuracy"] >= 0.9 and c["kappa"] >= 0.8 and c["spearman"] > 0.7
    assert sum(c["confusion"].values()) == 80
    assert main["criteria"]["overall"]["n"] == 20
    assert main["consistency"]["n_samples"] == 10 and main["consistency"]["mean_spread"] < 0.01  # temperature 0
    assert main["length_bias"]["judge_vs_length"] is not None
    assert main["pairs"]["n_pairs"] + main["pairs"]["failed_pairs"] == 4
    assert 0 <= main["pairs"]["position_flip_rate"] <= 1
    assert main["judge_calls"]["failures"] == 0 and main["passed"] is True
    # the modified prompt is measured, not assumed: its own numbers on the same labels
    assert other["criteria"]["says_please"]["n"] == 80
    assert "judge audit on" in r.stdout and "modified_prompt.yaml" in r.stdout and "PASS" in r.stdout


def test_audit_fails_below_the_recipes_thresholds(judge_url, labels):
    r, res = audit(judge_url, labels, "--set", "audit.min_accuracy=0.999", "--set", "audit.min_kappa=0.999")
    assert r.returncode == 1 and res["passed"] is False
    assert "FAIL judge (recipes/smoke.yaml): says_please accuracy = " in r.stdout and "(needs >= 0.999)" in r.stdout
