"""Progress lines for people: on stderr, from the main process only (every rank runs the same code)."""
from __future__ import annotations

from rlaif.common.dist import is_main_process


def lit(value) -> str:
    """A value for a `say()` line (an id, a path, a model's reply): printed as it is, never read as markup."""
    from rich.markup import escape
    return escape(str(value))


def say(msg: str) -> None:
    """One line of progress, with rich markup (`[yellow]...[/]`), printed by rank 0 only. Values from users,
    files or models go in through `lit()`; a line whose markup does not parse all the same is printed as it is,
    never raised (a record id must not stop a run)."""
    if is_main_process():
        from rich.console import Console
        from rich.errors import MarkupError
        console = Console(stderr=True)
        try:
            console.print(f"[bold cyan]rlaif[/] {msg}", highlight=False)
        except MarkupError:
            console.print(f"rlaif {msg}", highlight=False, markup=False)


def table_console():
    """A console for result tables: the terminal's width, or 160 columns when the output is a pipe or a file (a
    log, a test), where rich would otherwise wrap every cell to 80."""
    from rich.console import Console
    c = Console()
    return c if c.is_terminal else Console(width=160)
