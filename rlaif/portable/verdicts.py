"""Reading a judge's JSON verdict: per-criterion scores in [0, 1] and its rationale."""
from __future__ import annotations

import json


class ParseError(ValueError):
    """A judge reply that does not say what was asked (counted as a parse failure, never raised to the trainer)."""


def scores_from_text(text: str, criteria: list, pass_label: str, fail_label: str) -> tuple[dict, str]:
    """A verdict's text -> ({criterion: score in [0, 1]}, rationale). `criteria` holds (name, kind) pairs.

    A judge without structured outputs (a Bedrock model, say) may wrap its JSON in a code fence or a sentence:
    the outermost {...} is read then.
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
