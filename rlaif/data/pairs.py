"""Pairs of completions to label (`rlaif label --pairs FILE`): one JSON object per line, either

  {"id": ..., "prompt": "..." or [messages], "a": "...", "b": "..."}            two completions, in no order, or
  {"id": ..., "prompt": ..., "chosen": ..., "rejected": ...}                   TRL's preference format, relabelled

`messages` may stand for `prompt` (as in a Nova record and the audit's labelled pairs); a completion is a string
or TRL's conversational `[{"role": "assistant", "content": "..."}]`. Every other key is carried along as the
pair's metadata. A record comes back as {id, prompt, completions: [a, b], metadata}; a bad line as a problem with
file, line and field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rlaif.data.nova import normalise_messages
from rlaif.data.reader import ReadResult, number_records, read_jsonl_with
from rlaif.portable.messages import text_of

KEYS = ("id", "prompt", "messages", "a", "b", "chosen", "rejected")


def completion_text(value: Any, where: str) -> tuple[str | None, str | None]:
    """(the completion's text, None) or (None, `field: message`)."""
    if isinstance(value, str):
        return value, None
    if (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
            and value[0].get("role") == "assistant" and (text := text_of(value[0].get("content"))) is not None):
        return text, None
    return None, (f"{where}: must be a string or [{{\"role\": \"assistant\", \"content\": ...}}] "
                  "(one assistant turn)")


def parse_pair(obj: Any) -> tuple[dict | None, list[str]]:
    """A pair line -> {id, prompt, completions, metadata}, or problems."""
    if not isinstance(obj, dict):
        return None, ["(record): must be a JSON object"]
    key = "prompt" if "prompt" in obj else "messages"
    prompt = obj.get(key)
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    msgs, errs = normalise_messages(prompt, key)
    names = ("a", "b") if ("a" in obj or "b" in obj) else ("chosen", "rejected")
    texts = []
    for name in names:
        if name not in obj:
            errs.append(f"{name}: missing (give a and b, or chosen and rejected)")
            continue
        text, err = completion_text(obj[name], name)
        errs += [err] if err else []
        texts.append(text)
    rid = obj.get("id")
    if rid is not None and (not isinstance(rid, (str, int)) or isinstance(rid, bool)):
        errs.append("id: must be a string or an integer")
    if errs:
        return None, errs
    return {"id": None if rid is None else str(rid), "prompt": msgs, "completions": texts,
            "metadata": {k: v for k, v in obj.items() if k not in KEYS}}, []


def read_pairs(path: str | Path) -> ReadResult:
    """The pairs of a file; ids filled in as `<file stem>-<line>`."""
    return number_records(read_jsonl_with(path, parse_pair), Path(path))
