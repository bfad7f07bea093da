"""Rewards as users compose them, without a judge server: the verifiable checks, the batch conversion, the gate,
a Python function as a source, and the recipe's `rewards:` block refusing bad input by file and field."""
import asyncio
import json

import pytest

from rlaif.config.recipe import load_recipe
from rlaif.config.rewards import PythonSourceSpec, VerifiableSourceSpec
from rlaif.data.samples import Sample
from rlaif.errors import UserError
from rlaif.judge.judgment_log import JudgmentLog
from rlaif.portable.verifiable import final_number, normalise_answer, verify
from rlaif.rewards.combined import CombinedSource
from rlaif.rewards.lambda_source import LambdaSource
from rlaif.rewards.python_source import PythonSource
from rlaif.rewards.source import Scored, batch_columns, batch_samples, source_metrics
from rlaif.rewards.trl_adapter import TRLReward
from rlaif.rewards.verifiable_source import VerifiableSource

SMOKE = "recipes/smoke.yaml"
USER = [{"role": "user", "content": "say something about the cat"}]


# -- the verifiable checks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("check,completion,answer,kw,want", [
    ("exact_match", " 42 ", "42", {}, 1.0),
    ("exact_match", "42.", "42", {}, 0.0),
    ("normalised_match", "The Cat!", "cat", {}, 1.0),
    ("normalised_match", "a black cat", "cat", {}, 0.0),
    ("numeric_match", "She sold 48 + 24 = 72 clips.\n#### 72", "Natalia sold ... #### 72", {}, 1.0),
    ("numeric_match", "so the total is $1,234.50", "1234.5", {}, 1.0),
    ("numeric_match", "about 3.14159", "3.1416", {"tolerance": 1e-4}, 1.0),
    ("numeric_match", "about 3.14159", "3.1416", {}, 0.0),
    ("numeric_match", "#### 7 and later 9", "7", {}, 1.0),  # the marked answer, not the last number
    ("numeric_match", "no number here", "7", {}, 0.0),
    ("regex", "I like the cat.", "cat", {"pattern": r"\b{answer}\b"}, 1.0),
    ("regex", "I like the category.", "cat", {"pattern": r"\b{answer}\b"}, 0.0),
    ("regex", "a+b", "a+b", {"pattern": "^{answer}$"}, 1.0),  # the answer is escaped
    ("json_field_equals", '```json\n{"label": "risk"}\n```', "risk", {"json_key": "label"}, 1.0),
    ("json_field_equals", '{"label": "none"}', "risk", {"json_key": "label"}, 0.0),
    ("json_field_equals", "not json", "risk", {"json_key": "label"}, 0.0),
    ("json_field_equals", '{"n": 7}', "7", {"json_key": "n"}, 1.0),  # a number against the record's text
    ("json_field_equals", '{"n": "7"}', 7, {"json_key": "n"}, 1.0),
    ("json_field_equals", '{"n": 8}', "7", {"json_key": "n"}, 0.0),
    ("reference_contained", " please, the cat sat", "cat", {}, 1.0),
    ("reference_contained", "the category", "cat", {}, 0.0),
    ("reference_contained", "The Big Red Ship sails", "big red ship", {}, 1.0),
])
def test_each_verifiable_check(check, completion, answer, kw, want):
    got, why = verify(check, completion, answer, **kw)
    assert got == want, why


def test_helpers_read_answers_as_gsm8k_writes_them():
    assert final_number("Natalia sold 48/2 = 24 clips in May.\n#### 72") == 72.0
    assert final_number("-3.5 degrees") == -3.5 and final_number("none") is None
    assert normalise_answer("  The  Answer, is: An apple! ") == "answer is apple"
    assert verify("exact_match", "x", None)[0] == 0.0  # no answer: no credit, said why


