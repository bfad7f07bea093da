"""Nova RFT datasets: read JSONL, validate every record, normalise to TRL's conversational prompt format.

A record (Bedrock/SageMaker "Prepare data for Amazon Nova models"): `messages` (an optional system message
first, at least one user message; content a string or a list of `{"type": "text", "text": ...}` chunks),
optional `reference_answer` (string or object), optional `id`, and any extra top-level keys, carried along as
metadata. Errors name the file, the line and the field; nothing is dropped silently.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif.errors import UserError

ROLES = ("system", "user", "assistant")
# Deeper JSON than this is refused when read: Python's json module recurses, so a record nested thousands deep
# would otherwise crash the reader, or later the reward function when it re-reads the metadata mid-run.
MAX_DEPTH = 64
MAX_INT_DIGITS = 1000  # Python refuses to turn longer digit strings into ints (ValueError), so we name them first


@dataclass
class Problem:
    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.message}"


@dataclass
class ReadResult:
    records: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    lines: int = 0
    record_lines: list[int] = field(default_factory=list)  # the line (or row) each record came from


class _NotJson:
    """A value json.loads accepted but JSON does not have (NaN, Infinity) or Python cannot hold (a huge int)."""

    def __init__(self, why: str):
        self.why = why


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=lambda c: _NotJson(f"{c} is not a JSON number"),
                      parse_int=lambda d: int(d) if len(d) <= MAX_INT_DIGITS
                      else _NotJson(f"an integer of {len(d)} digits is too long"))


def _short(value: Any, limit: int = 60) -> str:
    """A value for an error message: its repr, cut short (a role may be a megabyte of text)."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + f"... ({len(r)} characters)"


def value_problems(obj: Any, max_problems: int = 3) -> list[str]:
    """`field: message` for what a parsed record holds that JSON or UTF-8 cannot carry on: nesting deeper than
    MAX_DEPTH, NaN/Infinity, huge integers, lone surrogates (`"\\ud800"`), non-JSON values from a table cell.
    Iterative, so that a deep record cannot crash the check itself."""
    out: list[str] = []
    stack = [(obj, "", 0)]
    while stack and len(out) <= max_problems:
        value, where, depth = stack.pop()
        name = where.lstrip(".") or "(record)"
        if len(name) > 80:  # the path of a deep value: its start names the field
            name = name[:60] + "..."
        if depth > MAX_DEPTH:
            out.append(f"{name}: nested more than {MAX_DEPTH} levels deep")
        elif isinstance(value, _NotJson):
            out.append(f"{name}: {value.why}")
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                out.append(f"{name}: holds a lone surrogate {value[e.start]!a}, which is not text")
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                out.append(f"{name}: {value} is not a JSON number")
        elif isinstance(value, dict):
            for k, v in reversed(list(value.items())):
                if not isinstance(k, str):
                    out.append(f"{name}: key {_short(k)} is not a string")
                    continue
                try:
                    k.encode("utf-8")
                except UnicodeEncodeError:
                    out.append(f"{name}: key {k!a} holds a lone surrogate, which is not text")
                    continue
                # a key that would garble the `file:line: field: message` form is shown escaped
                seg = f".{k}" if k and k.isprintable() and ": " not in k else f"[{ascii(k).replace(': ', ':_')}]"
                stack.append((v, f"{where}{seg}", depth + 1))
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in reversed(list(enumerate(value))))
        elif value is not None and not isinstance(value, (bool, int)):
            out.append(f"{name}: a {type(value).__name__} is not a JSON value (store it as a string)")
    if len(out) > max_problems:
        out[max_problems:] = ["(record): ... and more problems of this kind"]
    return out


