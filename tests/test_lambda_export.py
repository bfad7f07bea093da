"""What moves to Bedrock: the exported Lambda computes the recipe's whole reward (its judge with a record's own
criteria, its verifiable rules, its Python functions whose module is one standard-library file, combined as in
training) and gives the rewards `rlaif reward score` gives, on scripted judge replies; what it cannot carry is
refused by name. No vLLM server: a scripted judge behind the real Converse gateway."""
import json
import runpy

import pytest
from scripted_judge import ScriptedJudge
from test_reward_score import JUDGE_AND_RULE, judge_samples, responses

from rlaif.cli.main import main
from rlaif.config.recipe import load_recipe
from rlaif.data.samples import Sample
from rlaif.errors import UserError
from rlaif.eval.nova_parity import boto3_pointed_at
from rlaif.factory import make_judge
from rlaif.nova.export import export_lambda
from rlaif.nova.gateway import Gateway, build_app

SMOKE = "recipes/smoke.yaml"
CHECKS = json.dumps([{"kind": "blocklist", "words": ["idiot"]},
                     {"kind": "regex_must_not", "pattern": "(?i)as an ai", "mode": "weight", "weight": 0.5}])
OWN = {"rubric": {"criteria": [{"name": "mentions_salt", "question": "Does it mention salt?", "weight": 2.0}]}}


def composed_samples() -> list[dict]:
    """The judge samples, and ones that a check gates or weighs, and ones with criteria of their own."""
    out = judge_samples()
    user = out[0]["messages"][0]
    for i, (text, meta) in enumerate([("you idiot, please\n#### 40", {}), ("as an AI I say please\n#### 40", {}),
                                      ("please, salt\n#### 40", OWN), ("no salt for you\n#### 41", OWN)]):
        out.append({"id": f"k{i}", "messages": [user, {"role": "assistant", "content": text}],
                    "metadata": {"reference_answer": "#### 40"} | meta})
    return out


def run_exported(path, samples, judge_url):
    """The exported file's lambda_handler on the samples, its boto3 calls through the Converse gateway to the
    judge at judge_url, as `rlaif nova parity` runs it."""
    lam = runpy.run_path(str(path))
    gateway = Gateway(build_app(judge_url, "judge")).start()
    try:
        with boto3_pointed_at(gateway.url, "us.amazon.nova-2-lite-v1:0"):
            return {o["id"]: o for o in lam["lambda_handler"](samples, None)}
    finally:
        gateway.stop()


def test_the_exported_lambda_of_a_judge_and_a_rule_gives_the_rewards_of_reward_score(tmp_path, capsys):
    """The recipe's judge (verdict mode, two checks, a record's own criteria) and a verifiable rule: the exported
    Lambda and `rlaif reward score` give every sample the same reward and the same metrics; a sample the judge could
    not score is failed on both sides (the Lambda, which must answer a number, gives the neutral 0.5)."""
    scripted = ScriptedJudge()
    samples = composed_samples()
    inp, out = tmp_path / "samples.jsonl", tmp_path / "rewards.jsonl"
    inp.write_text("".join(json.dumps(s) + "\n" for s in samples))
    sets = [JUDGE_AND_RULE, "judge.mode=verdict", f"checks={CHECKS}", f"judge.base_url={scripted.url}",
            "judge.max_retries=0", f"output_dir={tmp_path / 'run'}"]
    try:
        path, notes = export_lambda(load_recipe(SMOKE, sets), tmp_path / "lambda")
        theirs = run_exported(path, samples, scripted.url)
        rc = main(["reward", "score", SMOKE, "--input", str(inp), "--output", str(out)]
                  + [x for s in sets for x in ("--set", s)])
    finally:
        scripted.close()
    assert rc == 0, capsys.readouterr().err
    assert notes == []
    ours = responses(out)
    assert set(theirs) == set(ours) == {s["id"] for s in samples}
    for sid, answer in ours.items():
        assert theirs[sid]["metrics_list"] == answer["metrics_list"], sid
        if answer["aggregate_reward_score"] is None:
            assert theirs[sid]["aggregate_reward_score"] == 0.5 and answer["failed"], sid
        else:
            assert theirs[sid]["aggregate_reward_score"] == answer["aggregate_reward_score"], sid
    assert [ours[f"k{i}"]["aggregate_reward_score"] for i in range(4)] == [0.5, 1.166667, 1.5, 0.333333]
    assert sorted(sid for sid, a in ours.items() if a["aggregate_reward_score"] is None) == ["j3"]  # "garble"
    # the records' own criteria were asked about: the judge's schema had them
    asked = [r["response_format"]["json_schema"]["schema"]["required"] for r in scripted.requests]
    assert asked.count(["says_please", "mentions_salt", "rationale"]) == 4  # twice by each side


