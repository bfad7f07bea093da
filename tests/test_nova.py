"""The Nova bridge without a judge server: hyperparameter mapping, job configuration, Converse translation,
the exported Lambda's checks against rlaif's, the Lambda reward's event and error handling, `rlaif data check`."""
import asyncio
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlaif.config.nova import NovaHyperparameters, grpo_settings
from rlaif.config.recipe import load_recipe
from rlaif.data.samples import Sample
from rlaif.errors import UserError
from rlaif.nova.gateway import BedrockError, check_bind, to_chat_request
from rlaif.nova.job_config import job_config
from rlaif.rewards.lambda_source import LambdaSource
from rlaif.rewards.trl_adapter import TRLReward

SMOKE = "recipes/smoke.yaml"


# -- Bedrock hyperparameters -> GRPO ----------------------------------------------------------------------------------
def test_bedrock_hyperparameters_map_to_grpo_settings():
    hp = NovaHyperparameters(epochCount=2, batchSize=16, learningRate=1e-5, trainingSamplePerPrompt=4,
                             inferenceMaxTokens=512, maxPromptLength=1024, evalInterval=10)
    got, rows = grpo_settings(hp, {"per_device_train_batch_size": 8}, world_size=2, has_eval=True)
    assert got == {"num_train_epochs": 2, "learning_rate": 1e-5, "num_generations": 4,
                   "generation_batch_size": 64, "gradient_accumulation_steps": 4, "max_completion_length": 512,
                   "eval_strategy": "steps", "eval_steps": 10}
    assert ("maxPromptLength", "(rlaif)", "prompts over 1024 tokens are dropped") in rows
    # without per_device_train_batch_size: a bounded per-device batch (TRL's default, 8) and accumulation, never the
    # whole round on one device (64 x 8 = 512 completions a device used to be asked for, out of memory on a GPU)
    got, _ = grpo_settings(NovaHyperparameters(batchSize=16, trainingSamplePerPrompt=2), {})
    assert got["per_device_train_batch_size"] == 8 and got["gradient_accumulation_steps"] == 4
    got, _ = grpo_settings(NovaHyperparameters(batchSize=64, trainingSamplePerPrompt=8), {}, world_size=8)
    assert (got["per_device_train_batch_size"], got["gradient_accumulation_steps"]) == (8, 8)  # 8 x 8 x 8 = 512
    got, _ = grpo_settings(NovaHyperparameters(batchSize=3, trainingSamplePerPrompt=2), {}, world_size=2)
    assert (got["per_device_train_batch_size"], got["gradient_accumulation_steps"]) == (3, 1)  # 6 = 3 x 2 x 1
    # with no data.eval, evalInterval is said to be ignored rather than silently dropped
    _, rows = grpo_settings(NovaHyperparameters(evalInterval=5), {}, has_eval=False)
    assert rows == [("evalInterval", "(none)", "ignored: the recipe has no data.eval")]


def test_a_setting_given_twice_or_an_uneven_round_is_refused():
    with pytest.raises(UserError, match="grpo.learning_rate and nova.hyperparameters.learningRate"):
        grpo_settings(NovaHyperparameters(learningRate=1e-5), {"learning_rate": 1e-4})
    with pytest.raises(UserError, match="not a multiple"):
        grpo_settings(NovaHyperparameters(batchSize=16, trainingSamplePerPrompt=3), {"per_device_train_batch_size": 5})
    with pytest.raises(UserError, match="trainingSamplePerPrompt"):
        load_recipe(SMOKE, ["nova.hyperparameters.trainingSamplePerPrompt=1"], check_files=False)
    with pytest.raises(UserError, match="epochcount"):
        load_recipe(SMOKE, ["nova.hyperparameters.epochcount=1"], check_files=False)


