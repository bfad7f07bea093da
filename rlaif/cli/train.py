"""`rlaif train RECIPE.yaml [--set key=value ...] [--resume]`, also `python -m rlaif.train` and
`accelerate launch -m rlaif.train RECIPE.yaml`."""
from __future__ import annotations

import argparse

from rlaif.cli.guard import run_guarded
from rlaif.common.console import say
from rlaif.config.recipe import load_recipe
from rlaif.train.lean_start import needs_vllm, trl_without_vllm
from rlaif.train.run import run_training

DESCRIPTION = """Train the recipe's policy with GRPO + LoRA against its judge.

    rlaif train RECIPE.yaml [--set key=value ...] [--resume]
    accelerate launch -m rlaif.train RECIPE.yaml [--set key=value ...]

The judge is reached over HTTP: at the recipe's `judge.base_url`, or on a vLLM server this command starts on a
free loopback port and stops when it ends (also on error and Ctrl-C). Outputs go to the recipe's output_dir:
checkpoints (`--resume` continues from the last), `adapter/`, `judgments.jsonl`, `train_summary.json`.
"""


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("recipe", help="recipe YAML file, e.g. recipes/smoke.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe value, e.g. --set grpo.max_steps=10 (repeatable)")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    return ap


def add_parser(sub) -> None:
    tp = sub.add_parser("train", help="GRPO + LoRA training against the recipe's judge", description=DESCRIPTION,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(tp).set_defaults(fn=cmd_train)


def cmd_train(a) -> int:
    recipe = load_recipe(a.recipe, a.overrides)
    if getattr(a, "process_entry", False) and not needs_vllm(recipe):
        trl_without_vllm()  # a process started for this one run: TRL need not import vLLM (rlaif/train/lean_start.py)
    s = run_training(recipe, resume=a.resume)
    saved = f"adapter in {s['adapter']}" if s["adapter"] else "no adapter written"
    say(f"done: {s['steps']} steps in {s['wall_s']}s; {saved}; judge calls {s['judge']['calls']}, "
        f"failures {s['judge']['failed']}")
    return 0


def main(argv=None) -> int:
    """`python -m rlaif.train`: the train command alone. `argv` None: the process's own arguments, so the process
    was started for this run."""
    ap = argparse.ArgumentParser(prog="rlaif train", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap).set_defaults(process_entry=argv is None)
    return run_guarded(lambda: cmd_train(ap.parse_args(argv)))