def test_a_records_own_criteria_reach_the_judge_from_the_lambda_as_from_rlaif(tmp_path):
    """The Lambda's request for a record with criteria of its own is rlaif's: the same system turn, sample block
    with the criteria after it, verdict schema and token budget; and its reward joins them as rlaif's judge does."""
    recipe = load_recipe(SMOKE, ["judge.mode=verdict", "checks=[]", "judge.rubric_turn=system"], check_files=False)
    path, _ = export_lambda(recipe, tmp_path / "lambda")
    lam = runpy.run_path(str(path))
    env, asked = lam["score_sample"].__globals__, []

    def converse(system, user, schema, max_tokens):
        asked.append((system, user, schema, max_tokens))
        return json.dumps({"says_please": "PASS", "mentions_salt": "FAIL", "rationale": "x"})
    env["converse"] = converse
    prompt = [{"role": "user", "content": "ask for the salt"}]
    result, _ = lam["score_sample"]({"id": "a", "messages": prompt + [{"role": "assistant", "content": "please"}],
                                     "metadata": OWN})
    judge = make_judge(recipe, "http://127.0.0.1:9")  # nothing is sent: only its plan is read
    sample = Sample("a", prompt, "please", dict(OWN))
    req, = judge.plan(sample)
    fmt = req.params["response_format"]["json_schema"]
    assert asked == [(req.messages[0]["content"], req.messages[1]["content"], fmt["schema"], req.params["max_tokens"])]
    assert "Grade this sample on its own criteria too:\n- mentions_salt: Does it mention salt?" in asked[0][1]
    own = judge.own_criteria(sample)
    assert result["aggregate_reward_score"] == round(judge.aggregate({"says_please": 1.0, "mentions_salt": 0.0}, own),
                                                     6) == 0.333333


REWARD_MODULE = '''
"""Reward functions of my own, standard library only."""
import math
import statistics


def brevity(prompts, completions, reference_answer, topic, trainer_state, **kwargs):
    """Shorter is better; a record on the topic "salt" must mention it; and the state must be TRL's."""
    assert trainer_state.global_step == 0
    out = []
    for c, ref, t in zip(completions, reference_answer, topic):
        text = c[0]["content"]
        score = 1.0 / (1.0 + math.log1p(len(text)))
        out.append(None if "skip" in text else score if t != "salt" or "salt" in text else 0.0)
    statistics.fmean([1.0])
    return out
'''


def test_a_python_source_of_one_standard_library_file_is_bundled_and_scores_as_in_rlaif(tmp_path, capsys):
    """A rule and a Python function, no judge: the Lambda carries the function's module whole, calls it with TRL's
    arguments (the records' columns and metadata keys, the trainer state), and gives the rewards `rlaif reward
    score` gives, a None from the function a failed sample on both sides."""
    (tmp_path / "my_rewards.py").write_text(REWARD_MODULE)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(open(SMOKE).read())  # beside the module: found in the recipe's folder
    sets = ["rewards=[{kind: verifiable, name: correct, check: numeric_match, weight: 0.5}, "
            "{kind: python, name: brevity, function: 'my_rewards:brevity'}]", f"output_dir={tmp_path / 'run'}"]
    samples = [{"id": f"p{i}", "messages": [{"role": "user", "content": "how many?"},
                                             {"role": "assistant", "content": t}],
                "metadata": {"reference_answer": "#### 4", "topic": topic}}
               for i, (t, topic) in enumerate([("#### 4", "salt"), ("salt: #### 4", "salt"), ("it is 5", "pepper"),
                                               ("skip #### 4", "pepper")])]
    path, _ = export_lambda(load_recipe(recipe_file, sets), tmp_path / "lambda")
    assert "def brevity(prompts, completions, reference_answer, topic" in path.read_text()  # carried whole
    theirs = {o["id"]: o for o in runpy.run_path(str(path))["lambda_handler"](samples, None)}
    inp, out = tmp_path / "samples.jsonl", tmp_path / "rewards.jsonl"
    inp.write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert main(["reward", "score", str(recipe_file), "--input", str(inp), "--output", str(out)]
                + [x for s in sets for x in ("--set", s)]) == 0, capsys.readouterr().err
    ours = responses(out)
    for sid, answer in ours.items():
        assert theirs[sid]["metrics_list"] == answer["metrics_list"], sid
        assert theirs[sid]["aggregate_reward_score"] == (0.5 if answer["aggregate_reward_score"] is None
                                                         else answer["aggregate_reward_score"]), sid
    assert ours["p0"]["metrics_list"][1] == {"name": "brevity", "value": 0.0, "type": "Reward"}  # no salt in it
    assert 0.0 < ours["p1"]["metrics_list"][1]["value"] < 1.0 and ours["p2"]["aggregate_reward_score"] > 0.0
    assert ours["p3"]["failed"] and ours["p3"]["rationale"] == "failed: brevity: no reward"


