"""Verdict mode: the judge writes one JSON verdict per sample, every criterion plus a short rationale.

The JSON is constrained by vLLM structured outputs (`response_format` json_schema; never the `guided_json`
field that vLLM 0.12+ silently ignores): each criterion is an enum (the pass/fail labels, or 1-5), and the
rationale is bounded, so a verdict parses unless the server ignores the constraint. The rationale is kept for
the judgment log and the completions table.
"""
from __future__ import annotations

import json

from rlaif.judge.logprob import ParseError
from rlaif.rubric import Rubric

RATIONALE_MAX = 300


def schema(rubric: Rubric) -> dict:
    props = {}
    for c in rubric.criteria:
        props[c.name] = ({"type": "integer", "enum": [1, 2, 3, 4, 5]} if c.kind == "scale"
                         else {"type": "string", "enum": [rubric.labels.pass_, rubric.labels.fail]})
    props["rationale"] = {"type": "string", "maxLength": RATIONALE_MAX}
    return {"type": "object", "properties": props, "required": [c.name for c in rubric.criteria] + ["rationale"],
            "additionalProperties": False}


def request_params(rubric: Rubric, temperature: float = 0.0, max_tokens: int | None = None) -> dict:
    # room for every field name and value plus the rationale, in tokens (a generous bound, not a target)
    budget = max_tokens or 32 + 16 * len(rubric.criteria) + RATIONALE_MAX
    return {
        "max_tokens": budget,
        "temperature": temperature,
        "top_p": 1.0,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "verdict", "schema": schema(rubric), "strict": True}},
    }


def parse(resp, rubric: Rubric) -> tuple[dict[str, float], str]:
    """Per-criterion scores in [0, 1] and the rationale."""
    try:
        text = resp.choices[0].message.content or ""
    except (AttributeError, IndexError, TypeError) as e:
        raise ParseError(f"reply has no choices: {e}") from None
    return scores_from_text(text, [(c.name, c.kind) for c in rubric.criteria], rubric.labels.pass_,
                            rubric.labels.fail)


def scores_from_text(text: str, criteria: list, pass_label: str, fail_label: str) -> tuple[dict, str]:
    """A verdict's text -> ({criterion: score in [0, 1]}, rationale). `criteria` holds (name, kind) pairs.

    Standard library only: `rlaif nova export-lambda` copies this function into the Lambda it writes, so the
    Lambda and rlaif read the same reply the same way. A judge without structured outputs (a Bedrock model,
    say) may wrap its JSON in a code fence or a sentence: the outermost {...} is read then.
    """
    try:
        obj = json.loads(text, strict=False)  # constrained strings may hold raw control characters
    except json.JSONDecodeError as e:
        start, end = text.find("{"), text.rfind("}")
        try:
            obj = json.loads(text[start:end + 1], strict=False) if 0 <= start < end else None
        except json.JSONDecodeError:
            obj = None
        if obj is None:
            raise ParseError(f"verdict is not JSON ({e.msg}): {text[:80]!r}") from None
    if not isinstance(obj, dict):
        raise ParseError(f"verdict is not a JSON object: {text[:80]!r}")
    scores = {}
    for name, kind in criteria:
        v = obj.get(name)
        if kind == "scale":
            if isinstance(v, str) and v.strip().isdigit():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 5:
                raise ParseError(f"{name}: {v!r} is not a score from 1 to 5")
            scores[name] = (v - 1) / 4
        else:
            if v not in (pass_label, fail_label):
                raise ParseError(f"{name}: {v!r} is neither {pass_label!r} nor {fail_label!r}")
            scores[name] = 1.0 if v == pass_label else 0.0
    rationale = obj.get("rationale")
    return scores, rationale if isinstance(rationale, str) else ""
