"""`rlaif reward score`: the recipe's whole reward (every source, combined as in training) on Nova reward-Lambda
samples, outside training. No vLLM server here: rules and Lambdas need none, and a judge is a scripted one."""
import importlib.util
import json
import subprocess
import sys

import pytest
from scripted_judge import ScriptedJudge
from test_nova import HANGING_LAMBDA  # hangs on a sample whose completion is "hang"

from rlaif.cli.main import main

FIXTURES = "tests/fixtures"

# GSM8K-style records: the reference is a worked solution ending in `#### N`, and so is each completion
GSM8K = [
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips "
     "did Natalia sell altogether in April and May?",
     "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72",
     ["In May she sold 48 / 2 = 24 clips, so 48 + 24 = 72 in all.\n#### 72",
      "She sold 48 + 48/2 = 70 clips.\n#### 70",
      "24 in May, 72 in all.\n#### 72.0"]),
    ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she "
     "earn?",
     "Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.\n#### 10",
     ["12 / 60 = 0.2 a minute; 0.2 x 50 = 10.\n#### 10",
      "She earns 12 an hour, so 12 x 50 = 600.\n#### 600",
      "I am not sure how to solve this."]),
    ("James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
     "He writes each friend 3*2=6 pages a week.\nSo he writes 6*2=12 pages every week.\nThat means he writes "
     "12*52=624 pages a year.\n#### 624",
     ["3 x 2 x 2 = 12 pages a week, 12 x 52 = 624.\n#### 624",
      "12 pages a week for 52 weeks is 1,248.\n#### 1,248",
      "#### 624 pages"]),
    ("A company lost 1,250 dollars in the first quarter and gained 500 in the second. What is its balance change?",
     "-1250 + 500 = -750\n#### -750",
     ["It lost 1250 and gained 500: -1,250 + 500 = -750.\n#### -750",
      "1250 - 500 = 750\n#### 750",
      "-750 in all.\n#### -750"]),
]


def gsm8k_samples() -> list[dict]:
    return [{"id": f"gsm-{q}-{k}", "messages": [{"role": "user", "content": question},
                                                 {"role": "assistant", "content": completion}],
             "metadata": {"reference_answer": solution}}
            for q, (question, solution, completions) in enumerate(GSM8K) for k, completion in enumerate(completions)]


