"""The judgment log: append-only JSONL, one whole line per verdict, flushed as written. A run keeps one log for
every reward source; each source writes through its own view, which tags its lines with the source's name."""
from __future__ import annotations

import re
import threading
from pathlib import Path

from rlaif.common.fastjson import dumps_line  # strict JSON, about 8x faster than json's (issue 27)


def run_logs(run_dir: Path) -> list[Path]:
    """A run's judgment logs: `judgments.jsonl` (the main process's), then each other process's
    `judgments.rankN.jsonl` in rank order."""
    d = Path(run_dir)
    ranked = {int(m.group(1)): p for p in d.glob("judgments.rank*.jsonl")
              if (m := re.fullmatch(r"judgments\.rank(\d+)\.jsonl", p.name))}
    main = d / "judgments.jsonl"
    return ([main] if main.exists() else []) + [ranked[k] for k in sorted(ranked)]


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

    def for_source(self, name: str) -> "SourceLog":
        """A view that writes to this log, each row tagged `source: name`; closing the view leaves the log open."""
        return SourceLog(self, name)


class SourceLog:
    def __init__(self, log: JudgmentLog, name: str):
        self.log, self.name = log, name

    @property
    def path(self) -> Path | None:
        return self.log.path

    def write(self, rows: list[dict]) -> None:
        """The rows are the log's once given: each is tagged in place (a copy per row cost as much as the row)."""
        for r in rows:
            r["source"] = self.name
        self.log.write(rows)

    def close(self) -> None:
        pass  # the run's log outlives each source's view


def as_log(log: Path | JudgmentLog | SourceLog | None) -> JudgmentLog | SourceLog:
    """A judgment log from what a caller gives: a path (a log of its own; None: nothing is written), or the run's
    shared log or a source's view of it, as it is."""
    return log if isinstance(log, (JudgmentLog, SourceLog)) else JudgmentLog(log)
