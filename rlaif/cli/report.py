"""`rlaif report RUN_DIR`: one self-contained HTML report of a run (rlaif/eval/report.py)."""
from __future__ import annotations

from rlaif.eval.report import write_report


def add_parser(sub) -> None:
    rp = sub.add_parser("report", help="write a self-contained HTML report of a run",
                        description="Write RUN_DIR/report.html: reward, pass-rate, length, entropy and judge "
                                    "curves, health warnings, the judge audit and eval tables when present, and "
                                    "sampled completions with the judge's verdicts and reasons. No server needed.")
    rp.add_argument("run_dir")
    rp.add_argument("--output", help="where to write the HTML (default RUN_DIR/report.html)")
    rp.set_defaults(fn=cmd_report)


def cmd_report(a) -> int:
    print(f"report: {write_report(a.run_dir, a.output)}")
    return 0
