"""Chat messages in the Nova contract: content as a string or as a list of text chunks."""
from __future__ import annotations

import json
from typing import Any


def text_of(content: Any) -> str | None:
    """Message content as text: a string, or a list of text chunks joined. None if it is neither."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(c, dict) and c.get("type") == "text"
                                         and isinstance(c.get("text"), str) for c in content):
        return "".join(c["text"] for c in content)
    return None


def user_text(prompt: list[dict]) -> str:
    """The user turns of a prompt, one after another: what the checks compare a response with."""
    return "\n".join(m["content"] for m in prompt if m["role"] == "user")


def reference_text(ref: Any) -> str | None:
    """A reference answer as the judge is shown it: a string as it is, an object as its JSON."""
    if ref is None or isinstance(ref, str):
        return ref
    return json.dumps(ref, ensure_ascii=False)


def event_reference(sample: dict) -> Any:
    """The reference answer of a reward-Lambda event sample, as AWS's own graders read it: under `metadata`
    (Bedrock's docs) first, else at the top level (SageMaker's)."""
    meta = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
    return meta.get("reference_answer", sample.get("reference_answer"))
