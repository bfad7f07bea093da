"""Logprob mode: one constrained answer token per criterion; the score is the expected value under the judge.

The request constrains the answer with vLLM structured outputs (`choice`), so the reply always parses, and asks
for the top logprobs of that one token. A pass/fail criterion scores the probability mass on the pass label,
normalised over pass and fail; a 1-5 criterion scores the expected level, mapped to [0, 1]. Dense rewards in
[0, 1], one short request each, no rationale.
"""
from __future__ import annotations

import math

from rlaif.config.rubric import Criterion, Labels
from rlaif.judge.backend import Reply
from rlaif.portable.verdicts import ParseError

SCALE = ["1", "2", "3", "4", "5"]


def choices(criterion: Criterion, labels: Labels) -> list[str]:
    return SCALE if criterion.kind == "scale" else [labels.pass_, labels.fail]


def request_params(labels: Labels, top_logprobs: int = 5, temperature: float = 0.0,
                   criterion: Criterion | None = None) -> dict:
    options = choices(criterion, labels) if criterion is not None else [labels.pass_, labels.fail]
    return {
        "max_tokens": 1,
        "temperature": temperature,
        "top_p": 1.0,
        "logprobs": True,
        "top_logprobs": max(top_logprobs, len(options)),
        # `structured_outputs` is current vLLM; the old `guided_choice` is silently ignored since vLLM 0.12
        "extra_body": {"structured_outputs": {"choice": options}},
    }


def first_token(resp) -> tuple[str, list[tuple[str, float]]]:
    """The answer and its top logprobs as (token, logprob) pairs: read from the JSON itself for a server's reply
    (`Reply`: an object per field of every reply cost more than the scoring, issue 27), by attribute for the
    in-process judge's and the SDK's objects."""
    try:
        if type(resp) is Reply:
            choice = resp.json["choices"][0]
            content = (choice["message"]["content"] or "").strip()
            lp = choice.get("logprobs")
            first = lp.get("content") if lp else None
            return content, [(t["token"], t["logprob"]) for t in first[0]["top_logprobs"]] if first else []
        choice = resp.choices[0]
        content = (choice.message.content or "").strip()
        tops = choice.logprobs.content[0].top_logprobs if choice.logprobs and choice.logprobs.content else []
        return content, [(t.token, t.logprob) for t in tops]
    except (AttributeError, IndexError, TypeError, KeyError) as e:
        raise ParseError(f"reply has no choices/logprobs: {e!r}") from None


def score_from_response(resp, labels: Labels, criterion: Criterion | None = None) -> float:
    """A score in [0, 1] from the first generated token's top logprobs (or, failing those, its text)."""
    content, tops = first_token(resp)
    if criterion is not None and criterion.kind == "scale":
        mass = {s: sum(math.exp(lp) for t, lp in tops if t.strip() == s) for s in SCALE}
        total = sum(mass.values())
        if total > 0:
            return sum((int(s) - 1) / 4 * m for s, m in mass.items()) / total
        if content in SCALE:
            return (int(content) - 1) / 4
        raise ParseError(f"answer {content[:40]!r} is not a digit from 1 to 5")
    passes, fails = [], []  # one pass over the tops; summed as before (sum() rounds its own way on Python 3.12+)
    for token, lp in tops:
        token = token.strip()
        if not token:
            continue
        to_pass, to_fail = labels.pass_.startswith(token), labels.fail.startswith(token)
        if to_pass and not to_fail:  # a token both labels begin with says nothing about which the judge meant
            passes.append(math.exp(lp))
        elif to_fail and not to_pass:
            fails.append(math.exp(lp))
    p_pass, p_fail = sum(passes), sum(fails)
    if p_pass + p_fail > 0:
        return p_pass / (p_pass + p_fail)
    if content == labels.pass_:
        return 1.0
    if content == labels.fail:
        return 0.0
    raise ParseError(f"answer {content[:40]!r} is neither {labels.pass_!r} nor {labels.fail!r}")