def test_what_the_lambda_cannot_carry_is_refused_by_name(tmp_path):
    (tmp_path / "uses_numpy.py").write_text("import os\n\nimport numpy as np\n\n\ndef score(prompts, completions, "
                                            "**kw):\n    return [float(np.ones(1)[0])] * len(completions)\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("def score(prompts, completions, **kw):\n    return [1.0]\n")
    (tmp_path / "relative.py").write_text("from . import helpers\n\n\ndef score(prompts, completions, **kw):\n"
                                          "    return [1.0]\n")
    (tmp_path / "grader.py").write_text("def lambda_handler(event, context):\n    return []\n")
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(open(SMOKE).read())

    def export(source):
        rewards = f"rewards=[{{kind: verifiable, name: correct, check: numeric_match}}, {source}]"
        return export_lambda(load_recipe(recipe_file, [rewards], check_files=False), tmp_path / "out")
    with pytest.raises(UserError, match=r"rewards 'fancy': uses_numpy:score cannot be bundled into the Lambda: "
                                        r".*uses_numpy.py:3 imports numpy, which is not in the standard library"):
        export("{kind: python, name: fancy, function: 'uses_numpy:score'}")
    with pytest.raises(UserError, match=r"rewards 'pkgd': pkg:score cannot be bundled .*its module pkg is a package"):
        export("{kind: python, name: pkgd, function: 'pkg:score'}")
    with pytest.raises(UserError, match=r"rewards 'rel': relative:score cannot be bundled .*relative.py:1 imports "
                                        r"relatively"):
        export("{kind: python, name: rel, function: 'relative:score'}")
    with pytest.raises(UserError, match=r"rewards 'grader': .*grader.py is a reward Lambda of its own"):
        export(f"{{kind: lambda, name: grader, file: {tmp_path / 'grader.py'}}}")
    with pytest.raises(UserError, match=r"rewards 'other': a judge of its own \(some/judge\) cannot be exported"):
        export("{kind: judge, name: other, judge: {model: some/judge, mode: verdict}}")
    with pytest.raises(UserError, match=r"reward.lambda_file: .*grader.py is a reward Lambda of its own"):
        export_lambda(load_recipe(recipe_file, [f"reward.lambda_file={tmp_path / 'grader.py'}"], check_files=False),
                      tmp_path / "out")
    assert not (tmp_path / "out" / "lambda_function.py").exists()


def test_nova_parity_compares_the_composed_reward(tmp_path, capsys):
    """`rlaif nova parity` on a recipe's rewards: the Lambda against `rlaif reward score`, agreement per source,
    every sample on both sides, identical rewards over the samples both scored, the failed one apart."""
    scripted = ScriptedJudge()
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(s) + "\n" for s in composed_samples()))
    try:
        rc = main(["nova", "parity", SMOKE, "--samples", str(samples), "--out", str(tmp_path / "parity"),
                   "--max-mean-abs-diff", "0"]
                  + [x for s in [JUDGE_AND_RULE, "judge.mode=verdict", f"checks={CHECKS}",
                                 f"judge.base_url={scripted.url}", "judge.max_retries=0",
                                 f"output_dir={tmp_path / 'run'}"] for x in ("--set", s)])
    finally:
        scripted.close()
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "parity" / "parity.json").read_text())
    assert summary["samples"] == 10 and summary["missing_in_lambda"] == summary["missing_in_rlaif"] == []
    assert summary["compared"] == summary["identical"] == 9 and summary["judge_failed"] == {"lambda": 1, "rlaif": 1}
    assert set(summary["flips"]) == {"polite", "correct"} and summary["rewards"] == "rewards:"
    assert summary["flips"]["polite"]["judged_by_both"] == 9 and summary["flips"]["correct"]["judged_by_both"] == 10


def test_nova_parity_of_rules_alone_starts_no_judge(tmp_path, capsys):
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(s) + "\n" for s in judge_samples()))
    rc = main(["nova", "parity", SMOKE, "--samples", str(samples), "--out", str(tmp_path / "parity"), "--set",
               "rewards=[{kind: verifiable, name: correct, check: numeric_match}]", "--set",
               f"output_dir={tmp_path / 'run'}"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "parity" / "parity.json").read_text())
    assert summary["judge"] is None and summary["identical"] == summary["compared"] == 6
    assert not list((tmp_path / "run").glob("judge_server*.log"))
    assert "no judge" in capsys.readouterr().out


def test_a_lambda_file_that_defines_a_dataclass_loads_as_lambdas_import_loads_it(tmp_path):
    """rlaif loads a Lambda file as Lambda's runtime imports it, into sys.modules, where a dataclass under postponed
    annotations looks for its module."""
    from rlaif.rewards.lambda_source import load_handler
    path = tmp_path / "with_dataclass.py"
    path.write_text("from __future__ import annotations\n\nfrom dataclasses import dataclass\n\n\n"
                    "@dataclass\nclass Score:\n    value: float = 1.0\n\n\n"
                    "def lambda_handler(event, context):\n"
                    "    return [{'id': s['id'], 'aggregate_reward_score': Score().value} for s in event]\n")
    assert load_handler(path)([{"id": "a"}], None) == [{"id": "a", "aggregate_reward_score": 1.0}]
