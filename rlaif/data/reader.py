"""Reading a JSONL file whose every line must hold a record: each problem comes back with its file, line and
field (`data/train.jsonl:7: messages[1].role: 'bot' is not one of system, user, assistant`), never as a crash.

The values are checked before any record parser sees them: nesting past MAX_DEPTH (Python's json module
recurses, so a record nested thousands deep would otherwise crash the reader, or later the reward function when
it re-reads the metadata mid-run), NaN and Infinity, integers Python will not build, lone surrogates.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif.errors import UserError

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


def loads(text: str) -> Any:
    return json.loads(text, parse_constant=lambda c: _NotJson(f"{c} is not a JSON number"),
                      parse_int=lambda d: int(d) if len(d) <= MAX_INT_DIGITS
                      else _NotJson(f"an integer of {len(d)} digits is too long"))


def short(value: Any, limit: int = 60) -> str:
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
                    out.append(f"{name}: key {short(k)} is not a string")
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
            obj = loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            res.problems.append(Problem(str(path), n, "(line)", f"not valid UTF-8 at byte {e.start}"))
            continue
        except json.JSONDecodeError as e:
            res.problems.append(Problem(str(path), n, "(line)", f"not valid JSON: {e.msg} at column {e.colno}"))
            continue
        except RecursionError:
            res.problems.append(Problem(str(path), n, "(line)", f"nested more than {MAX_DEPTH} levels deep"))
            continue
        collect(res, path, n, *parse_checked(parse, obj))
    return res


def parse_checked(parse, obj) -> tuple[dict | None, list[str]]:
    """`parse`, after the values themselves are checked: a record that cannot travel as JSON text is refused."""
    errs = value_problems(obj)
    return (None, errs) if errs else parse(obj)


def collect(res: ReadResult, path, n: int, rec: dict | None, errs: list[str]) -> None:
    """One parsed line (or row) into the result: its problems with file, line and field; the record if valid."""
    for e in errs:
        fld, _, msg = e.partition(": ")
        res.problems.append(Problem(str(path), n, fld, msg))
    if rec is not None:
        rec["_line"] = n
        res.records.append(rec)


def number_records(res: ReadResult, path: Path) -> ReadResult:
    """Each record's line (or row) into `record_lines`; a record without an id gets `<file stem>-<line>`."""
    for rec in res.records:
        n = rec.pop("_line")
        res.record_lines.append(n)
        if rec["id"] is None:
            rec["id"] = f"{path.stem}-{n}"
    return res
