import pytest
from conftest import SMOKE
from pydantic import TypeAdapter

from rlaif.config.checks import Check
from rlaif.config.recipe import load_recipe
from rlaif.errors import UserError
from rlaif.portable.aggregate import combine
from rlaif.portable.checks import run_checks


def checks(*specs):
    return TypeAdapter(list[Check]).validate_python(list(specs))


@pytest.mark.parametrize("spec,text,ok", [
    ({"kind": "json_valid"}, '{"a": 1}', True),
    ({"kind": "json_valid"}, '```json\n{"a": 1}\n```', True),
    ({"kind": "json_valid"}, '{"a": 1', False),
    ({"kind": "json_schema", "schema": {"type": "object", "required": ["comments"]}}, '{"comments": []}', True),
    ({"kind": "json_schema", "schema": {"type": "object", "required": ["comments"]}}, '{"c": []}', False),
    ({"kind": "length", "max_chars": 5}, "abcdef", False),
    ({"kind": "length", "min_words": 2, "max_words": 3}, "one two", True),
    ({"kind": "regex_must", "pattern": r"(?i)\bplease\b"}, "Please sit", True),
    ({"kind": "regex_must_not", "pattern": r"(?i)as an ai"}, "As an AI, I", False),
    ({"kind": "blocklist", "words": ["idiot"]}, "you IDIOT", False),
    ({"kind": "blocklist", "words": ["idiot"]}, "idiotic is fine", True),
])
def test_each_check(spec, text, ok):
    gates_ok, scores, details = run_checks(checks(spec), text)
    assert gates_ok is ok and list(scores.values()) == [1.0 if ok else 0.0] and details


def test_language_match_compares_prompt_and_response():
    [c] = checks({"kind": "language_match"})
    de = "Bitte schreiben Sie mir eine kurze Antwort über den Vertrag."
    assert c.run("Here is a short answer about the contract you sent.", de)[0] is False
    assert c.run("Hier ist eine kurze Antwort über den Vertrag, den Sie geschickt haben.", de)[0] is True
    assert c.run("ok", de) == (True, "too short to tell the language")


@pytest.mark.integration  # needs the tiny models built
def test_token_bounds_use_the_policy_tokenizer(tiny):
    r = load_recipe(SMOKE, ["checks=[{kind: length, max_tokens: 3}]"])
    [c] = r.checks
    assert c.tokenizer == r.policy.model
    assert c.run("please")[0] is True
    assert c.run("please sit on the mat with the cat")[0] is False


def test_gate_and_weight_combine_with_the_judge():
    cs = checks({"kind": "json_valid"}, {"kind": "length", "max_chars": 10, "mode": "weight", "weight": 1.0})
    ok, scores, _ = run_checks(cs, '{"a": 12345678}')
    assert ok and scores == {"json_valid": 1.0, "length": 0.0}
    assert combine(0.8, cs, scores) == pytest.approx(0.4)  # (1 * 0.8 + 1 * 0) / 2
    assert run_checks(cs, "nope")[0] is False


def test_bad_check_specs_are_refused_with_the_field():
    with pytest.raises(UserError, match=r"checks\.0"):
        load_recipe(SMOKE, ["checks=[{kind: regex_must, pattern: '(unclosed'}]"], check_files=False)
    with pytest.raises(UserError, match=r"checks\.0"):
        load_recipe(SMOKE, ["checks=[{kind: no_such_check}]"], check_files=False)
    with pytest.raises(UserError, match=r"checks\.0"):
        load_recipe(SMOKE, ["checks=[{kind: json_schema, schema: {type: 12}}]"], check_files=False)
