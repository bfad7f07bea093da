"""`rlaif report RUN_DIR`: one self-contained HTML report of a run (rlaif/eval/report.py)."""
from __future__ import annotations

from pathlib import Path

from rlaif.common.console import say
from rlaif.eval.report import missing_rank_logs, write_report


def add_parser(sub) -> None:
    rp = sub.add_parser("report", help="write a self-contained HTML report of a run",
                        description="Write RUN_DIR/report.html: reward, pass-rate, length, entropy and judge "
                                    "curves, health warnings, the judge audit and eval tables when present, and "
                                    "sampled completions with the judge's verdicts and reasons. No server needed.")
    rp.add_argument("run_dir")
    rp.add_argument("--output", help="where to write the HTML (default RUN_DIR/report.html)")
    rp.set_defaults(fn=cmd_report)


def cmd_report(a) -> int:
    out = write_report(a.run_dir, a.output)
    if lost := missing_rank_logs(Path(a.run_dir)):
        say(f"[yellow]{lost}[/]")
    print(f"report: {out}")
    return 0
