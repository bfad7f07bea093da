"""Text from users and models on the console: an id, a path or a model's reply that holds rich markup is printed
as it is, never parsed (a `[/x]` raised MarkupError; a `[bold]` rendered)."""
import io
from types import SimpleNamespace

from rich.console import Console

from rlaif.common.console import lit, say

ODD = "train-[/x]-0001 [bold]not bold[/bold] [red]"


def test_a_value_with_markup_is_printed_as_it_is(capsys):
    say(f"resuming from runs/{lit(ODD)}")
    assert f"runs/{ODD}" in capsys.readouterr().err.replace("\n", "")  # (rich wraps at 80 columns in a pipe)


def test_a_line_whose_markup_does_not_parse_is_printed_not_raised(capsys):
    say(f"[yellow]1 prompt(s) left out[/] (e.g. {ODD})")  # a call site that forgot lit(): still no exception
    assert ODD in capsys.readouterr().err.replace("\n", "")


def test_chat_replies_are_shown_as_the_model_wrote_them():
    from rlaif.cli.chat import reply_table
    buf = io.StringIO()
    Console(file=buf, width=200).print(reply_table({"trained": ODD, "base": "[/]"}))
    assert ODD in buf.getvalue() and "[/]" in buf.getvalue()


def test_a_pad_token_id_of_0_is_a_pad_token():
    from rlaif.train.chat import pad_id
    assert pad_id(SimpleNamespace(pad_token_id=0, eos_token_id=2)) == 0
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=2)) == 2
