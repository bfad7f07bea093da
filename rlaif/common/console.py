"""Progress lines for people: on stderr, from the main process only (every rank runs the same code)."""
from __future__ import annotations

from rlaif.common.dist import is_main_process


def say(msg: str) -> None:
    """One line of progress, with rich markup (`[yellow]...[/]`), printed by rank 0 only."""
    if is_main_process():
        from rich.console import Console
        Console(stderr=True).print(f"[bold cyan]rlaif[/] {msg}", highlight=False)
