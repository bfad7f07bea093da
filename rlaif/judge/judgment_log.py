"""The judgment log: append-only JSONL, one whole line per verdict, flushed as written."""
from __future__ import annotations

import threading
from pathlib import Path

from rlaif.common.jsonl import dumps_line


class JudgmentLog:
    """Append-only JSONL, one whole line per verdict, flushed as it is written."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._f = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._f = path.open("a", encoding="utf-8")

    def write(self, rows: list[dict]) -> None:
        if self._f is None or not rows:
            return
        blob = "".join(dumps_line(r) for r in rows)
        with self._lock:
            pos = self._f.tell()
            try:
                self._f.write(blob)
                self._f.flush()
            except OSError:  # disk full: take back the part that was written, so the file stays whole lines
                try:
                    self._f.truncate(pos)
                    self._f.seek(pos)
                except OSError:
                    pass
                raise

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
