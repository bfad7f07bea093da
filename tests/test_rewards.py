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
from rlaif.rewards.python_source import PythonSource
from rlaif.rewards.source import Scored, batch_columns, batch_samples
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
