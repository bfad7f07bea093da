"""Verdict mode: the judge writes one JSON verdict per sample, every criterion plus a short rationale.

The JSON is constrained by vLLM structured outputs (`response_format` json_schema; never the `guided_json`
field that vLLM 0.12+ silently ignores): each criterion is an enum (the pass/fail labels, or 1-5), and the
rationale is bounded, so a verdict parses unless the server ignores the constraint. The rationale is kept for
the judgment log and the completions table. The reply is read by rlaif/portable/verdicts.py, which the
exported Lambda carries too, so both read a verdict the same way.
"""
from __future__ import annotations

from rlaif.config.rubric import Criterion, Rubric
from rlaif.portable.criteria import verdict_max_tokens, verdict_schema
from rlaif.portable.verdicts import ParseError, ReasoningCutOff, final_answer, scores_from_text


def schema(rubric: Rubric, own: list[Criterion] = ()) -> dict:
    """The verdict's JSON schema (rlaif/portable/criteria.py, which the exported Lambda asks Converse with)."""
    return verdict_schema([(c.name, c.kind) for c in list(rubric.criteria) + list(own)], rubric.labels.pass_,
                          rubric.labels.fail)


def request_params(rubric: Rubric, temperature: float = 0.0, max_tokens: int | None = None,
                   reasoning_tokens: int = 0, own: list[Criterion] = ()) -> dict:
    # room for every field name and value plus the rationale, in tokens (a generous bound, not a target), and for
    # a reasoning judge's thinking before it
    budget = (max_tokens or verdict_max_tokens(len(rubric.criteria) + len(own))) + reasoning_tokens
    return {
        "max_tokens": budget,
        "temperature": temperature,
        "top_p": 1.0,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "verdict", "schema": schema(rubric, own), "strict": True}},
    }


def reasoning_of(resp) -> str:
    """A reasoning judge's thinking: what vLLM's reasoning parser set apart, or what the reply holds before its
    final answer."""
    try:
        msg = resp.choices[0].message
    except (AttributeError, IndexError, TypeError):
        return ""
    apart = getattr(msg, "reasoning_content", None) or getattr(msg, "reasoning", None)
    return apart if isinstance(apart, str) else final_answer(getattr(msg, "content", None) or "")[1]


def reply_text(resp) -> str:
    """The reply's content, or "" when it has none."""
    try:
        return resp.choices[0].message.content or ""
    except (AttributeError, IndexError, TypeError):
        return ""


def parse(resp, rubric: Rubric, own: list[Criterion] = (), reasoning: bool = False) -> tuple[dict[str, float], str]:
    """Per-criterion scores in [0, 1] and the rationale, from the final answer only. `reasoning`: the judge is a
    reasoning judge, so a reply cut at its token budget with no final answer ran out while thinking (a template
    that opens the think block in the prompt leaves no `<think>` in the reply to tell)."""
    try:
        msg = resp.choices[0].message
        text = msg.content or ""
    except (AttributeError, IndexError, TypeError) as e:
        raise ParseError(f"reply has no choices: {e}") from None
    cut_off = ReasoningCutOff("the judge's reasoning ran out of its token budget before its final answer")
    if not text.strip() and (getattr(msg, "reasoning_content", None) or getattr(msg, "reasoning", None)):
        raise cut_off
    thought_apart = getattr(msg, "reasoning_content", None) or getattr(msg, "reasoning", None)
    if reasoning and not thought_apart and getattr(resp.choices[0], "finish_reason", None) == "length" \
            and "</think>" not in text and "<|channel|>" not in text:
        raise cut_off  # (with the thinking set apart, a cut reply is a cut answer: an ordinary parse failure)
    return scores_from_text(text, [(c.name, c.kind) for c in list(rubric.criteria) + list(own)],
                            rubric.labels.pass_, rubric.labels.fail)