# -- TRL batches -> samples -----------------------------------------------------------------------------------------
def test_a_trl_batch_becomes_samples_with_the_records_metadata_and_columns():
    cols = {"id": ["r1", "r2"], "metadata": [json.dumps({"topic": "cat"}), "{}"],
            "nova_reference": [json.dumps({"k": 1}), None], "reference_answer": ['{"k": 1}', None], "topic": ["cat", ""]}
    s = batch_samples([USER, USER], [[{"role": "assistant", "content": "hi"}], "plain text"], cols)
    assert [x.id for x in s] == ["r1#0", "r2#1"]
    assert s[0].metadata == {"topic": "cat", "reference_answer": {"k": 1}} and s[0].reference == {"k": 1}
    assert s[1].metadata == {} and s[1].response == "plain text"
    assert batch_columns(s)["topic"] == ["cat", ""]  # a TRL-signature function gets the dataset's columns back


# -- sources -----------------------------------------------------------------------------------------------------
def topic_source(log=None):
    spec = VerifiableSourceSpec(kind="verifiable", name="topic", check="reference_contained", field="topic")
    return VerifiableSource(spec, log)


def test_a_verifiable_source_scores_against_a_metadata_field_and_logs_each_line(tmp_path):
    log = JudgmentLog(tmp_path / "j.jsonl")
    src = topic_source(log.for_source("topic"))
    samples = [Sample("a#0", USER, "the cat", {"topic": "cat"}), Sample("a#1", USER, "the dog", {"topic": "cat"}),
               Sample("b#2", USER, "anything", {})]
    got = asyncio.run(src.score(samples, step=3))
    assert got.rewards == [1.0, 0.0, 0.0]
    rows = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == ["topic"] * 3 and rows[0]["criterion"] == "verifiable:reference_contained"
    assert rows[2]["rationale"] == "no answer to check against" and rows[0]["step"] == 3
    assert src.summary()["no_answer"] == 1


def test_the_adapter_logs_each_sources_numbers():
    metrics = {}
    reward = TRLReward(topic_source())
    out = asyncio.run(reward(prompts=[USER] * 4, completions=[[{"role": "assistant", "content": t}]
                                                              for t in ("cat", "dog", "a cat", "no")],
                             topic=["cat"] * 4, metadata=[json.dumps({"topic": "cat"})] * 4,
                             log_metric=metrics.__setitem__))
    assert out == [1.0, 0.0, 1.0, 0.0] and reward.__name__ == "topic"
    assert metrics["reward/topic/mean"] == 0.5 and metrics["reward/topic/pass_rate"] == 0.5
    assert metrics["reward/topic/fail_rate"] == 0.0


class Fixed:
    """A stand-in source with given rewards (the combination's arithmetic is what is tested here)."""

    def __init__(self, name, rewards, raises=False):
        self.name, self.rewards, self.raises = name, rewards, raises
        self.failures = type("F", (), {"stop_reason": None})()
        self.failed_batches = 0

    async def score(self, samples, step=None, state=None):
        if self.raises:
            raise RuntimeError("a bug in this source")
        return Scored(list(self.rewards))

    def fail_batch(self, n):
        self.failed_batches += 1
        return [None] * n

    async def aclose(self):
        pass


def test_a_gate_zeroes_a_sample_that_fails_an_essential_source():
    gate = CombinedSource([Fixed("judge", [0.9, 0.9, 0.2, None]), Fixed("topic", [1.0, 0.0, 1.0, 1.0])],
                       weights=[1.0, 0.5], essential=[False, True])
    got = asyncio.run(gate.score([Sample(str(i), USER, "x") for i in range(4)]))
    assert got.rewards[0] == pytest.approx(1.4)  # both pass: the weighted sum
    assert got.rewards[1] == 0.0  # the essential source failed: zero, whatever the judge said
    assert got.rewards[2] == pytest.approx(0.7)  # the non-essential one failed: it just counts less
    assert got.rewards[3] is None  # a failed judgment: left out of its group, as it would be alone
    assert got.metrics["reward/gated_rate"] == 0.25 and got.columns["topic"] == [1.0, 0.0, 1.0, 1.0]
    assert got.metrics["reward/judge/fail_rate"] == 0.25


