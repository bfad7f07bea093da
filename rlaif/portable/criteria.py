"""Criteria as the judge is shown them and asked about in verdict mode, and a record's own criteria (its `rubric`,
`metadata.rubric` in a reward-Lambda event) read with the standard library, so that the exported Lambda judges
them as rlaif does: listed after the sample, in the verdict's JSON schema, and joined to the rubric's aggregate.
"""
from __future__ import annotations

import re

RATIONALE_MAX = 300  # characters of the verdict's rationale
CRITERION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_CRITERION_KEYS = {"name", "question", "kind", "levels", "weight", "essential", "uses_reference"}


def criterion_lines(name: str, question: str, kind: str = "pass_fail", levels: dict | None = None) -> list[str]:
    """A criterion as the judge reads it: its name and question, and a scaled one's levels 1 to 5."""
    lines = [f"- {name}: {question}"]
    if kind == "scale":
        lines += [f"  {k}: {v}" for k, v in sorted(levels.items())]
    return lines


def own_criteria_block(own: list[dict]) -> str:
    """What follows the sample in a verdict request when its record has criteria of its own."""
    return "\n".join(["Grade this sample on its own criteria too:"]
                     + [ln for c in own for ln in criterion_lines(c["name"], c["question"], c["kind"], c["levels"])])


def verdict_schema(criteria: list, pass_label: str, fail_label: str) -> dict:
    """The JSON schema of a verdict: each criterion ((name, kind) pairs) an enum, then a bounded rationale."""
    props = {name: ({"type": "integer", "enum": [1, 2, 3, 4, 5]} if kind == "scale"
                    else {"type": "string", "enum": [pass_label, fail_label]}) for name, kind in criteria}
    props["rationale"] = {"type": "string", "maxLength": RATIONALE_MAX}
    return {"type": "object", "properties": props, "required": [name for name, _ in criteria] + ["rationale"],
            "additionalProperties": False}


def verdict_max_tokens(n_criteria: int) -> int:
    """Room for every field name and value of a verdict plus its rationale, in tokens (a generous bound)."""
    return 32 + 16 * n_criteria + RATIONALE_MAX


def record_criteria(raw) -> list[dict]:
    """A record's own criteria, checked as rlaif checks a rubric file's: `{"criteria": [{name, question, kind,
    levels, weight, essential, uses_reference}, ...]}` -> the criteria with their defaults. A ValueError says
    which field is wrong."""
    if not isinstance(raw, dict) or set(raw) != {"criteria"}:
        raise ValueError("rubric: must be an object with 'criteria' only")
    items = raw["criteria"]
    if not isinstance(items, list) or not items:
        raise ValueError("rubric.criteria: must be a non-empty list")
    out = []
    for i, c in enumerate(items):
        where = f"rubric.criteria[{i}]"
        if not isinstance(c, dict):
            raise ValueError(f"{where}: must be an object")
        if set(c) - _CRITERION_KEYS:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(set(c) - _CRITERION_KEYS))}")
        name, question = c.get("name"), c.get("question")
        if not isinstance(name, str) or not CRITERION_NAME.match(name):
            raise ValueError(f"{where}.name: must be a name of letters, digits and _, starting with a letter")
        if not isinstance(question, str) or not question:
            raise ValueError(f"{where}.question: must be a non-empty string")
        kind = c.get("kind", "pass_fail")
        if kind not in ("pass_fail", "scale"):
            raise ValueError(f"{where}.kind: must be pass_fail or scale")
        weight = c.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ValueError(f"{where}.weight: must be a number above 0")
        flags = {k: c.get(k, False) for k in ("essential", "uses_reference")}
        if any(not isinstance(v, bool) for v in flags.values()):
            raise ValueError(f"{where}: essential and uses_reference must be true or false")
        levels = c.get("levels")
        if kind == "scale":
            try:
                levels = {int(k): v for k, v in (levels or {}).items()}
            except (TypeError, ValueError, AttributeError):
                levels = {}
            if sorted(levels) != [1, 2, 3, 4, 5] or not all(isinstance(v, str) for v in levels.values()):
                raise ValueError(f"{where}.levels: a scale criterion needs levels 1 to 5, each with a description")
        elif levels:
            raise ValueError(f"{where}.levels: only for kind: scale")
        out.append({"name": name, "question": question, "kind": kind, "levels": levels if kind == "scale" else None,
                    "weight": float(weight), **flags})
    names = [c["name"] for c in out]
    if len(set(names)) < len(names):
        raise ValueError(f"rubric.criteria: names must be unique; repeated: "
                         f"{', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return out


def with_own_criteria(value: float, shared_weight: float, own: list, scores: dict, gate: bool) -> float:
    """The rubric's aggregate with a record's own criteria ((name, weight, essential) triples) joined as a weighted
    mean beside it; under aggregation: gate an essential one that fails (below 0.5) zeroes the reward."""
    if not own:
        return value
    if gate and any(essential and scores[name] < 0.5 for name, _, essential in own):
        return 0.0
    own_weight = sum(w for _, w, _ in own)
    return (shared_weight * value + sum(w * scores[name] for name, w, _ in own)) / (shared_weight + own_weight)
