"""`rlaif chat RUN_DIR`: talk to the trained policy and its base side by side (rlaif/train/chat.py)."""
from __future__ import annotations

import sys

from rlaif.common.console import lit
from rlaif.train.chat import SideBySide


def add_parser(sub) -> None:
    cp = sub.add_parser("chat", help="talk to the trained policy and its base, side by side",
                        description="Each line you type goes to the trained policy (base + the run's adapter) and "
                                    "to its base; both replies are printed side by side, and each model keeps its "
                                    "own conversation. Lines come from the terminal, or from stdin when piped; "
                                    "an empty line or Ctrl-D ends it.")
    cp.add_argument("run_dir", help="a finished run's directory")
    cp.add_argument("--max-new-tokens", type=int, default=256)
    cp.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    cp.set_defaults(fn=cmd_chat)


def reply_table(replies: dict[str, str]):
    """The two replies side by side, as the models wrote them (a reply is text, never rich markup)."""
    from rich.table import Table
    from rich.text import Text
    table = Table(show_header=True, expand=True)
    table.add_column("trained")
    table.add_column("base")
    table.add_row(Text(replies["trained"]), Text(replies["base"]))
    return table


def cmd_chat(a) -> int:
    from rich.console import Console
    chat = SideBySide(a.run_dir, a.max_new_tokens, a.temperature)
    out = Console()
    tty = sys.stdin.isatty()
    out.print(f"[bold]trained[/] = {lit(chat.base_name)} + {lit(a.run_dir)}/adapter; [bold]base[/] = "
              f"{lit(chat.base_name)}. An empty line ends it.")
    while True:
        if tty:
            out.print("[bold cyan]you>[/] ", end="")
        line = sys.stdin.readline()
        if not line.strip():
            return 0
        out.print(reply_table(chat.say(line.strip())))