def test_sources_combine_into_one_reward_that_leaves_out_a_failed_judgment():
    """TRL's nansum over one function per source would give sample 2 the rule's 0.5 alone, as if the judge had
    said 0; combined, it is None, left out of its group."""
    both = CombinedSource([Fixed("judge", [0.8, 0.0, None]), Fixed("topic", [1.0, 1.0, 1.0])],
                          weights=[1.0, 0.5], essential=[False, False])
    got = asyncio.run(both.score([Sample(str(i), USER, "x") for i in range(3)]))
    assert got.rewards == [pytest.approx(1.3), pytest.approx(0.5), None]
    assert "reward/gated_rate" not in got.metrics  # no gate without an essential source
    assert got.metrics["reward/topic/mean"] == 1.0 and got.metrics["reward/judge/pass_rate"] == 0.5


def test_one_source_failing_as_a_whole_is_counted_by_it_alone():
    judge, rule = Fixed("judge", [0.8, 0.2], raises=True), Fixed("topic", [1.0, 0.0])
    got = asyncio.run(CombinedSource([judge, rule], [1.0, 1.0], [False, False]).score(
        [Sample(str(i), USER, "x") for i in range(2)]))
    assert got.rewards == [None, None] and got.metrics["reward/judge/fail_rate"] == 1.0
    assert got.metrics["reward/topic/mean"] == 0.5  # the rule's scores stand
    assert (judge.failed_batches, rule.failed_batches) == (1, 0)


FLAKY_LAMBDA = '''
def lambda_handler(event, context):
    # answers "ok" samples with 1.0; raises for a batch holding "boom"; leaves "skip" samples out
    if any(s["messages"][-1]["content"] == "boom" for s in event):
        raise RuntimeError("boom")
    return [{"id": s["id"], "aggregate_reward_score": 1.0} for s in event if s["messages"][-1]["content"] != "skip"]
'''


def test_a_neutral_fallback_source_that_fails_leaves_the_sample_out_of_a_combined_reward(tmp_path):
    """README: a sample that any source could not score is left out. A Lambda's default fallback is neutral (0.5,
    Bedrock's contract): alone it answers 0.5, but combined its failure is None, never 0.5 x weight in the sum."""
    path = tmp_path / "flaky.py"
    path.write_text(FLAKY_LAMBDA)
    texts = ["ok", "skip", "boom", "ok"]
    samples = [Sample(str(i), USER, t) for i, t in enumerate(texts)]
    alone = LambdaSource(path, batch_size=2, on_error="neutral", name="grader")
    assert asyncio.run(alone.score(samples)).rewards == [1.0, 0.5, 0.5, 0.5]  # the Lambda contract: neutral
    lam = LambdaSource(path, batch_size=2, on_error="neutral", name="grader")
    both = CombinedSource([lam, Fixed("topic", [1.0, 1.0, 1.0, 1.0])], weights=[1.0, 1.0], essential=[False, False])
    got = asyncio.run(both.score(samples))
    assert got.rewards == [2.0, None, None, None]
    assert got.metrics["reward/grader/fail_rate"] == 0.75 and got.metrics["reward/grader/mean"] == 1.0
    assert lam.summary()["failed"] == 3  # counted by the source that failed


def test_a_neutral_source_that_fails_as_a_whole_leaves_the_batch_out_of_a_combined_reward():
    judge = Fixed("judge", [0.8, 0.2], raises=True)
    judge.fail_batch = lambda n: [0.5] * n  # its own fallback is neutral
    got = asyncio.run(CombinedSource([judge, Fixed("topic", [1.0, 0.0])], [1.0, 1.0], [False, False]).score(
        [Sample(str(i), USER, "x") for i in range(2)]))
    assert got.rewards == [None, None] and got.metrics["reward/judge/fail_rate"] == 1.0


