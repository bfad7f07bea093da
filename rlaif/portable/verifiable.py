"""Verifiable rewards: a completion checked against a known answer (the record's `reference_answer` or one of its
metadata fields) by a rule, no judge. Each check gives 1.0 or 0.0 and says why.

    exact_match          the completion, stripped, equals the answer
    normalised_match     equal after normalising both: lower case, punctuation and the articles a/an/the dropped,
                         white space collapsed (the SQuAD answer normalisation)
    numeric_match        the final number of the completion equals the answer's final number within a tolerance;
                         "#### 72" marks the final answer as GSM8K writes it, else the last number counts;
                         thousands separators and a leading $ are read
    regex                the completion matches a pattern, in which `{answer}` stands for the answer, escaped
    json_field_equals    the completion is JSON (code fences allowed) and its field `json_key` equals the answer,
                         as JSON or as text (7 and "7" are equal)
    reference_contained  the normalised answer appears in the normalised completion as whole words
"""
from __future__ import annotations

import json
import math
import re
import string

VERIFIABLE_CHECKS = ("exact_match", "normalised_match", "numeric_match", "regex", "json_field_equals",
                     "reference_contained")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")
_GSM8K_FINAL = re.compile(r"####\s*(.+)")


def normalise_answer(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def final_number(text: str) -> float | None:
    """The final answer's number: the first number after '####' when it is there (GSM8K), else the last number."""
    m = _GSM8K_FINAL.search(text)
    found = _NUMBER.findall(m.group(1) if m else text)
    if not found:
        return None
    try:
        return float((found[0] if m else found[-1]).replace(",", "").replace("$", ""))
    except ValueError:
        return None


def answer_text(answer) -> str:
    """An answer as text: a string as it is, anything else (a number, an object) as its JSON."""
    return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)


def _json_of(text: str):
    m = re.fullmatch(r"\s*```(?:json)?\s*\n(.*?)\n?```\s*", text, re.DOTALL)
    return json.loads(m.group(1) if m else text)


def verify(check: str, completion: str, answer, *, tolerance: float = 1e-6, pattern: str | None = None,
           json_key: str | None = None) -> tuple[float, str]:
    """(1.0 or 0.0, why) for one completion against its answer."""
    if answer is None:
        return 0.0, "no answer to check against"
    want = answer_text(answer)
    if check == "exact_match":
        ok = completion.strip() == want.strip()
        return float(ok), "equal" if ok else "not equal"
    if check == "normalised_match":
        ok = normalise_answer(completion) == normalise_answer(want)
        return float(ok), "equal once normalised" if ok else "not equal once normalised"
    if check == "numeric_match":
        got, ref = final_number(completion), final_number(want) if not isinstance(answer, (int, float)) \
            else float(answer)
        if ref is None:
            return 0.0, f"the answer {want[:40]!r} holds no number"
        if got is None:
            return 0.0, "no number in the completion"
        ok = math.isclose(got, ref, rel_tol=tolerance, abs_tol=tolerance)
        return float(ok), f"{got:g} {'==' if ok else '!='} {ref:g}"
    if check == "regex":
        rx = re.compile((pattern or "{answer}").replace("{answer}", re.escape(want)))
        ok = rx.search(completion) is not None
        return float(ok), "pattern found" if ok else "pattern not found"
    if check == "json_field_equals":
        try:
            obj = _json_of(completion)
        except json.JSONDecodeError as e:
            return 0.0, f"not JSON: {e.msg}"
        if not isinstance(obj, dict) or json_key not in obj:
            return 0.0, f"no field '{json_key}'"
        got = obj[json_key]
        # as JSON, or as text: a record's "7" and a completion's 7 (or the other way round) are the same answer
        ok = got == answer or answer_text(got).strip() == want.strip()
        return float(ok), f"'{json_key}' {'equals' if ok else 'differs from'} the answer"
    if check == "reference_contained":
        ref = normalise_answer(want)
        ok = bool(ref) and re.search(r"(?<!\w)" + re.escape(ref) + r"(?!\w)", normalise_answer(completion)) is not None
        return float(ok), "answer contained" if ok else "answer not contained"
    raise ValueError(f"unknown verifiable check {check!r} (one of {', '.join(VERIFIABLE_CHECKS)})")
