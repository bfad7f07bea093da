"""Nova RFT records: validate every record and normalise it to TRL's conversational prompt format.

A record (Bedrock/SageMaker "Prepare data for Amazon Nova models"): `messages` (an optional system message
first, at least one user message; content a string or a list of `{"type": "text", "text": ...}` chunks),
optional `reference_answer` (string or object), optional `id`, and any extra top-level keys, carried along as
metadata. Errors name the file, the line and the field; nothing is dropped silently. Also here: the samples of
a reward-Lambda event (the same messages, ending with the completion to judge), and Bedrock's extra rules.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlaif.config.rubric import record_rubric_problems
from rlaif.data.reader import Problem, ReadResult, number_records, read_jsonl_with, short
from rlaif.portable.messages import event_reference, reference_text, text_of

ROLES = ("system", "user", "assistant")


def normalise_messages(msgs: Any, where: str, completion_last: bool = False) -> tuple[list[dict], list[str]]:
    """Validated `[{"role", "content": str}]` and a list of `field: message` problems.

    A prompt (the default) must not end with an assistant turn. With `completion_last` (a Lambda-event sample)
    it must: the last message is the completion to judge, and it may be empty (an empty answer is a real
    policy output, scored, not refused). `nova_assistant` is read as `assistant` there, as AWS's graders do.
    """
    errs: list[str] = []
    if not isinstance(msgs, list) or not msgs:
        return [], [f"{where}: must be a non-empty list of messages"]
    out = []
    for i, m in enumerate(msgs):
        f = f"{where}[{i}]"
        is_completion = completion_last and i == len(msgs) - 1
        if not isinstance(m, dict):
            errs.append(f"{f}: must be an object with 'role' and 'content'")
            continue
        role = m.get("role")
        if is_completion and role == "nova_assistant":
            role = "assistant"
        if role not in ROLES:
            errs.append(f"{f}.role: {short(role)} is not one of {', '.join(ROLES)}")
            continue
        text = text_of(m.get("content"))
        if text is None:
            errs.append(f"{f}.content: must be a string or a list of {{\"type\": \"text\", \"text\": ...}} chunks")
            continue
        if not text.strip() and not is_completion:
            errs.append(f"{f}.content: is empty")
            continue
        out.append({"role": role, "content": text})
    if errs:
        return out, errs
    roles = [m["role"] for m in out]
    if completion_last:
        if roles[-1] != "assistant":
            errs.append(f"{where}: must end with the assistant turn to judge")
        roles = roles[:-1]
    elif roles[-1] == "assistant":
        errs.append(f"{where}: the prompt must not end with an assistant turn (the policy writes that)")
    if "system" in roles[1:]:
        errs.append(f"{where}: a system message may only come first")
    if "user" not in roles:
        errs.append(f"{where}: needs at least one user message")
    return out, errs


def parse_record(obj: Any) -> tuple[dict | None, list[str]]:
    """A Nova RFT record -> {prompt, reference_answer, metadata, id}, or problems."""
    if not isinstance(obj, dict):
        return None, ["(record): must be a JSON object"]
    msgs, errs = normalise_messages(obj.get("messages"), "messages")
    ref = obj.get("reference_answer")
    if "reference_answer" in obj and (ref is None or ref == "" or ref == {}):
        errs.append("reference_answer: is empty (leave it out instead)")
    rid = obj.get("id")
    if rid is not None and (not isinstance(rid, (str, int)) or isinstance(rid, bool)):
        errs.append("id: must be a string or an integer")
    if obj.get("rubric") is not None:  # the record's own criteria, judged after the recipe's (null: none)
        errs += record_rubric_problems(obj["rubric"])
    if errs:
        return None, errs
    extra = {k: v for k, v in obj.items() if k not in ("messages", "reference_answer", "id")}
    return {
        "id": None if rid is None else str(rid),
        "prompt": msgs,
        # datasets needs one type per column: objects travel as JSON text
        "reference_answer": reference_text(ref),
        "metadata": json.dumps(extra, ensure_ascii=False),
        # the reference exactly as the record had it (string or object), for the Bedrock Lambda event
        "nova_reference": None if ref is None else json.dumps(ref, ensure_ascii=False),
    }, []


def read_jsonl(path: str | Path) -> ReadResult:
    """A Nova RFT dataset: records normalised for TRL, problems with file, line and field."""
    return number_records(read_jsonl_with(path, parse_record), Path(path))


def parse_lambda_sample(obj: Any) -> tuple[dict | None, list[str]]:
    """A Nova reward-Lambda event sample -> {id, prompt, response, metadata, reference_answer}, or problems.

    `reference_answer` may sit under `metadata` (Bedrock's docs) or at the top level (SageMaker's); AWS's own
    graders read metadata first and fall back to the top level, and so does this.
    """
    if not isinstance(obj, dict):
        return None, ["(record): must be a JSON object"]
    msgs, errs = normalise_messages(obj.get("messages"), "messages", completion_last=True)
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
        errs.append("metadata: must be an object")
        meta = {}
    rid = obj.get("id")
    if rid is None or not isinstance(rid, (str, int)) or isinstance(rid, bool):
        errs.append("id: required, a string or an integer")
    if meta.get("rubric") is not None:  # the sample's own criteria, judged after the recipe's (null: none)
        errs += [f"metadata.{e}" for e in record_rubric_problems(meta["rubric"])]
    if errs:
        return None, errs
    ref = event_reference(obj)
    return {"id": str(rid), "prompt": msgs[:-1], "response": msgs[-1]["content"], "metadata": meta,
            "reference_answer": ref}, []


def bedrock_problems(path: str | Path, rows: list[tuple[int, dict]]) -> list[Problem]:
    """Bedrock's extra rules for a valid record: a single-turn prompt (an optional system message, then one
    user message). Text-only content is already required by the reader."""
    out = []
    for n, rec in rows:
        roles = [m["role"] for m in rec["prompt"]]
        if "assistant" in roles or roles.count("user") != 1:
            out.append(Problem(str(path), n, "messages", f"Bedrock RFT takes single-turn prompts (an optional system "
                               f"message, then one user message); this one is {' -> '.join(roles)}"))
    return out


def open_weight_problems(path: str | Path, rows: list[tuple[int, dict]]) -> list[Problem]:
    """Bedrock's open-weight RFT (gpt-oss-20b, Qwen3-32B) where its rules differ from Nova's: every record carries a
    `reference_answer` (its data page lists it in each example; AWS's walkthrough calls it mandatory), and the
    prompt may hold system, user and assistant turns (its page lists all three roles and asks no single turn;
    Nova asks one user turn). The record count, 100 to 20,000, is the same. docs/nova.md has the sources."""
    return [Problem(str(path), n, "reference_answer", "Bedrock's open-weight RFT expects a reference_answer in every "
                    "record (the reward Lambda gets it under metadata)")
            for n, rec in rows if rec.get("reference_answer") is None]