@pytest.mark.parametrize("fn,want,errors", [
    ("topic_named", [1.0, 0.0], 0),
    ("constant", [0.25, 0.25], 0),  # async
    ("raises", [None, None], 1),
    ("too_few", [None, None], 1),
    ("not_a_number", [None, None], 1),
    ("a_string", [None, None], 1),  # TRL would fail on text: counted here
    ("numpy_values", [0.5, 1.0], 0),  # numpy numbers and bools are numbers
])
def test_a_python_function_is_called_as_trl_calls_it_and_never_raises(fn, want, errors, caplog):
    src = PythonSource(PythonSourceSpec(kind="python", name="fn", function=f"tests.fixtures.reward_functions:{fn}"))
    samples = [Sample("r#0", USER, "the cat", {"topic": "cat"}), Sample("r#1", USER, "the dog", {"topic": "cat"})]
    assert asyncio.run(src.score(samples)).rewards == want
    assert src.summary()["errors"] == errors
    if errors:
        assert "reward function tests.fixtures.reward_functions:" in caplog.text


def test_a_function_written_for_trl_gets_the_step_the_ids_and_its_logging():
    fn = "tests.fixtures.reward_functions:logs_like_trl"
    reward = TRLReward(PythonSource(PythonSourceSpec(kind="python", name="brevity", function=fn)))
    metrics, extra = {}, {}
    out = asyncio.run(reward(prompts=[USER, USER], completions=[[{"role": "assistant", "content": "ok"}],
                                                                  [{"role": "assistant", "content": "a long one"}]],
                             completion_ids=[[1, 2], [1, 2, 3, 4, 5, 6]], id=["r", "r"],
                             trainer_state=type("S", (), {"global_step": 7})(),
                             log_metric=metrics.__setitem__, log_extra=extra.__setitem__))
    assert out == [1.0, 0.0]
    assert metrics["brevity/mean_chars"] == 6.0 and extra["brevity_step"] == [7, 7]


