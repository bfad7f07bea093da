"""The `rlaif` command line. Every subcommand explains itself with --help, exits 0 on success and 1 on bad
input with a message naming the file, line and field (never a traceback for a user error)."""
from __future__ import annotations

import argparse
import sys

from rlaif.cli import chat, data, evaluate, export, judge, label, nova, report, reward, rm, serve, smoke, train
from rlaif.cli.guard import run_guarded
from rlaif.common.dist import exit_process, world_size

COMMANDS = [train, judge, reward, label, rm, evaluate, export, serve, chat, data, nova, report, smoke]  # in the order `rlaif --help` lists them


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rlaif", description="RLAIF with an open judge: GRPO + LoRA policies "
                                 "scored by a vLLM-served rubric judge, Nova RFT compatible.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return ap


def main(argv=None) -> int:
    """`argv` None: the process's own arguments (the `rlaif` command), so the process was started for this command."""
    a = build_parser().parse_args(argv)
    a.process_entry = argv is None
    code = run_guarded(lambda: a.fn(a))
    if a.command == "train" and world_size() > 1:  # `torchrun --no-python rlaif train ...`: ends as
        exit_process(code)  # `-m rlaif.train` does, without the C++ teardown that killed finished ranks
    return code


if __name__ == "__main__":
    sys.exit(main())
