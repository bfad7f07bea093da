"""Progress lines for people: on stderr, from the main process only (every rank runs the same code)."""
from __future__ import annotations

from rlaif.common.dist import is_main_process


def say(msg: str) -> None:
    """One line of progress, with rich markup (`[yellow]...[/]`), printed by rank 0 only."""
    if is_main_process():
        from rich.console import Console
        Console(stderr=True).print(f"[bold cyan]rlaif[/] {msg}", highlight=False)


def table_console():
    """A console for result tables: the terminal's width, or 160 columns when the output is a pipe or a file (a
    log, a test), where rich would otherwise wrap every cell to 80."""
    from rich.console import Console
    c = Console()
    return c if c.is_terminal else Console(width=160)