def text_of(content: Any) -> str | None:
    """Message content as text: a string, or a list of text chunks joined. None if it is neither."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(c, dict) and c.get("type") == "text"
                                         and isinstance(c.get("text"), str) for c in content):
        return "".join(c["text"] for c in content)
    return None


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
            errs.append(f"{f}.role: {_short(role)} is not one of {', '.join(ROLES)}")
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
    if errs:
        return None, errs
    extra = {k: v for k, v in obj.items() if k not in ("messages", "reference_answer", "id")}
    return {
        "id": None if rid is None else str(rid),
        "prompt": msgs,
        # datasets needs one type per column: objects travel as JSON text
        "reference_answer": ref if ref is None or isinstance(ref, str) else json.dumps(ref, ensure_ascii=False),
        "metadata": json.dumps(extra, ensure_ascii=False),
        # the reference exactly as the record had it (string or object), for the Bedrock Lambda event
        "nova_reference": None if ref is None else json.dumps(ref, ensure_ascii=False),
    }, []


def read_jsonl(path: str | Path) -> ReadResult:
    """A Nova RFT dataset: records normalised for TRL, problems with file, line and field."""
    return _number_records(read_jsonl_with(path, parse_record), Path(path))


def _number_records(res: ReadResult, path: Path) -> ReadResult:
    """Each record's line (or row) into `record_lines`; a record without an id gets `<file stem>-<line>`."""
    for rec in res.records:
        n = rec.pop("_line")
        res.record_lines.append(n)
        if rec["id"] is None:
            rec["id"] = f"{path.stem}-{n}"
    return res


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
    if errs:
        return None, errs
    ref = meta.get("reference_answer", obj.get("reference_answer"))
    return {"id": str(rid), "prompt": msgs[:-1], "response": msgs[-1]["content"], "metadata": meta,
            "reference_answer": ref}, []


def read_jsonl_with(path: str | Path, parse) -> ReadResult:
    """Every non-empty line of a JSONL file through `parse`; problems carry file, line and field."""
    path = Path(path)
    res = ReadResult()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    if raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark, as some editors write: not part of line 1
        raw = raw[3:]
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        res.lines += 1
        try:
            obj = _loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            res.problems.append(Problem(str(path), n, "(line)", f"not valid UTF-8 at byte {e.start}"))
            continue
        except json.JSONDecodeError as e:
            res.problems.append(Problem(str(path), n, "(line)", f"not valid JSON: {e.msg} at column {e.colno}"))
            continue
        except RecursionError:
            res.problems.append(Problem(str(path), n, "(line)", f"nested more than {MAX_DEPTH} levels deep"))
            continue
        _collect(res, path, n, *_parse_checked(parse, obj))
    return res


def _parse_checked(parse, obj) -> tuple[dict | None, list[str]]:
    """`parse`, after the values themselves are checked: a record that cannot travel as JSON text is refused."""
    errs = value_problems(obj)
    return (None, errs) if errs else parse(obj)


def _collect(res: ReadResult, path, n: int, rec: dict | None, errs: list[str]) -> None:
    """One parsed line (or row) into the result: its problems with file, line and field; the record if valid."""
    for e in errs:
        fld, _, msg = e.partition(": ")
        res.problems.append(Problem(str(path), n, fld, msg))
    if rec is not None:
        rec["_line"] = n
        res.records.append(rec)


TABLE_SUFFIXES = (".parquet", ".json", ".csv")
COLUMN_ROLES = ("messages", "prompt", "system", "reference_answer", "id")


def parse_columns(spec: str | dict | None) -> dict[str, str]:
    """`prompt=question,reference_answer=answer` (or a mapping) -> {rlaif field: the table's column}."""
    if not spec:
        return {}
    pairs = spec.items() if isinstance(spec, dict) else (p.split("=", 1) for p in spec.split(",") if p.strip())
    out = {}
    for pair in pairs:
        if len(pair) != 2:
            raise UserError(f"columns: {spec!r}: expected field=column pairs, e.g. prompt=question")
        key, col = (x.strip() for x in pair)
        if key not in COLUMN_ROLES:
            raise UserError(f"columns: '{key}' is not one of {', '.join(COLUMN_ROLES)}")
        out[key] = col
    if "messages" in out and ("prompt" in out or "system" in out):
        raise UserError("columns: give either a messages column or prompt (and system) columns, not both")
    return out


