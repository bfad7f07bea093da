"""A reasoning policy's final answer, as its chat template's response parser reads it.

gpt-oss writes `<|channel|>analysis<|message|>…<|end|><|start|>assistant<|channel|>final<|message|>…<|return|>`;
decoded with `skip_special_tokens=True` (what TRL and `generate` callers do by default) the markers vanish and the
completion reads "analysis…assistantfinal…": the judge scores the thinking as part of the answer, and a policy
learns to please the judge in its thoughts. With a response template on the tokenizer, TRL parses each completion
into `thinking` and `content`, and rewards receive the content; evaluation here does the same. A completion cut off
before its final answer has no content: it is scored as an empty answer (0, without the judge).
"""
from __future__ import annotations

from rlaif.errors import UserError


def parse_reasoning(tok, model: str):
    """Give `tok` the response parser of its chat template (TRL knows gpt-oss, Qwen3, DeepSeek-R1 and others)."""
    from trl.chat_template_utils import add_response_schema

    if getattr(tok, "response_template", None) is not None or getattr(tok, "response_schema", None) is not None:
        return tok  # the checkpoint ships its own parser
    try:
        return add_response_schema(tok)
    except ValueError:
        raise UserError(f"policy.reasoning: TRL has no response parser for the chat template of {model}; set "
                        "tok.response_template by hand (transformers' chat response parsing) or remove "
                        "policy.reasoning") from None


def final_answers(tok, completion_ids: list[list[int]], prompt_ids: list[list[int]]) -> list[str]:
    """Each completion's final answer: the parsed content with a response parser, else the decoded text. The parser
    needs each completion's prompt (gpt-oss's template opens the assistant turn there)."""
    if getattr(tok, "response_template", None) is None and getattr(tok, "response_schema", None) is None:
        return tok.batch_decode(completion_ids, skip_special_tokens=True)
    from trl.chat_template_utils import parse_response

    return [parse_response(tok, list(ids), prefix=list(p)).get("content") or ""
            for ids, p in zip(completion_ids, prompt_ids)]