def test_job_config_is_a_valid_bedrock_request():
    """botocore's own validator for CreateModelCustomizationJob accepts what `job-config` prints."""
    from botocore.session import Session
    from botocore.validate import ParamValidator

    r = load_recipe(SMOKE, ["nova.hyperparameters.epochCount=2", "nova.hyperparameters.batchSize=16",
                            "nova.hyperparameters.trainingSamplePerPrompt=4", "nova.hyperparameters.learningRate=1e-5",
                            "nova.hyperparameters.reasoningEffort=high", "data.eval=artifacts/tiny/data/heldout.jsonl",
                            "grpo={}"],
                    check_files=False)
    cfg = job_config(r)
    model = Session().get_service_model("bedrock")
    shape = model.operation_model("CreateModelCustomizationJob").input_shape
    report = ParamValidator().validate(cfg, shape)
    assert not report.has_errors(), report.generate_report()
    assert cfg["customizationType"] == "REINFORCEMENT_FINE_TUNING"
    assert cfg["customizationConfig"]["rftConfig"]["hyperParameters"] == {
        "epochCount": 2, "batchSize": 16, "learningRate": 1e-5, "trainingSamplePerPrompt": 4,
        "reasoningEffort": "high"}
    assert cfg["validationDataConfig"]["validators"][0]["s3Uri"].endswith("/heldout.jsonl")
    # outside Bedrock's ranges: fine locally, refused for the job
    small = load_recipe(SMOKE, ["nova.hyperparameters.batchSize=4", "grpo={}"], check_files=False)
    with pytest.raises(UserError, match="batchSize 4 is outside Bedrock's range 16..512"):
        job_config(small)


def test_job_config_command_prints_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rlaif.cli", "nova", "job-config", SMOKE, "--set",
                        "nova.hyperparameters.batchSize=32", "--set", "nova.hyperparameters.trainingSamplePerPrompt=8",
                        "--set", "grpo={}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["customizationConfig"]["rftConfig"]["hyperParameters"]["batchSize"] == 32
    assert "batchSize -> local generation_batch_size = 256" in r.stderr