def test_a_function_next_to_the_recipe_imports_from_anywhere(tmp_path, monkeypatch):
    import sys
    monkeypatch.setattr(sys, "path", list(sys.path))  # what load() adds goes with the test
    (tmp_path / "my_rewards_beside.py").write_text("def short(prompts, completions, **kw):\n"
                                                   "    return [1.0] * len(prompts)\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(open(SMOKE).read())
    monkeypatch.chdir("/")
    r = load_recipe(recipe, ["rewards=[{kind: python, name: short, function: 'my_rewards_beside:short'}]"],
                    check_files=False)
    assert r.rewards[0].load()([USER], [[{"role": "assistant", "content": "x"}]]) == [1.0]


def test_loading_a_recipe_runs_no_user_code_and_leaves_sys_path_as_it_was(tmp_path, monkeypatch):
    """A `kind: python` module is found when the recipe loads (a missing one is refused then) but imported only when
    the reward is built: `nova job-config`, `judge audit` or `data check` on the recipe run none of its code."""
    import sys

    from rlaif.rewards.python_source import PythonSource
    marker = tmp_path / "ran.txt"
    (tmp_path / "side_effect_rewards.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported\\n')\n"
        "def short(prompts, completions, **kw):\n    return [1.0] * len(prompts)\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(open(SMOKE).read())
    monkeypatch.delitem(sys.modules, "side_effect_rewards", raising=False)
    path_before = list(sys.path)
    r = load_recipe(recipe, ["rewards=[{kind: python, name: short, function: 'side_effect_rewards:short'}]"],
                    check_files=False)
    assert not marker.exists(), "load_recipe ran the module's top level"
    assert sys.path == path_before
    src = PythonSource(r.rewards[0])  # building the reward imports it, from the recipe's folder
    assert marker.read_text() == "imported\n" and sys.path == path_before
    assert asyncio.run(src.score([Sample("r#0", USER, "x")])).rewards == [1.0]
    with pytest.raises(UserError, match=r"rewards\[0\]\.function: no_such_module_x:f: cannot import no_such_module_x"):
        load_recipe(recipe, ["rewards=[{kind: python, name: p, function: 'no_such_module_x:f'}]"], check_files=False)


BOTO3_LAMBDA = '''
import json
import boto3
bedrock = boto3.client("bedrock-runtime")  # at import, as AWS's samples do: the endpoint must be set by then
SCHEMA = {"type": "object", "properties": {"says_please": {"type": "string", "enum": ["PASS", "FAIL"]}},
          "required": ["says_please"]}
def lambda_handler(event, context):
    out = []
    for s in event:
        r = bedrock.converse(modelId="judge", messages=[{"role": "user", "content": [
            {"text": "Response: " + s["messages"][-1]["content"]}]}], outputConfig={"textFormat": {
                "type": "json_schema", "structure": {"jsonSchema": {"name": "v", "schema": json.dumps(SCHEMA)}}}})
        verdict = json.loads(r["output"]["message"]["content"][0]["text"])
        out.append({"id": s["id"], "aggregate_reward_score": 1.0 if verdict["says_please"] == "PASS" else 0.0})
    return out
'''
AWS_VARS = ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
            "AWS_REGION")


def test_a_lambdas_gateway_endpoint_and_dummy_credentials_stay_out_of_the_process_environment(tmp_path, monkeypatch):
    """The Lambda's boto3 (its client made at import) reaches the local Bedrock gateway, but the endpoint and the
    dummy credentials are set only while the Lambda runs: later boto3 use in the process goes where it would."""
    import contextlib
    import os

    from scripted_judge import ScriptedJudge

    from rlaif.factory import make_rewards
    for k in AWS_VARS:
        monkeypatch.delenv(k, raising=False)
    path = tmp_path / "boto3_lambda.py"
    path.write_text(BOTO3_LAMBDA)
    scripted = ScriptedJudge()
    try:
        r = rewards_recipe([{"kind": "lambda", "name": "grader", "file": str(path)},
                            {"kind": "verifiable", "name": "t", "check": "reference_contained", "field": "topic"}],
                           "judge.mode=verdict", f"judge.base_url={scripted.url}")
        with contextlib.ExitStack() as stack:
            [reward], _ = make_rewards(r, tmp_path, None, stack)
            assert not any(k in os.environ for k in AWS_VARS)
            out = asyncio.run(reward(prompts=[USER, USER], completions=[[{"role": "assistant", "content": c}]
                                                                          for c in ("the cat please", "the cat")],
                                     metadata=[json.dumps({"topic": "cat"})] * 2))
            assert out == [2.0, 1.0]  # the judge's PASS and FAIL through the gateway, plus the rule's 1
            assert not any(k in os.environ for k in AWS_VARS)
    finally:
        scripted.close()


# -- the recipe -------------------------------------------------------------------------------------------------------
def rewards_recipe(block, *more):
    return load_recipe(SMOKE, [f"rewards={json.dumps(block)}", *more], check_files=False)


def test_todays_recipes_keep_one_judge_source():
    r = load_recipe(SMOKE, check_files=False)
    assert [(s.kind, s.name) for s in r.reward_sources()] == [("judge", "judge")]
    r = load_recipe(SMOKE, ["reward.lambda_file=tests/fixtures/bedrock_style_lambda.py"], check_files=False)
    assert [(s.kind, s.name, s.file) for s in r.reward_sources()] == [
        ("lambda", "lambda", "tests/fixtures/bedrock_style_lambda.py")]


@pytest.mark.parametrize("block,match", [
    ([{"kind": "verifier"}], r"rewards\.0: .*tag 'verifier'"),
    ([{"kind": "verifiable", "name": "t"}], r"rewards\.0\.verifiable\.check: Field required"),
    ([{"kind": "judge", "weight": -1}], r"rewards\.0\.judge\.weight: .*greater than or equal to 0"),
    ([{"kind": "judge", "weight": "inf"}], r"rewards\.0\.judge\.weight: .*finite"),
    ([{"kind": "judge"}, {"kind": "judge"}], r"rewards: source names must be unique \(they name metrics\); repeated: judge"),
    ([{"kind": "python", "name": "p", "function": "no_such_module_here:fn"}],
     r"rewards\[0\]\.function: no_such_module_here:fn: cannot import"),
    ([{"kind": "python", "name": "p", "function": "tests.fixtures.reward_functions:missing"}], r"has no missing"),
    ([{"kind": "verifiable", "name": "t", "check": "json_field_equals"}], "needs json_key"),
    ([{"kind": "judge", "weight": 0}], "every weight is 0"),
    ([{"kind": "judge", "name": "combined"}], "combined: a name rlaif uses itself"),
    ([{"kind": "lambda", "file": "x.py", "neutral_reward": 2}], r"rewards\.0\.lambda\.neutral_reward: .*less than or equal to 1"),
    ([{"kind": "lambda", "file": "x.py", "neutral_reward": -0.5}], r"neutral_reward: .*greater than or equal to 0"),
    ([{"kind": "judge", "name": "polite"}, {"kind": "judge", "mode": "verdict"}],
     "'judge': the first judge source's metrics are judge/\\* and checks/\\*"),
    ([{"kind": "judge", "name": "j", "mode": "verdict", "judge": {"model": "artifacts/tiny/judge",
                                                                  "backend": "transformers"}}],
     r"rewards\[0\] \(j\): backend 'transformers' answers one-token judgments"),
])
def test_bad_rewards_are_refused_naming_the_recipe_and_field(block, match):
    with pytest.raises(UserError, match=match) as e:
        rewards_recipe(block)
    assert str(e.value).startswith(SMOKE)


def test_a_lambda_files_neutral_reward_is_a_reward_in_0_1_as_the_judges_is():
    with pytest.raises(UserError, match=r"reward\.neutral_reward: .*less than or equal to 1"):
        load_recipe(SMOKE, ["reward.lambda_file=x.py", "reward.neutral_reward=5"], check_files=False)


def test_a_lambda_may_not_be_given_twice():
    with pytest.raises(UserError, match="not reward.lambda_file as well"):
        rewards_recipe([{"kind": "judge"}], "reward.lambda_file=x.py")


def test_a_verifiable_field_the_data_lacks_is_refused_before_training(tiny):
    from rlaif.data.dataset import check_training_data
    ok = rewards_recipe([{"kind": "verifiable", "name": "t", "check": "reference_contained", "field": "topic"}])
    check_training_data(ok)  # every record of the tiny world carries its topic
    bad = rewards_recipe([{"kind": "verifiable", "name": "t", "check": "exact_match"}])  # no reference_answer there
    with pytest.raises(UserError, match=r"rewards\[0\]\.field: artifacts/tiny/data/train\.jsonl:1 \(id train-0000\) "
                                        r"has no 'reference_answer'"):
        check_training_data(bad)


def test_two_judges_log_apart_and_the_recipes_judge_is_named_only_when_used(tmp_path):
    import contextlib

    from scripted_judge import ScriptedJudge

    from rlaif.factory import make_rewards, uses_recipe_judge
    scripted = ScriptedJudge()
    try:
        two = [{"kind": "judge", "name": "polite"}, {"kind": "judge", "name": "again", "rubric": "says_please"}]
        r = rewards_recipe(two, "judge.mode=verdict", f"judge.base_url={scripted.url}", "judge.token_prompts=false")
        with contextlib.ExitStack() as stack:
            [reward], url = make_rewards(r, tmp_path, None, stack)
            metrics, extra = {}, {}
            out = asyncio.run(reward(prompts=[USER, USER], completions=[[{"role": "assistant", "content": c}]
                                                                          for c in (" please sit", " sit")],
                                     id=["r", "r"], log_metric=metrics.__setitem__, log_extra=extra.__setitem__))
    finally:
        scripted.close()
    assert reward.__name__ == "combined" and out == [2.0, 0.0] and url == scripted.url
    assert metrics["judge/calls"] == 2.0 and metrics["again/calls"] == 2.0  # each judge's own, never averaged
    assert metrics["reward/polite/pass_rate"] == 0.5 and metrics["reward/again/pass_rate"] == 0.5
    assert {"judge_scores", "again_scores", "judge_rationale", "again_rationale"} <= set(extra)
    own = rewards_recipe([{"kind": "judge", "name": "other", "judge": {"model": "artifacts/tiny/judge",
                                                                        "base_url": scripted.url}}])
    assert not uses_recipe_judge(own) and uses_recipe_judge(r)  # a judge of its own: the recipe's is not started


def test_the_progress_line_names_each_pass_rate_by_its_criterion_or_source():
    from rlaif.train.callbacks import label
    assert label("judge/says_please/pass_rate") == "says_please"
    assert label("reward/topic/pass_rate") == "topic"
    assert label("checks/no_ai/pass_rate") == "no_ai"
    assert label("again/says_please/pass_rate") == "again/says_please"  # a second judge: never mistaken for the first


def test_a_reasoning_judges_answer_cut_after_its_thinking_is_no_reasoning_cut_off():
    from types import SimpleNamespace

    from rlaif.config.rubric import load_rubric
    from rlaif.judge import verdict
    from rlaif.portable.verdicts import ParseError, ReasoningCutOff
    msg = SimpleNamespace(content='{"says_please": "PA', reasoning_content="I looked for the word please.")
    with pytest.raises(ParseError) as e:
        verdict.parse(SimpleNamespace(choices=[SimpleNamespace(finish_reason="length", message=msg)]),
                      load_rubric("says_please"), reasoning=True)
    assert not isinstance(e.value, ReasoningCutOff)  # the thinking ended; the answer was cut


def test_a_python_function_gets_trls_own_trainer_state(tmp_path):
    from transformers import TrainerState
    src = PythonSource(PythonSourceSpec(kind="python", name="brevity",
                                        function="tests.fixtures.reward_functions:shaped_by_progress"))
    state = TrainerState(global_step=5, max_steps=10)
    assert asyncio.run(src.score([Sample("r#0", USER, "x")], 5, state=state)).rewards == [0.5]
    assert asyncio.run(src.score([Sample("r#0", USER, "x")], 5)).rewards == [0.0]  # no trainer: max_steps 0


def test_a_dotted_module_is_found_without_running_its_packages(tmp_path, monkeypatch):
    """`pkg.rewards:fn`: importlib.util.find_spec would run pkg/__init__.py; a namespace package (no __init__) not
    imported yet must be found too."""
    import sys
    marker = tmp_path / "ran.txt"
    (tmp_path / "side_pkg").mkdir()
    (tmp_path / "side_pkg" / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('init\\n')\n")
    (tmp_path / "side_pkg" / "rewards.py").write_text("def fn(prompts, completions, **kw):\n    return [1.0]\n")
    (tmp_path / "ns_pkg" / "inner").mkdir(parents=True)
    (tmp_path / "ns_pkg" / "inner" / "mod.py").write_text("def fn(prompts, completions, **kw):\n    return [0.5]\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(open(SMOKE).read())
    for name in ("side_pkg", "side_pkg.rewards", "ns_pkg", "ns_pkg.inner", "ns_pkg.inner.mod"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    r = load_recipe(recipe, ["rewards=[{kind: python, name: a, function: 'side_pkg.rewards:fn'}, "
                             "{kind: python, name: b, function: 'ns_pkg.inner.mod:fn'}]"], check_files=False)
    assert not marker.exists() and "ns_pkg" not in sys.modules
    assert r.rewards[1].load()([USER], [[{"role": "assistant", "content": "x"}]]) == [0.5]
    with pytest.raises(UserError, match="ns_pkg.inner.mod has no gone"):
        load_recipe(recipe, ["rewards=[{kind: python, name: b, function: 'ns_pkg.inner.mod:gone'}]"],
                    check_files=False)


def test_a_source_that_scored_nothing_logs_no_mean_or_pass_rate():
    """A 0 would read as a policy that never passes; no number is what was measured (TRL averages each key over
    the batches and processes that logged it)."""
    assert source_metrics("topic", [None, None]) == {"reward/topic/fail_rate": 1.0}
    assert source_metrics("topic", [None, 1.0]) == {"reward/topic/mean": 1.0, "reward/topic/pass_rate": 1.0,
                                                    "reward/topic/fail_rate": 0.5}


def test_a_judge_with_a_neutral_fallback_that_fails_leaves_the_sample_out_of_a_combined_reward():
    """`judge.on_failure: neutral` answers 0.5 for a failed judgment; beside another source that 0.5 must not become
    a share of the sum: the sample is left out, as any source's failure leaves it out."""
    from fake_replica import FakeReplica

    from rlaif.config.rubric import load_rubric
    from rlaif.judge.http_client import ClientSettings, JudgeClient
    from rlaif.judge.scorer import FailureSettings, Judge
    from rlaif.rewards.judge_source import JudgeSource

    with FakeReplica(p_pass=0.9) as rep:
        client = JudgeClient(ClientSettings(rep.url, "judge", max_retries=0, backoff_base_s=0.01,
                                            max_outage_wait_s=0.1))
        judge = Judge(load_rubric("says_please"), client, on_failure=FailureSettings(fallback="neutral"),
                      cache=False)
        src = CombinedSource([JudgeSource(judge), Fixed("rule", [1.0, 1.0])], [1.0, 1.0], [False, False])
        try:
            samples = [Sample("r#0", USER, "please"), Sample("r#1", USER, "thanks")]
            assert asyncio.run(src.score(samples, 1)).rewards == pytest.approx([1.9, 1.9])
            rep.mode = 500  # the judge breaks: its own fallback is 0.5 for each sample
            alone = asyncio.run(JudgeSource(judge).score(samples, 2))
            assert alone.rewards == [0.5, 0.5]  # the judge alone answers its fallback, as the recipe asks
            assert asyncio.run(src.score(samples, 3)).rewards == [None, None]  # never 0.5 + 1.0
        finally:
            judge.close()


# -- the verdict cache -------------------------------------------------------------------------------------------
def test_the_verdict_cache_keys_identical_requests_alike_and_any_difference_apart():
    from dataclasses import replace

    from rlaif.judge.cache import VerdictCache
    from rlaif.judge.planner import Request
    cache = VerdictCache("judge|logprob|rubric one")
    req = Request(["says_please"], [{"role": "system", "content": "grade"}, {"role": "user", "content": "hi"}],
                  {"max_tokens": 1, "temperature": 0.0, "extra_body": {"structured_outputs": {"choice": ["A", "B"]}}},
                  0)
    same = Request(["says_please"], [dict(m) for m in req.messages], dict(reversed(list(req.params.items()))), 0)
    assert cache.key(req) == cache.key(same)  # equal requests, whatever the order of their parameters
    others = [replace(req, messages=[req.messages[0], {"role": "user", "content": "hi!"}]),
              replace(req, messages=[{"role": "system", "content": "grade!"}, req.messages[1]]),
              replace(req, params=dict(req.params, temperature=0.5)),
              replace(req, params=dict(req.params, extra_body={"structured_outputs": {"choice": ["B", "A"]}}))]
    keys = {cache.key(r) for r in others} | {cache.key(req), VerdictCache("judge|logprob|rubric two").key(req)}
    assert len(keys) == len(others) + 2  # every difference, and another judge or rubric (the salt), keys apart