def load_module(path):
    spec = importlib.util.spec_from_file_location(f"fixture_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reward_score(inp, out, *sets, timeout=300):
    flags = [x for s in sets for x in ("--set", s)]
    return subprocess.run([sys.executable, "-m", "rlaif.cli", "reward", "score", "recipes/smoke.yaml", "--input",
                           str(inp), "--output", str(out), *flags], capture_output=True, text=True, timeout=timeout)


def responses(path) -> dict:
    return {d["id"]: d for d in map(json.loads, path.read_text().splitlines())}


def test_a_verifiable_reward_agrees_with_a_gsm8k_lambda_written_by_someone_else(tmp_path):
    """The issue's check: `numeric_match` through `rlaif reward score` and an independent GSM8K reward Lambda (in
    the style of AWS's published examples) give every record whose answers end in `#### N` the same reward. The
    recipe's judge is not needed, so no judge server starts; bad lines are named and the rest scored."""
    samples = gsm8k_samples()
    inp = tmp_path / "gsm8k.jsonl"
    lines = [json.dumps(s) for s in samples]
    lines.insert(2, "{not json")
    lines.insert(5, json.dumps({"id": "no-answer", "messages": [{"role": "user", "content": "2+2?"}]}))
    lines.append(json.dumps(samples[0]))  # an id again: a response is keyed by id
    inp.write_text("\n".join(lines) + "\n")
    out, run = tmp_path / "rewards.jsonl", tmp_path / "run"
    r = reward_score(inp, out, "rewards=[{kind: verifiable, name: correct, check: numeric_match}]",
                     f"output_dir={run}")
    assert r.returncode == 0, r.stderr
    assert f"{inp}:3: (line): not valid JSON" in r.stderr and f"{inp}:6: messages: must end with the assistant" \
        in r.stderr and f"{inp}:{len(lines)}: id: 'gsm-0-0' is the id of line 1 too" in r.stderr
    assert "3 input line(s) refused" in r.stderr and "0 sample(s) failed" in r.stderr
    assert not list(run.glob("judge_server*.log"))  # no judge server was started for a rule
    ours = responses(out)
    assert list(ours) == [s["id"] for s in samples]

    theirs = {o["id"]: o for o in load_module(f"{FIXTURES}/gsm8k_reward_lambda.py").lambda_handler(samples, None)}
    for sid, answer in ours.items():
        assert answer["aggregate_reward_score"] == theirs[sid]["aggregate_reward_score"], (sid, answer["rationale"])
        assert answer["metrics_list"] == [{"name": "correct", "value": answer["aggregate_reward_score"],
                                           "type": "Reward"}, {"name": "reward_failed", "value": 0.0, "type": "Metric"}]
    assert sorted({a["aggregate_reward_score"] for a in ours.values()}) == [0.0, 1.0]
    assert sum(a["aggregate_reward_score"] for a in ours.values()) == 7  # right: 2 + 1 + 2 + 2 (72.0, "624 pages")
    assert ours["gsm-0-1"]["rationale"] == "correct 0.000 (70 != 72)"


def test_a_lambda_that_hangs_is_cut_at_its_timeout_and_its_sample_is_reported_failed(tmp_path):
    """A Lambda source that sleeps forever on one sample, timeout_s 2: the command ends (the bound is generous, only
    a real hang crosses it), the other samples are scored, and the hung one is written as failed (no reward), with
    the reason, and counted in the summary line."""
    path = tmp_path / "hangs.py"
    path.write_text(HANGING_LAMBDA)
    inp = tmp_path / "samples.jsonl"
    inp.write_text("".join(json.dumps({"id": f"s{i}", "messages": [{"role": "user", "content": "q"},
                                                                   {"role": "assistant", "content": t}]}) + "\n"
                           for i, t in enumerate(["ok", "hang", "ok"])))
    out = tmp_path / "rewards.jsonl"
    source = f"{{kind: lambda, name: grader, file: {path}, timeout_s: 2, batch_size: 1, bedrock_gateway: false}}"
    r = reward_score(inp, out, f"rewards=[{source}]", f"output_dir={tmp_path / 'run'}", timeout=120)
    assert r.returncode == 0, r.stderr
    got = responses(out)
    assert [got[s]["aggregate_reward_score"] for s in ("s0", "s1", "s2")] == [1.0, None, 1.0]
    assert got["s1"]["failed"] is True and "reward_failed" in [m["name"] for m in got["s1"]["metrics_list"]]
    assert "grader: lambda_handler did not return within reward timeout_s 2" in got["s1"]["rationale"]
    assert "1 sample(s) failed" in r.stderr and "grader on 1 (lambda_handler did not return" in r.stderr
    assert "Traceback" not in r.stderr


def judge_samples() -> list[dict]:
    user = {"role": "user", "content": "Ask for the salt, and say how many grains are in a pinch (#### N)."}
    texts = ["please pass the salt\n#### 40", "pass the salt\n#### 40", "please, the salt\n#### 7",
             "garble garble\n#### 40", "salt now\n#### 3", ""]
    return [{"id": f"j{i}", "messages": [user, {"role": "assistant", "content": t}],
             "metadata": {"reference_answer": "about forty\n#### 40"}} for i, t in enumerate(texts)]


JUDGE_AND_RULE = ("rewards=[{kind: judge, name: polite}, {kind: verifiable, name: correct, check: numeric_match, "
                  "weight: 0.5}]")


def test_a_judge_and_a_rule_are_combined_as_in_training_and_a_judge_failure_is_a_failed_sample(tmp_path, capsys):
    """Two sources: each sample's reward is the weighted sum, each source has its Reward entry by name, and a sample
    the judge could not score (a reply that is not a verdict) has no reward, whatever the judge's fallback: it is
    written as failed, with the judge's reason."""
    scripted = ScriptedJudge()
    inp, out = tmp_path / "samples.jsonl", tmp_path / "rewards.jsonl"
    inp.write_text("".join(json.dumps(s) + "\n" for s in judge_samples()))
    try:
        rc = main(["reward", "score", "recipes/smoke.yaml", "--input", str(inp), "--output", str(out),
                   "--set", JUDGE_AND_RULE, "--set", "judge.mode=verdict", "--set", f"judge.base_url={scripted.url}",
                   "--set", "judge.max_retries=0", "--set", "judge.on_failure=neutral",
                   "--set", f"output_dir={tmp_path / 'run'}"])
    finally:
        scripted.close()
    err = capsys.readouterr().err
    assert rc == 0, err
    got = responses(out)
    assert [got[f"j{i}"]["aggregate_reward_score"] for i in range(6)] == [1.5, 0.5, 1.0, None, 0.0, 0.0]
    assert got["j0"]["metrics_list"] == [{"name": "polite", "value": 1.0, "type": "Reward"},
                                         {"name": "correct", "value": 1.0, "type": "Reward"},
                                         {"name": "reward_failed", "value": 0.0, "type": "Metric"}]
    assert got["j0"]["rationale"] == "polite 1.000 (scripted: PASS); correct 1.000 (40 == 40)"
    # the judge's neutral fallback is no reward: the sample is failed, and the rule's reward is still shown
    assert got["j3"]["failed"] is True and got["j3"]["rationale"].startswith("failed: polite: parse: verdict is not JSON")
    assert got["j3"]["metrics_list"] == [{"name": "correct", "value": 1.0, "type": "Reward"},
                                         {"name": "reward_failed", "value": 1.0, "type": "Metric"}]
    assert "1 sample(s) failed" in err and "polite on 1 (parse: verdict is not JSON" in err
    assert len(scripted.requests) == 6  # the empty completion too: training asks the judge about it


def test_each_scoring_commands_help_points_at_the_other(capsys):
    for command, other in (("judge", "rlaif reward score"), ("reward", "rlaif judge score")):
        with pytest.raises(SystemExit):
            main([command, "score", "--help"])
        assert other in " ".join(capsys.readouterr().out.split())
