import math
from types import SimpleNamespace as NS

import pytest

from rlaif.config.rubric import Labels
from rlaif.judge.backend import Reply
from rlaif.judge.logprob import ParseError, request_params, score_from_response

L = Labels()


SHAPE = ["objects"]


@pytest.fixture(autouse=True, params=["objects", "json"])
def shape(request):
    """Every reply below is read both ways: as objects (the in-process judge's, the SDK's) and as a server's JSON
    (`Reply`, which the modes score from the dicts)."""
    SHAPE[0] = request.param


def reply(content, tops):
    if SHAPE[0] == "json":
        lp = ({"content": [{"token": tops[0][0] if tops else "", "logprob": 0.0,
                            "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in tops]}]}
              if tops is not None else None)
        return Reply({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": lp}]})
    lp = NS(content=[NS(top_logprobs=[NS(token=t, logprob=math.log(p)) for t, p in tops])]) if tops is not None else None
    return NS(choices=[NS(message=NS(content=content), logprobs=lp)])


def test_score_is_pass_mass_normalised_over_the_two_labels():
    assert score_from_response(reply("PASS", [("PASS", 0.6), ("FAIL", 0.2), ("x", 0.2)]), L) == pytest.approx(0.75)
    assert score_from_response(reply("FAIL", [("FAIL", 0.9), (" PASS", 0.1)]), L) == pytest.approx(0.1)


def test_without_label_logprobs_the_constrained_text_decides():
    assert score_from_response(reply("PASS", [("x", 0.9)]), L) == 1.0
    assert score_from_response(reply("FAIL", None), L) == 0.0


def test_garbage_reply_is_a_parse_error_not_a_zero():
    with pytest.raises(ParseError):
        score_from_response(reply("maybe", [("maybe", 0.9)]), L)
    with pytest.raises(ParseError):
        score_from_response(NS(choices=[]), L)
    with pytest.raises(ParseError):
        score_from_response(Reply({"choices": []}), L)
    with pytest.raises(ParseError):
        score_from_response(Reply({"choices": [{"index": 0, "message": {"content": "PASS"},
                                                "logprobs": {"content": [{"token": "PASS"}]}}]}), L)


def test_request_uses_structured_outputs_not_the_ignored_guided_fields():
    p = request_params(L)
    assert p["extra_body"] == {"structured_outputs": {"choice": ["PASS", "FAIL"]}}
    assert p["temperature"] == 0.0 and p["max_tokens"] == 1 and p["logprobs"] is True
    assert not any(k.startswith("guided") for k in p["extra_body"])


def test_scale_criterion_scores_the_expected_level():
    from rlaif.config.rubric import Criterion
    crit = Criterion(name="s", question="How good?", kind="scale", levels={i: str(i) for i in range(1, 6)})
    p = request_params(L, criterion=crit)
    assert p["extra_body"]["structured_outputs"]["choice"] == ["1", "2", "3", "4", "5"]
    # half on 5, half on 3 -> expected level 4 -> (4 - 1) / 4
    assert score_from_response(reply("5", [("5", 0.5), ("3", 0.5)]), L, crit) == pytest.approx(0.75)
    assert score_from_response(reply("1", None), L, crit) == 0.0


def test_verdict_json_is_parsed_per_criterion():
    from rlaif.config.rubric import load_rubric
    from rlaif.judge import verdict
    rb = load_rubric({"name": "r", "criteria": [
        {"name": "polite", "question": "Polite?"},
        {"name": "quality", "question": "How good?", "kind": "scale", "levels": {i: str(i) for i in range(1, 6)}}]})
    schema = verdict.schema(rb)
    assert schema["properties"]["polite"]["enum"] == ["PASS", "FAIL"]
    assert schema["properties"]["quality"]["enum"] == [1, 2, 3, 4, 5]
    assert verdict.request_params(rb)["response_format"]["type"] == "json_schema"
    scores, why = verdict.parse(reply('{"polite":"PASS","quality":4,"rationale":"kind\nand clear"}', None), rb)
    assert scores == {"polite": 1.0, "quality": 0.75} and why.startswith("kind")
    for bad in ('{"polite":"YES","quality":4,"rationale":""}', '{"polite":"PASS","quality":9,"rationale":""}',
                "not json", "[1]"):
        with pytest.raises(ParseError):
            verdict.parse(reply(bad, None), rb)


def test_a_token_that_begins_both_labels_counts_for_neither():
    """Recipes cannot give two labels one first character (Labels refuses it), but the scoring must not rely on
    that: a token that both labels begin with says nothing about which one the judge meant."""
    shared = Labels.model_construct(pass_="Yes", fail="Yeah")
    assert score_from_response(reply("Yes", [("Ye", 0.5), ("Yes", 0.3), ("Yeah", 0.1)]), shared) == pytest.approx(0.75)
    with pytest.raises(ParseError):
        score_from_response(reply("Ye", [("Ye", 0.9)]), shared)
