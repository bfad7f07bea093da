"""Parquet, JSON and CSV tables as Nova RFT records: each row mapped through a column mapping, then checked like
a JSONL line (`line` in problems is the row number, from 1)."""
from __future__ import annotations

import json
from pathlib import Path

from rlaif.data.nova import parse_record
from rlaif.data.reader import ReadResult, collect, loads, parse_checked
from rlaif.errors import UserError

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
                rec["messages"] = loads(rec["messages"])
            except (json.JSONDecodeError, RecursionError):
                pass
        collect(res, path, n, *parse_checked(parse_record, rec))
    return res
