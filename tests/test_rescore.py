"""`rlaif judge rescore`: a finished run's completions re-judged by the early judge (the same tiny judge after 100
of its training steps, launched by the command), per step beside the regex; and the inputs it refuses."""
import json
import subprocess
import sys

import pytest

from rlaif.config.recipe import load_recipe
from rlaif.errors import UserError
from rlaif.eval.rescore import agreement_by_step, logged_samples, pick, rescore

RESCORE = [sys.executable, "-m", "rlaif.cli", "judge", "rescore"]


@pytest.mark.integration
def test_a_run_rescored_by_the_early_judge(short_run, tmp_path):
    run, summary, judgments, _ = short_run
    r = subprocess.run(RESCORE + [str(run), "--judge", "recipes/smoke.yaml", "--per-step", "16", "--name", "early",
                                  "--set", "judge.model=artifacts/tiny/judge_early"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((run / "rescore" / "early" / "rescore.json").read_text())
    s, steps = data["summary"], data["steps"]
    logged_steps = sorted({json.loads(ln)["step"] for ln in judgments})
    assert [st["step"] for st in steps] == logged_steps and all(st["samples"] == 16 for st in steps)
    assert s["samples"] == 16 * len(logged_steps) and s["other_failures"] == 0
    assert s["other_judge"] == "artifacts/tiny/judge_early" and s["training_judge"] == "artifacts/tiny/judge"
    # two judges of >= 95% held-out accuracy on the same completions agree on most of them
    assert s["agreement"] >= 0.8
    assert all(0.0 <= st["regex_pass_rate"] <= 1.0 and st["train_agreement_with_regex"] is not None for st in steps)
    assert {"first", "last"} == set(s["before_after"])
    rows = [json.loads(ln) for ln in (run / "rescore" / "early" / "rescore.jsonl").read_text().splitlines()]
    assert len(rows) == s["samples"] and all(0.0 <= row["other_reward"] <= 1.0 for row in rows)
    # the other judge's own judgment log, apart from the run's
    assert len((run / "rescore" / "early" / "judgments.jsonl").read_text().splitlines()) == s["samples"]
    assert "first 1/4" in r.stdout and "judge~regex" in r.stdout
    r = subprocess.run([sys.executable, "-m", "rlaif.cli", "report", str(run)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Re-scored by another judge: artifacts/tiny/judge_early" in (run / "report.html").read_text()


def test_a_run_folder_without_a_judgment_log_is_refused(tmp_path):
    (tmp_path / "recipe.resolved.json").write_text(load_recipe("recipes/smoke.yaml").model_dump_json())
    with pytest.raises(UserError, match="no judgments.jsonl: the run logged no judgments to re-score"):
        logged_samples(tmp_path)
    r = subprocess.run(RESCORE + [str(tmp_path), "--judge", "recipes/smoke.yaml", "--set",
                                  "judge.base_url=http://127.0.0.1:9"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "no judgments.jsonl" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(RESCORE + [str(tmp_path / "nope"), "--judge", "recipes/smoke.yaml"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "run folder not found" in r.stderr


def test_a_log_that_is_not_rlaifs_is_refused_with_its_line(tmp_path):
    (tmp_path / "judgments.jsonl").write_text('{"step": 1, "sample_id": "a#0", "completion": "x", "reward": 1.0}\n'
                                              '{"criterion": "says_please", "score": 0.5}\n')
    with pytest.raises(UserError, match="judgments.jsonl:2: a judgment without step, sample_id or completion"):
        logged_samples(tmp_path)


def test_per_step_sampling_and_agreement_per_step():
    samples = [{"step": s, "sample_id": f"r{i}#0", "completion": "c", "reward": 0.9} for s in (1, 2) for i in range(10)]
    picked = pick(samples, 4)
    assert [p["step"] for p in picked] == [1] * 4 + [2] * 4 and pick(samples, 4) == picked  # seeded
    assert pick(samples, None) == sorted(samples, key=lambda x: (x["step"], x["sample_id"]))
    rows = [{"step": 1, "train_reward": 0.9, "train_pass": True, "other_reward": r, "other_pass": None if r is None else r > 0.5,
             "regex_pass": True} for r in (0.9, 0.2, 0.8, None)]
    (st,) = agreement_by_step(rows)
    assert st["samples"] == 4 and st["other_failures"] == 1 and st["agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert st["train_pass_rate"] == 1.0 and st["other_agreement_with_regex"] == pytest.approx(2 / 3, abs=1e-4)


def test_the_runs_training_data_must_still_hold_its_prompts(tmp_path):
    recipe = load_recipe("recipes/smoke.yaml")
    (tmp_path / "recipe.resolved.json").write_text(recipe.model_dump_json())
    (tmp_path / "judgments.jsonl").write_text(json.dumps({"step": 1, "sample_id": "gone-0001#0", "completion": "x",
                                                          "criterion": "says_please", "reward": 1.0}) + "\n")
    with pytest.raises(UserError, match="1 logged sample\\(s\\) name records not in .*gone-0001"):
        rescore(tmp_path, recipe, "http://127.0.0.1:9")


def judged_run(tmp_path, rewards=None, logs=None):
    """A run folder: the smoke recipe (with `rewards`) resolved, and judgment logs {file name: rows}."""
    over = [f"rewards={json.dumps(rewards)}"] if rewards else []
    (tmp_path / "recipe.resolved.json").write_text(load_recipe("recipes/smoke.yaml", over).model_dump_json())
    for name, rows in (logs or {}).items():
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def row(source, sample_id, completion, reward, step=1, criterion="says_please"):
    return {"step": step, "sample_id": sample_id, "completion": completion, "criterion": criterion,
            "reward": reward, "error": None, "source": source}


def test_a_judge_source_with_its_own_name_is_rescored_and_the_other_sources_are_not(tmp_path):
    """README's composed example names its judge `polite`: its rows are the training judge's; a rule's are not."""
    from scripted_judge import ScriptedJudge
    run = judged_run(tmp_path, [{"kind": "judge", "name": "polite"},
                                {"kind": "verifiable", "name": "topic", "check": "reference_contained",
                                 "field": "topic"}],
                     {"judgments.jsonl": [row("polite", "train-0000#0", "please sit", 1.0),
                                          row("polite", "train-0000#1", "sit", 0.0),
                                          row("topic", "train-0000#0", "please sit", 0.0, criterion="verifiable")]})
    got = logged_samples(run)
    assert sorted((s["sample_id"], s["reward"]) for s in got) == [("train-0000#0", 1.0), ("train-0000#1", 0.0)]
    other = load_recipe("recipes/smoke.yaml", ["judge.mode=verdict", "judge.token_prompts=false"])
    scripted = ScriptedJudge()
    try:
        out = rescore(run, other, scripted.url)
    finally:
        scripted.close()
    assert out["summary"]["samples"] == 2 and out["summary"]["agreement"] == 1.0
    assert out["summary"]["training_source"] == "polite"


def test_a_run_without_a_judge_source_has_nothing_to_rescore(tmp_path):
    run = judged_run(tmp_path, [{"kind": "verifiable", "name": "topic", "check": "reference_contained",
                                 "field": "topic"}],
                     {"judgments.jsonl": [row("topic", "train-0000#0", "x", 1.0, criterion="verifiable")]})
    with pytest.raises(UserError, match="no judge source: its rewards are topic"):
        logged_samples(run)


def test_two_ranks_logging_the_same_step_and_sample_id_stay_two_samples(tmp_path):
    """A GRPO group spread over processes: each rank's batch has its own `P#0` at the same step; each keeps its
    own completion and its own reward."""
    run = judged_run(tmp_path, None, {
        "judgments.jsonl": [row("judge", "train-0000#0", "please sit", 1.0)],
        "judgments.rank1.jsonl": [row("judge", "train-0000#0", "sit", 0.0)]})
    got = sorted((s["rank"], s["completion"], s["reward"]) for s in logged_samples(run))
    assert got == [(0, "please sit", 1.0), (1, "sit", 0.0)]
