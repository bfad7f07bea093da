"""Security: nothing a user's data, recipe or rubric holds is run as code (the code a recipe names, a Lambda file or a
`kind: python` function, runs only when the reward is built: tests/test_rewards.py), and an exported Lambda keeps
sample text out of its logs unless LOG_SAMPLES=1 asks for it."""
import json
import logging
import runpy

import pytest

from rlaif.config.recipe import load_recipe
from rlaif.config.rubric import load_rubric
from rlaif.errors import UserError
from rlaif.judge.prompt import render

SMOKE = "recipes/smoke.yaml"
PROMPT_TEXT = "SECRET-PROMPT-7f3a tell me about cats"
RESPONSE_TEXT = "SECRET-ANSWER-91bc cats are nice please"


def _lambda(tmp_path, monkeypatch, log_samples: str | None, overrides=()):
    """The smoke recipe exported as a Bedrock reward Lambda, loaded with a judge endpoint nobody listens on."""
    from rlaif.nova.export import export_lambda
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("JUDGE_MAX_ATTEMPTS", "1")
    if log_samples is None:
        monkeypatch.delenv("LOG_SAMPLES", raising=False)
    else:
        monkeypatch.setenv("LOG_SAMPLES", log_samples)
    recipe = load_recipe(SMOKE, ["judge.mode=verdict", *overrides], check_files=False)
    path, _ = export_lambda(recipe, tmp_path / "lambda", model_id="judge")
    return runpy.run_path(str(path))  # LOG_SAMPLES is read when the Lambda's module loads, as on a cold start


EVENT = [{"id": "s1", "messages": [{"role": "user", "content": PROMPT_TEXT},
                                   {"role": "assistant", "content": RESPONSE_TEXT}],
          "metadata": {"reference_answer": "SECRET-REFERENCE-c0de"}},
         {"id": "s2", "messages": [{"role": "user", "content": PROMPT_TEXT}, {"role": "assistant", "content": ""}]}]


@pytest.mark.parametrize("setting", [None, "0"])
def test_an_exported_lambda_logs_no_sample_text_by_default(tmp_path, monkeypatch, caplog, capsys, setting):
    lam = _lambda(tmp_path, monkeypatch, setting)
    caplog.set_level(logging.INFO)  # every logger, botocore's included, at the Lambda runtime's level
    out = lam["lambda_handler"](EVENT, None)
    assert [o["id"] for o in out] == ["s1", "s2"]
    logged = caplog.text + capsys.readouterr().err
    assert "scored 2 samples" in logged  # it does log: counts and rewards
    for secret in ("SECRET-PROMPT", "SECRET-ANSWER", "SECRET-REFERENCE"):
        assert secret not in logged


def test_an_exported_lambda_logs_samples_when_asked(tmp_path, monkeypatch, caplog):
    lam = _lambda(tmp_path, monkeypatch, "1")
    caplog.set_level(logging.INFO, logger="rlaif_reward_lambda")
    lam["lambda_handler"](EVENT, None)
    lines = [r.getMessage() for r in caplog.records if r.name == "rlaif_reward_lambda"]
    assert any(ln.startswith("sample s1: reward 0.500: judge failed") and RESPONSE_TEXT in ln for ln in lines)
    assert any(ln.startswith("sample s2: reward 0.000: empty response") for ln in lines)


def test_rubric_text_that_looks_like_code_is_data_in_the_exported_lambda(tmp_path, monkeypatch):
    """A rubric question is written into the Lambda as a literal, so quotes in it cannot break out into code."""
    marker = tmp_path / "ran"
    question = f'Polite? """); __import__("pathlib").Path({str(marker)!r}).touch(); ("""' + " {{7*7}} ${x}"
    rubric = {"name": "r", "criteria": [{"name": "polite", "question": question}]}
    lam = _lambda(tmp_path, monkeypatch, None, [f"rubric={json.dumps(rubric)}", "checks=[]"])
    assert question in lam["CONFIG"]["judges"]["judge"]["system"]
    lam["lambda_handler"](EVENT[:1], None)
    assert not marker.exists()


CODE_FORMULAS = [
    "__import__('os').system('true')", "polite.__class__", "polite.real", "(lambda: 1)()",
    "[x for x in (polite,)][0]", "sum(x for x in (polite,))", "polite if polite else 0", "open('/etc/passwd')",
    "exec('1')", "eval('1')", "getattr(polite, 'real')", "globals()", "f'{polite}'", "polite[0]", "(x := 1)",
    "min(polite, key=abs)", "'a' * 3", "().__class__.__bases__[0].__subclasses__()", "polite and 1", "polite < 1",
]


@pytest.mark.parametrize("formula", CODE_FORMULAS)
def test_a_formula_with_code_is_refused_when_the_rubric_loads(tmp_path, formula):
    rubric = {"name": "r", "criteria": [{"name": "polite", "question": "Polite?"}], "aggregation": "formula",
              "formula": formula}
    with pytest.raises(UserError, match="formula"):
        load_rubric(rubric)


YAML_CODE = "!!python/object/apply:os.system ['touch {marker}']"


def test_a_recipe_with_a_python_tag_is_an_error_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    tag = YAML_CODE.format(marker=marker)
    for text in (f"name: {tag}\n", open(SMOKE).read().replace("name: smoke", f"name: {tag}"),
                 f"!!python/object/new:os.system [touch {marker}]\n",
                 open(SMOKE).read() + "\ngrpo_extra: !!python/name:os.system\n"):
        path = tmp_path / "recipe.yaml"
        path.write_text(text)
        with pytest.raises(UserError, match=str(path)):
            load_recipe(path, check_files=False)
    assert not marker.exists()


def test_a_rubric_file_with_a_python_tag_is_an_error_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "rubric.yaml"
    path.write_text(f"name: {YAML_CODE.format(marker=marker)}\ncriteria:\n  - name: a\n    question: q?\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_rubric(str(path))
    assert not marker.exists()


def test_a_set_override_with_a_python_tag_stays_a_string(tmp_path):
    marker = tmp_path / "ran"
    r = load_recipe(SMOKE, [f"name={YAML_CODE.format(marker=marker)}"], check_files=False)
    assert r.name == YAML_CODE.format(marker=marker)
    assert not marker.exists()


def test_sample_text_that_looks_like_a_template_reaches_the_judge_verbatim():
    rb = load_rubric("says_please")
    texts = ["{{7*7}}", "${7*7}", "{0}", "%(x)s", "{criterion.name}", "__import__('os').system('true')"]
    for t in texts:
        rd = render(rb, rb.criteria[0], [{"role": "user", "content": t}], t, reference=t)
        assert rd.messages[1]["content"].count(t) == 3  # prompt, reference and response, as written
        assert "49" not in rd.messages[1]["content"]