def read_table(path: str | Path, columns: dict[str, str] | None = None) -> ReadResult:
    """A local Parquet, JSON or CSV file (read by `datasets`), each row mapped to a Nova record and checked
    like a JSONL line. Without a mapping, the Nova field names are expected as columns; extra columns are
    carried along as metadata. `line` in problems is the row number (from 1)."""
    from datasets import load_dataset as hf_load

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    columns = columns or {}
    kind = {".parquet": "parquet", ".json": "json", ".csv": "csv"}[path.suffix.lower()]
    try:
        table = hf_load(kind, data_files=str(path), split="train")
    except Exception as e:  # pyarrow/datasets errors on a broken file: name the file
        raise UserError(f"{path}: cannot read as {kind}: {type(e).__name__}: {str(e)[:300]}") from None
    names = set(table.column_names)
    missing = [f"{k}={c}" for k, c in columns.items() if c not in names]
    if missing:
        raise UserError(f"{path}: columns: no such column for {', '.join(missing)} (columns: {', '.join(sorted(names))})")
    if "messages" not in columns and "prompt" not in columns and "messages" not in names:
        raise UserError(f"{path}: no 'messages' column; map one with columns (e.g. prompt=question) "
                        f"(columns: {', '.join(sorted(names))})")
    mapped = set(columns.values())
    res = ReadResult()
    for n, row in enumerate(table, start=1):
        res.lines += 1
        rec = {k: v for k, v in row.items() if k not in mapped and v is not None}
        if "prompt" in columns:
            msgs = [{"role": "user", "content": row[columns["prompt"]]}]
            if "system" in columns and row[columns["system"]]:
                msgs.insert(0, {"role": "system", "content": row[columns["system"]]})
            rec["messages"] = msgs
        elif "messages" in columns:
            rec["messages"] = row[columns["messages"]]
        for key in ("reference_answer", "id"):
            if key in columns and row[columns[key]] is not None:
                rec[key] = row[columns[key]]
        if isinstance(rec.get("messages"), str):  # a CSV cell holding JSON
            try:
                rec["messages"] = _loads(rec["messages"])
            except (json.JSONDecodeError, RecursionError):
                pass
        _collect(res, path, n, *_parse_checked(parse_record, rec))
    return res


def read_records(path: str | Path, columns: dict[str, str] | None = None) -> ReadResult:
    """Nova RFT JSONL, or a Parquet/JSON/CSV table with a column mapping; ids filled in as `<file>-<line>`."""
    path = Path(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return _number_records(read_table(path, columns), path)
    if columns:
        raise UserError(f"{path}: a column mapping is for Parquet, JSON or CSV files; JSONL uses Nova's field names")
    return read_jsonl(path)


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


def load_dataset(path: str | Path, strict: bool = True, columns: dict[str, str] | None = None):
    """The records of a Nova RFT file as a `datasets.Dataset`; with strict, any problem is an error."""
    from datasets import Dataset

    res = read_records(path, columns)
    if res.problems and strict:
        shown = "\n".join(str(p) for p in res.problems[:20])
        more = f"\n... and {len(res.problems) - 20} more" if len(res.problems) > 20 else ""
        raise UserError(f"{path}: {len(res.problems)} problem(s) in {res.lines} records:\n{shown}{more}")
    if not res.records:
        raise UserError(f"{path}: no valid records")
    return Dataset.from_list(res.records)


def prompt_tokens(tokenizer, messages: list[dict]) -> int:
    """A prompt's length as the policy sees it: chat template and generation prompt included."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def drop_long_prompts(dataset, tokenizer, max_tokens: int, where: str = "data.train"):
    """Bedrock's maxPromptLength: longer prompts are left out of training. Returns (dataset, dropped ids)."""
    lengths = [prompt_tokens(tokenizer, p) for p in dataset["prompt"]]
    keep = [i for i, n in enumerate(lengths) if n <= max_tokens]
    dropped = [dataset[i]["id"] for i in range(len(lengths)) if lengths[i] > max_tokens]
    if not keep:
        raise UserError(f"{where}: every prompt is longer than maxPromptLength {max_tokens} tokens "
                        f"(shortest: {min(lengths)})")
    return (dataset.select(keep) if dropped else dataset), dropped
