"""Verdict mode: the judge writes one JSON verdict per sample, every criterion plus a short rationale.

The JSON is constrained by vLLM structured outputs (`response_format` json_schema; never the `guided_json`
field that vLLM 0.12+ silently ignores): each criterion is an enum (the pass/fail labels, or 1-5), and the
rationale is bounded, so a verdict parses unless the server ignores the constraint. The rationale is kept for
the judgment log and the completions table. The reply is read by rlaif/portable/verdicts.py, which the
exported Lambda carries too, so both read a verdict the same way.
"""
from __future__ import annotations

from rlaif.config.rubric import Rubric
from rlaif.portable.verdicts import ParseError, scores_from_text

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
