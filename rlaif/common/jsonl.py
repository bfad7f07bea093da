"""JSONL files rlaif writes and reads back itself: one JSON object per line, UTF-8, non-ASCII kept as is.

(Files from users go through `rlaif.data`, which checks every line and names the line of each problem.)"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable


_ENCODER = json.JSONEncoder(ensure_ascii=False)  # json.dumps with an argument builds one per call


def dumps_line(row: dict) -> str:
    return _ENCODER.encode(row) + "\n"


def write_jsonl(path: str | Path, rows: Iterable[dict], append: bool = False) -> Path:
    """Write (or append) rows, one line each; the folder is made when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as f:
        for r in rows:
            f.write(dumps_line(r))
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSONL file rlaif wrote; none when the file is not there."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
