"""Reading a judge's JSON verdict: per-criterion scores in [0, 1] and its rationale."""
from __future__ import annotations

import json
import re


class ParseError(ValueError):
    """A judge reply that does not say what was asked (counted as a parse failure, never raised to the trainer)."""


class ReasoningCutOff(ParseError):
    """A reasoning judge used up its budget thinking, before its final answer."""


_HARMONY_FINAL = re.compile(r"<\|channel\|>\s*final\s*(?:<\|constrain\|>[^<]*)?<\|message\|>(.*?)"
                            r"(?:<\|return\|>|<\|end\|>|<\|call\|>|$)", re.DOTALL)
_HARMONY_ANY = re.compile(r"<\|channel\|>\s*(\w+)\s*(?:<\|constrain\|>[^<]*)?<\|message\|>(.*?)"
                          r"(?=<\|end\|>|<\|return\|>|<\|start\|>|$)", re.DOTALL)


def final_answer(text: str) -> tuple[str, str, bool]:
    """(the final answer, the reasoning before it, whether the answer came) of a judge's reply. Reasoning judges
    think before they answer: Qwen3 and DeepSeek-R1 in `<think>...</think>`, gpt-oss in harmony channels
    (`<|channel|>analysis<|message|>...` then `<|channel|>final<|message|>...`). Only the final answer is a verdict;
    a reply still thinking when its budget ran out has none."""
    if "<|channel|>" in text:
        final = _HARMONY_FINAL.search(text)
        reasoning = "\n".join(body.strip() for name, body in _HARMONY_ANY.findall(text) if name != "final")
        return (final.group(1).strip(), reasoning, True) if final else ("", reasoning, False)
    if "</think>" in text:
        head, _, answer = text.rpartition("</think>")
        return answer.strip(), head.replace("<think>", "", 1).strip(), True
    if text.lstrip().startswith("<think>"):
        return "", text.lstrip()[len("<think>"):].strip(), False
    return text, "", True


def scores_from_text(text: str, criteria: list, pass_label: str, fail_label: str) -> tuple[dict, str]:
    """A verdict's text -> ({criterion: score in [0, 1]}, rationale). `criteria` holds (name, kind) pairs.

    A judge without structured outputs (a Bedrock model, say) may wrap its JSON in a code fence or a sentence:
    the outermost {...} is read then. A reasoning judge's thinking is set aside first (`final_answer`).
    """
    text, _, complete = final_answer(text)
    if not complete:
        raise ReasoningCutOff("the judge's reasoning ran out of its token budget before its final answer")
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
