"""Where `rlaif label` keeps its work, so that a killed run, started again with the same command, continues where
it stopped without asking the judge again about anything it wrote.

OUT holds the preference rows. OUT.progress.jsonl says what is done: a first line with the run's settings, then
one line per finished chunk of prompts (their ids and counts). A chunk's rows are appended and synced to disk
before its progress line is, so that on a restart:
- a torn last line (killed mid-write) is dropped;
- rows of prompts that no progress line names (killed between the two writes) are dropped, and those prompts
  labelled again;
- every prompt a progress line names is done and skipped, whether it gave rows or not (a prompt whose pairs
  were all ties, or whose judgments failed, is done too: its counts are in its line).
Settings that would label differently (another judge, mode, rubric content, sampling) are refused rather than
mixed into OUT. Each progress line also holds a digest of every prompt's content (its messages and metadata, and
the completions when they were given), so that a record that now has another's id (ids made from line numbers
shift when a line is deleted) is not taken for done: rlaif/eval/labeling.py refuses such a run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from rlaif.common.jsonl import dumps_line
from rlaif.errors import UserError

# failures: pairs left out because a judgment failed; failed_calls: the judge calls that failed (in logprob mode one
# failed call fails every pair its completion is in)
COUNTS = ("prompts", "pairs", "ties", "failures", "identical", "flips", "both_orders", "judge_calls", "truncated",
          "failed_calls")
FOREIGN = "this file was not written by `rlaif label`, or was edited (give another --out)"


def progress_path(out: Path) -> Path:
    return out.with_name(out.name + ".progress.jsonl")


def summary_path(out: Path) -> Path:
    return out.with_name(out.name + ".summary.json")


def _complete_lines(path: Path) -> tuple[list[dict], bool]:
    """The JSON lines of a file this module wrote, and whether a torn last line was dropped. A damaged line
    before the last is an error: appends can only tear the last."""
    raw = path.read_bytes()
    pieces = raw.split(b"\n")
    torn = pieces[-1] != b""  # no newline after the last line: the write was cut
    rows = []
    for n, piece in enumerate(pieces[:-1], start=1):
        try:
            rows.append(json.loads(piece))
        except ValueError:
            if n == len(pieces) - 1:  # the last complete-looking line, cut inside a multi-byte character
                torn = True
                break
            raise UserError(f"{path}:{n}: not a JSON line; {FOREIGN}") from None
    return rows, torn


def _chunk_problem(line) -> str | None:
    """What is wrong with a progress line after the settings, None when it has the shape `append` writes."""
    if not isinstance(line, dict):
        return "not a JSON object"
    ids, content, counts = line.get("ids"), line.get("content"), line.get("counts")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return "ids: must be a list of prompt ids"
    if not isinstance(content, list) or len(content) != len(ids) or not all(isinstance(c, str) for c in content):
        return "content: must be a list of digests, one per id"
    if not isinstance(counts, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                               for v in counts.values()):
        return "counts: must be an object of whole numbers"
    return None


def _row_problem(row) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    if not isinstance(row.get("id"), str):
        return "id: missing, or not a string"
    return None


def _prompt_of(row_id: str) -> str:
    return row_id.rsplit(":", 1)[0]  # "<prompt id>:<i>-<j>"; a prompt id may hold ':' itself


def _sync_append(path: Path, lines: list[str]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(lines))
        f.flush()
        os.fsync(f.fileno())


class LabelStore:
    def __init__(self, out: str | Path, settings: dict):
        self.out, self.settings = Path(out), settings
        self.progress = progress_path(self.out)
        self.done: set[str] = set()
        self.content: dict[str, str] = {}  # prompt id -> digest of what it was labelled from
        self.totals = dict.fromkeys(COUNTS, 0)
        self.dropped_rows = 0  # rows written before a kill that no progress line covered: labelled again

    def open(self) -> set[str]:
        """Start OUT, or pick it up where a run of the same settings stopped; the ids of the prompts done (and in
        `content`, the digest of what each was labelled from)."""
        lines, torn = _complete_lines(self.progress) if self.progress.exists() else ([], False)
        if not lines:  # no progress file, or killed before its settings line was whole: nothing was labelled
            if self.out.exists() and self.out.stat().st_size:
                raise UserError(f"{self.out} exists and has no {self.progress.name} beside it"
                                f"{' with a settings line' if self.progress.exists() else ''}: not a label run to "
                                "continue; give another --out (nothing was written over)")
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_bytes(b"")
            self._rewrite(self.progress, [{"settings": self.settings}])
            return self.done
        if not isinstance(lines[0], dict) or not isinstance(lines[0].get("settings"), dict):
            raise UserError(f"{self.progress}:1: not a settings line ({{\"settings\": {{...}}}}); {FOREIGN}")
        self._check_settings(lines[0]["settings"])
        for n, chunk in enumerate(lines[1:], start=2):
            if (problem := _chunk_problem(chunk)) is not None:
                raise UserError(f"{self.progress}:{n}: {problem}; {FOREIGN}")
            self.done.update(chunk["ids"])
            self.content.update(zip(chunk["ids"], chunk["content"]))
            for k in COUNTS:
                self.totals[k] += chunk["counts"].get(k, 0)
        if torn:
            self._rewrite(self.progress, lines)
        self._repair_rows()
        return self.done

    def _check_settings(self, before: dict) -> None:
        for key in sorted(set(before) | set(self.settings)):
            if before.get(key) != self.settings.get(key):
                raise UserError(f"{self.out} was labelled with {key} = {before.get(key)!r}, this run has "
                                f"{self.settings.get(key)!r}: rows of both would mix in one file. Run it as it was "
                                f"started, or give another --out")

    def _repair_rows(self) -> None:
        if not self.out.exists():
            if self.done:  # the rows of the prompts it says are done are gone: continuing would skip them
                raise UserError(f"{self.out} is gone but {self.progress.name} says {len(self.done)} prompt(s) are "
                                f"done; delete {self.progress} to label again from the start")
            self.out.write_bytes(b"")
            return
        rows, torn = _complete_lines(self.out)
        for n, row in enumerate(rows, start=1):
            if (problem := _row_problem(row)) is not None:
                raise UserError(f"{self.out}:{n}: {problem}; {FOREIGN}")
        kept = [r for r in rows if _prompt_of(r["id"]) in self.done]
        self.dropped_rows = len(rows) - len(kept)
        if torn or self.dropped_rows:
            self._rewrite(self.out, kept)

    @staticmethod
    def _rewrite(path: Path, rows: list[dict]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.write("".join(dumps_line(r) for r in rows))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def append(self, rows: list[dict], ids: list[str], counts: dict, content: list[str]) -> None:
        """A finished chunk: its rows, then the line that says its prompts are done, with the digest of what each
        was labelled from (each synced to disk)."""
        if rows:
            _sync_append(self.out, [dumps_line(r) for r in rows])
        _sync_append(self.progress, [dumps_line({"ids": ids, "content": content, "counts": counts})])
        self.done.update(ids)
        self.content.update(zip(ids, content))
        for k in COUNTS:
            self.totals[k] += counts.get(k, 0)