# -- Converse -> chat translation -------------------------------------------------------------------------------------
def test_converse_requests_translate_to_chat_completions():
    body = {"system": [{"text": "be strict"}, {"text": "really"}],
            "messages": [{"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
                         {"role": "assistant", "content": [{"text": "c"}]},
                         {"role": "user", "content": [{"text": "d"}]}],
            "inferenceConfig": {"maxTokens": 5, "temperature": 0, "topP": 0.9, "stopSequences": ["\n"]},
            "outputConfig": {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {
                "name": "v", "schema": '{"type": "object"}'}}}}}
    kw = to_chat_request(body, "judge")
    assert kw["messages"] == [{"role": "system", "content": "be strict\nreally"}, {"role": "user", "content": "ab"},
                              {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]
    assert (kw["max_tokens"], kw["temperature"], kw["top_p"], kw["stop"]) == (5, 0, 0.9, ["\n"])
    assert kw["response_format"]["json_schema"]["schema"] == {"type": "object"}


@pytest.mark.parametrize("body, match", [
    ({"messages": []}, "messages: must be a non-empty list"),
    ({"messages": [{"role": "user", "content": [{"image": {}}]}]}, "only text content blocks"),
    ({"messages": [{"role": "judge", "content": [{"text": "x"}]}]}, "role"),
    ({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}, "start with a user message"),
    ({"messages": [{"role": "user", "content": [{"text": "x"}]}], "inferenceConfig": {"maxTokens": "9"}}, "maxTokens"),
    ({"messages": [{"role": "user", "content": [{"text": "x"}]}],
      "outputConfig": {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": "{nope"}}}}},
     "not JSON"),
])
def test_bad_converse_requests_are_validation_errors(body, match):
    with pytest.raises(BedrockError, match=match) as e:
        to_chat_request(body, "judge")
    assert e.value.kind == "ValidationException"


def test_the_gateway_binds_elsewhere_only_with_a_key():
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    with pytest.raises(UserError, match="refusing to bind 0.0.0.0 without an API key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "secret")


# -- the exported Lambda ----------------------------------------------------------------------------------------------
CHECKS = [
    {"kind": "json_valid", "mode": "weight", "weight": 0.5},
    {"kind": "json_schema", "name": "has_comments", "mode": "weight",
     "schema": {"type": "object", "required": ["comments"],
                "properties": {"comments": {"type": "array", "minItems": 1, "items": {"type": "string",
                                                                                   "maxLength": 20}}}}},
    {"kind": "length", "min_words": 2, "max_chars": 60},
    {"kind": "regex_must", "pattern": "(?i)please", "mode": "weight"},
    {"kind": "regex_must_not", "pattern": "(?i)as an ai"},
    {"kind": "blocklist", "words": ["idiot", "stupid"]},
]


def export(tmp_path, overrides=(), checks=CHECKS):
    import runpy

    from rlaif.nova.export import export_lambda
    overrides = list(overrides) + [f"checks={json.dumps(checks)}"]
    recipe = load_recipe(SMOKE, overrides, check_files=False)
    path, notes = export_lambda(recipe, tmp_path / "lambda", model_id="judge")
    return recipe, runpy.run_path(str(path)), notes


TEXTS = st.one_of(
    st.text(max_size=80),
    st.sampled_from(['{"comments": ["a please"]}', '```json\n{"comments": []}\n```', '{"comments": ["x" ]}',
                     "please be kind", "As an AI I cannot", "you idiot please", "[1, 2]", '{"comments": [1]}',
                     '{"comments": ["this string is too long for it"]}', "", "one", "Stupidity is fine please"]),
)


@settings(max_examples=300, deadline=None)
@given(text=TEXTS)
def test_the_lambdas_checks_agree_with_rlaifs(tmp_path_factory, text):
    """Same verdict on every check, and the same combined reward, for any text."""
    from rlaif.portable.aggregate import combine
    from rlaif.portable.checks import run_checks
    recipe, lam, _ = _exported(tmp_path_factory)
    ok_a, scores_a, _ = run_checks(recipe.checks, text, "a prompt")
    ok_b, scores_b, _ = lam["run_checks"](lam["CHECKS"], text, "a prompt")
    assert (ok_a, scores_a) == (ok_b, scores_b)
    assert combine(0.7, recipe.checks, scores_a) == lam["combine"](0.7, lam["CHECKS"], scores_b)


_CACHE = {}


def _exported(tmp_path_factory):
    if "lam" not in _CACHE:
        _CACHE["lam"] = export(tmp_path_factory.mktemp("x"))
    return _CACHE["lam"]


def test_the_exported_lambda_is_stdlib_and_boto3_only(tmp_path):
    import ast
    export(tmp_path)
    tree = ast.parse((tmp_path / "lambda" / "lambda_function.py").read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert mods <= set(sys.stdlib_module_names) | {"boto3", "botocore"}, mods
    readme = (tmp_path / "lambda" / "README.md").read_text()
    for word in ("Timeout", "Memory", "Concurrency", "bedrock:InvokeModel", "lambda:InvokeFunction"):
        assert word in readme


def test_the_lambda_carries_rlaif_portable_whole_and_defines_each_name_once(tmp_path):
    """Every top-level name of every rlaif/portable module is in the Lambda, from that module's own source, and
    nothing in the file is defined twice (the modules and the body share one namespace there)."""
    import ast
    from pathlib import Path

    from rlaif import portable
    export(tmp_path)
    tree = ast.parse((tmp_path / "lambda" / "lambda_function.py").read_text())

    def defined(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                yield node.name
            elif isinstance(node, ast.Assign):
                yield from (t.id for t in node.targets if isinstance(t, ast.Name))
    names = list(defined(tree.body))
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
    for module in portable.MODULES:
        src = (Path(portable.__file__).parent / f"{module}.py").read_text()
        for name in defined(ast.parse(src).body):
            assert name in names, f"rlaif/portable/{module}.py: {name} is missing from the exported Lambda"


def test_what_a_lambda_cannot_do_is_refused_at_export(tmp_path):
    with pytest.raises(UserError, match="pairwise cannot be exported"):
        export(tmp_path, ["judge.mode=pairwise"], [])
    with pytest.raises(UserError, match="language_match.*not available in a Lambda"):
        export(tmp_path, [], [{"kind": "language_match"}])
    with pytest.raises(UserError, match="token bounds"):
        export(tmp_path, [], [{"kind": "length", "max_tokens": 5}])
    with pytest.raises(UserError, match=r"schema\.properties\.a\.oneOf"):
        export(tmp_path, [], [{"kind": "json_schema", "schema": {"properties": {"a": {"oneOf": [{}]}}}}])
    _, _, notes = export(tmp_path, ["judge.mode=logprob"], [])
    assert any("verdict mode" in n for n in notes)


def test_the_lambda_answers_every_sample_even_without_a_judge(tmp_path, monkeypatch):
    """A judge that cannot be reached costs the neutral reward, counted; bad samples get 0; nothing raises."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("JUDGE_MAX_ATTEMPTS", "2")
    _, lam, _ = export(tmp_path, ["judge.mode=verdict"], [{"kind": "blocklist", "words": ["idiot"]}])
    user = {"role": "user", "content": "say hi"}
    out = lam["lambda_handler"]([
        {"id": "a", "messages": [user, {"role": "assistant", "content": "hi please"}]},
        {"id": "b", "messages": [user, {"role": "assistant", "content": "you idiot"}]},
        {"id": "c", "messages": [user, {"role": "assistant", "content": "  "}]},
        {"id": "d", "messages": [user]},
        "not even a sample",
    ], None)
    got = {o["id"]: o for o in out}
    assert len(out) == 5
    assert got["a"]["aggregate_reward_score"] == 0.5
    assert {"name": "judge_failed", "value": 1.0, "type": "Metric"} in got["a"]["metrics_list"]
    assert got["b"]["aggregate_reward_score"] == 0.0  # the gate decided; no judge needed
    assert got["c"]["aggregate_reward_score"] == 0.0
    assert got["d"]["aggregate_reward_score"] == 0.0 and got[None]["aggregate_reward_score"] == 0.0


def test_the_lambdas_score_sample_never_raises_on_a_formula_edge_case_or_an_unforeseen_error(tmp_path):
    """A formula whose value is complex for a failing sample gives 0 (the formula's edge case) in the Lambda as in
    rlaif; and an error nobody foresaw (here a Converse reply without `output`: KeyError) is the neutral reward for
    that sample, counted as judge_failed, never an exception that fails Bedrock's whole call."""
    rubric = {"name": "r", "criteria": [{"name": "says_please", "question": "Does it say please?"}],
              "aggregation": "formula", "formula": "min((says_please - 0.5) ^ 0.5, 1)"}
    _, lam, _ = export(tmp_path, ["judge.mode=verdict", f"rubric={json.dumps(rubric)}"], [])
    env = lam["score_sample"].__globals__  # the exported module's own namespace
    verdicts = {"hi please": '{"says_please": "PASS"}', "hi": '{"says_please": "FAIL"}'}

    def converse(system, user, *request):  # the reply, by the completion in the sample block (longest match first)
        return verdicts[next(t for t in sorted(verdicts, key=len, reverse=True) if t in user)]
    env["converse"] = converse
    user = {"role": "user", "content": "say hi"}
    out = lam["lambda_handler"]([{"id": i, "messages": [user, {"role": "assistant", "content": t}]}
                                 for i, t in (("a", "hi please"), ("b", "hi"))], None)
    assert [o["aggregate_reward_score"] for o in out] == [pytest.approx(0.5 ** 0.5), 0.0]

    def broken(system, user, *request):
        return {"no output": True}["output"]  # KeyError, as a malformed Converse response would give
    env["converse"] = broken
    result, why = lam["score_sample"]({"id": "c", "messages": [user, {"role": "assistant", "content": "hi"}]})
    assert result["aggregate_reward_score"] == 0.5 and "KeyError" in why
    assert {"name": "judge_failed", "value": 1.0, "type": "Metric"} in result["metrics_list"]


# -- a Lambda file as the reward -------------------------------------------------------------------------------------
LAMBDA_SRC = '''
import json
SEEN = []
def lambda_handler(event, context):
    SEEN.append(event)
    out = []
    for s in event:
        text = s["messages"][-1]["content"]
        if text == "raise":
            raise RuntimeError("boom")
        if text == "skip":
            continue
        if text == "nan":
            out.append({"id": s["id"], "aggregate_reward_score": float("nan")})
            continue
        out.append({"id": s["id"], "aggregate_reward_score": len(text) / 10,
                    "metrics_list": [{"name": "length", "value": len(text), "type": "Metric"},
                                     {"name": "has_ref", "value": float("reference_answer" in s["metadata"]),
                                      "type": "Reward"}]})
    return out
'''


def test_a_lambda_file_is_called_with_bedrocks_event_and_its_answers_become_rewards(tmp_path):
    path = tmp_path / "my_lambda.py"
    path.write_text(LAMBDA_SRC)
    log = tmp_path / "judgments.jsonl"
    source = LambdaSource(path, batch_size=2, concurrency=2, judgment_log=log, on_error="neutral")
    reward = TRLReward(source)
    prompts = [[{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]] * 4
    metrics = {}
    got = asyncio.run(reward(
        prompts=prompts, completions=[[{"role": "assistant", "content": t}] for t in ("ab", "abcd", "x", "")],
        log_metric=lambda k, v: metrics.__setitem__(k, v), id=["r1", "r1", "r2", "r2"],
        nova_reference=[json.dumps({"risk": "cap"}), json.dumps({"risk": "cap"}), None, None],
        metadata=[json.dumps({"domain": "legal"})] * 2 + [json.dumps({})] * 2))
    assert got == [0.2, 0.4, 0.1, 0.0]
    assert metrics["lambda/length"] == pytest.approx(7 / 4) and metrics["lambda/has_ref"] == 0.5
    assert metrics["lambda/error_rate"] == 0.0 and metrics["lambda/calls"] == 2.0
    # the event Bedrock sends: id, messages ending with the assistant turn, metadata, reference_answer on top too
    rows = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert [r["reward"] for r in rows] == got  # one whole judgment-log line per sample
    # what the handler was given (its two batches run in parallel threads: either may have come first)
    sample = next(s for event in source.handler.__globals__["SEEN"] for s in event if s["id"] == "r1#0")
    assert sample["id"] == "r1#0"
    assert sample["messages"][-1] == {"role": "assistant", "content": "ab"}
    assert sample["metadata"] == {"domain": "legal", "reference_answer": {"risk": "cap"}}
    assert sample["reference_answer"] == {"risk": "cap"}


def test_lambda_errors_are_counted_and_get_the_fallback(tmp_path, caplog):
    path = tmp_path / "my_lambda.py"
    path.write_text(LAMBDA_SRC)
    reward = TRLReward(LambdaSource(path, batch_size=2, on_error="none", min_calls=4, max_fail_rate=0.5))
    metrics = {}
    texts = ["raise", "ok", "skip", "nan", "fine", "good"]
    got = asyncio.run(reward(prompts=[[{"role": "user", "content": "q"}]] * 6,
                             completions=[[{"role": "assistant", "content": t}] for t in texts],
                             log_metric=lambda k, v: metrics.__setitem__(k, v)))
    # batch 1 raised (both samples lost), batch 2 skipped one and sent NaN for the other, batch 3 fine
    assert got == [None, None, None, None, 0.4, 0.4]
    assert metrics["lambda/fallback_rate"] == pytest.approx(4 / 6)
    assert metrics["lambda/error_rate"] == pytest.approx(2 / 3)
    assert reward.summary()["fallbacks"] == 4
    assert "lambda_handler raised RuntimeError: boom" in caplog.text
    assert "is not a finite number" in caplog.text
    assert reward.should_stop and "reward Lambda failed for 67%" in reward.stop_reason


HANGING_LAMBDA = '''
import time
def lambda_handler(event, context):
    if any(s["messages"][-1]["content"] == "hang" for s in event):
        while True:  # a socket read that never returns
            time.sleep(3600)
    return [{"id": s["id"], "aggregate_reward_score": 1.0} for s in event]
'''


def test_a_hung_lambda_is_cut_at_its_timeout_and_counted(tmp_path):
    """A handler that never returns costs its batch (counted, the fallback) after timeout_s; the other batches
    stand, and nothing waits for the stuck thread (the call returns while it still runs)."""
    import threading
    path = tmp_path / "hangs.py"
    path.write_text(HANGING_LAMBDA)
    source = LambdaSource(path, batch_size=1, concurrency=2, timeout_s=2.0, on_error="none", min_calls=1,
                          max_fail_rate=0.9)
    got = {}
    worker = threading.Thread(target=lambda: got.update(out=asyncio.run(source.score(
        [Sample(str(i), [{"role": "user", "content": "q"}], t) for i, t in enumerate(["ok", "hang", "ok"])]))),
        daemon=True)
    worker.start()
    worker.join(120)  # generous: only a real hang crosses it
    assert not worker.is_alive(), "the hung Lambda hung the reward"
    assert got["out"].rewards == [1.0, None, 1.0] and got["out"].failed == [False, True, False]
    assert got["out"].metrics["lambda/timeouts"] == 1.0 and got["out"].metrics["lambda/error_rate"] == 1 / 3
    summary = source.summary()
    assert summary["timeouts"] == 1 and summary["errors"] == 1 and summary["failed"] == 1


def test_a_lambda_that_calls_sys_exit_fails_its_batch_at_once(tmp_path):
    import threading
    path = tmp_path / "exits.py"
    path.write_text("import sys\ndef lambda_handler(event, context):\n    sys.exit(3)\n")
    source = LambdaSource(path, timeout_s=600.0, on_error="none")
    got = {}
    worker = threading.Thread(target=lambda: got.update(out=source.score_event(
        [{"id": "a", "messages": [{"role": "assistant", "content": "x"}]}])), daemon=True)
    worker.start()
    worker.join(120)  # far below timeout_s: the batch must not wait for it
    assert not worker.is_alive() and got["out"][0] == [None] and source.summary()["timeouts"] == 0


def test_a_lambda_file_that_does_not_import_is_a_clear_error(tmp_path):
    from rlaif.rewards.lambda_source import load_handler
    bad = tmp_path / "bad.py"
    bad.write_text("import not_a_module_anywhere\n")
    with pytest.raises(UserError, match="importing the Lambda failed: ModuleNotFoundError"):
        load_handler(bad)
    none = tmp_path / "none.py"
    none.write_text("x = 1\n")
    with pytest.raises(UserError, match="defines no lambda_handler"):
        load_handler(none)


# -- rlaif data check -------------------------------------------------------------------------------------------------
def check(*args):
    return subprocess.run([sys.executable, "-m", "rlaif.cli", "data", "check", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def rec(i, msgs, **extra):
    return json.dumps({"id": f"r{i}", "messages": msgs, **extra})


U = {"role": "user", "content": "summarise clause 4"}


def test_data_check_passes_a_valid_bedrock_file(tmp_path):
    p = tmp_path / "ok.jsonl"
    lines = [rec(i, [{"role": "system", "content": "be brief"}, U], reference_answer={"risk": "x"}, domain="legal")
             for i in range(100)]
    lines.append(json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "chunked"}]}],
                             "reference_answer": "plain"}))
    p.write_text("\n".join(lines) + "\n")
    r = check(p)
    assert r.returncode == 0, r.stderr
    assert "101 valid record(s), 0 refused" in r.stdout


def test_data_check_names_file_line_and_field_of_broken_lines(tmp_path):
    p = tmp_path / "broken.jsonl"
    good = [rec(i, [U]) for i in range(100)]
    p.write_text("\n".join(good[:3] + ['{"messages": [', "\xff\xfe".encode("latin-1").decode("latin-1"),
                                       "[1, 2]", '{"id": {"x": 1}, "messages": [{"role": "user", "content": "x"}]}']
                           + good[3:]) + "\n")
    r = check(p)
    assert r.returncode == 1
    assert f"{p}:4: (line): not valid JSON" in r.stderr
    assert f"{p}:6: (record): must be a JSON object" in r.stderr
    assert f"{p}:7: id: must be a string or an integer" in r.stderr
    assert "Traceback" not in r.stderr
    assert "refused" in r.stdout


def test_data_check_refuses_wrong_roles_empty_content_and_multi_turn(tmp_path):
    p = tmp_path / "roles.jsonl"
    lines = [rec(i, [U]) for i in range(100)]
    lines += [
        rec(100, [{"role": "judge", "content": "x"}]),
        rec(101, [{"role": "user", "content": "   "}]),
        rec(102, [U, {"role": "system", "content": "late"}, U]),
        rec(103, [U, {"role": "assistant", "content": "earlier answer"}, U]),
        rec(104, [{"role": "user", "content": [{"type": "image", "source": "x.png"}]}]),
        rec(105, [{"role": "system", "content": "only a system"}]),
        rec(106, [U], reference_answer=""),
    ]
    p.write_text("\n".join(lines) + "\n")
    r = check(p)
    assert r.returncode == 1
    err = r.stderr
    assert f"{p}:101: messages[0].role: 'judge' is not one of system, user, assistant" in err
    assert f"{p}:102: messages[0].content: is empty" in err
    assert f"{p}:103: messages: a system message may only come first" in err
    assert f"{p}:104: messages: Bedrock RFT takes single-turn prompts" in err
    assert f"{p}:105: messages[0].content: must be a string or a list" in err
    assert f"{p}:106: messages: needs at least one user message" in err
    assert f"{p}:107: reference_answer: is empty" in err
    # multi-turn is fine for local training; the rest is not
    local = check(p, "--local")
    assert f"{p}:104:" not in local.stderr and local.returncode == 1


def test_data_check_counts_records_and_long_prompts(tmp_path):
    p = tmp_path / "few.jsonl"
    p.write_text("\n".join(rec(i, [{"role": "user", "content": "x" * (10 if i else 400)}]) for i in range(20)) + "\n")
    r = check(p, "--max-prompt-length", 50)
    assert r.returncode == 1
    assert "a Bedrock RFT job takes 100 to 20,000 training records; this file has 20" in r.stderr
    assert f"{p}:1: messages: prompt of 100 tokens is over maxPromptLength 50" in r.stderr
    assert "1 prompt(s) over maxPromptLength 50" in r.stdout
    assert check(p, "--local").returncode == 0


def test_data_check_reads_parquet_with_a_column_mapping(tmp_path):
    import pandas as pd
    p = tmp_path / "qa.parquet"
    pd.DataFrame({"question": [f"what is {i}?" for i in range(100)] + [""],
                  "answer": [str(i) for i in range(101)], "topic": ["math"] * 101}).to_parquet(p)
    r = check(p, "--columns", "prompt=question,reference_answer=answer")
    assert r.returncode == 1
    assert f"{p}:101: messages[0].content: is empty" in r.stderr
    assert "100 valid record(s), 1 refused" in r.stdout
    from rlaif.data.dataset import read_records
    res = read_records(p, {"prompt": "question", "reference_answer": "answer"})
    first = res.records[0]
    assert first["prompt"] == [{"role": "user", "content": "what is 0?"}]
    assert first["reference_answer"] == "0" and json.loads(first["metadata"]) == {"topic": "math"}
    bad = check(p, "--columns", "prompt=nope")
    assert bad.returncode == 1 and "no such column for prompt=nope" in bad.stderr


def test_the_gateway_takes_connections_from_the_moment_its_url_is_known():
    """`rlaif nova gateway` prints its URL before uvicorn starts serving; a client that connects at once (boto3's
    three quick tries) was refused: the socket was bound but not listening. Now it listens on construction, and
    connections wait in its backlog until uvicorn accepts them."""
    import socket

    from rlaif.nova.gateway import Gateway

    gw = Gateway(app=None)  # never served: only the socket is under test
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5):
            pass
    finally:
        gw.sock.close()
