"""Logprob mode: one constrained answer token per criterion; the score is P(pass) under the judge.

The request constrains the answer to the rubric's labels with vLLM structured outputs (`choice`), so the reply
always parses, and asks for the top logprobs of that one token. The score is the probability mass on the pass
label, normalised over the pass and fail labels: a dense reward in [0, 1] rather than a coin-flip 0 or 1.
"""
from __future__ import annotations

import math

from rlaif.rubric import Labels


def request_params(labels: Labels, top_logprobs: int = 5, temperature: float = 0.0) -> dict:
    return {
        "max_tokens": 1,
        "temperature": temperature,
        "top_p": 1.0,
        "logprobs": True,
        "top_logprobs": top_logprobs,
        # `structured_outputs` is current vLLM; the old `guided_choice` is silently ignored since vLLM 0.12
        "extra_body": {"structured_outputs": {"choice": [labels.pass_, labels.fail]}},
    }


class ParseError(ValueError):
    pass


def _matches(token: str, label: str) -> bool:
    t = token.strip()
    return bool(t) and label.startswith(t)


def score_from_response(resp, labels: Labels) -> float:
    """P(pass) / (P(pass) + P(fail)) from the first generated token's top logprobs."""
    try:
        choice = resp.choices[0]
        content = (choice.message.content or "").strip()
        tops = choice.logprobs.content[0].top_logprobs if choice.logprobs and choice.logprobs.content else []
    except (AttributeError, IndexError, TypeError) as e:
        raise ParseError(f"reply has no choices/logprobs: {e}") from None
    p_pass = sum(math.exp(t.logprob) for t in tops if _matches(t.token, labels.pass_))
    p_fail = sum(math.exp(t.logprob) for t in tops if _matches(t.token, labels.fail))
    if p_pass + p_fail > 0:
        return p_pass / (p_pass + p_fail)
    # no logprobs for either label: fall back on the constrained text itself
    if content == labels.pass_:
        return 1.0
    if content == labels.fail:
        return 0.0
    raise ParseError(f"answer {content[:40]!r} is neither {labels.pass_!r} nor {labels.fail!r}")
