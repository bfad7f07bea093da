"""`rlaif rm train RECIPE --prefs PREFS.jsonl --out DIR`: a reward model distilled from preference labels."""
from __future__ import annotations

import argparse
import json

from rlaif.common.console import say
from rlaif.config.recipe import load_recipe
from rlaif.train.reward_model import train_reward_model  # imports torch and TRL only when it trains

DESCRIPTION = """Train a reward model on preference labels (what `rlaif label` writes: TRL's conversational
preference format, prompt / chosen / rejected, with the labeler's soft label p_chosen).

    rlaif rm train RECIPE.yaml --prefs prefs.jsonl --out runs/NAME-rm [--set reward_model_training.loss=hard]

A one-output sequence-classification head on the recipe's policy base (reward_model_training.base to choose
another), LoRA or full, trained by TRL's RewardTrainer with the RLAIF paper's soft-label cross-entropy (loss: soft;
hard and margin are TRL's). A share of the pairs is held out: DIR/rm_summary.json (also printed) says how often
the model agrees with their labels, and with the recipe's eval.truth_regex where it has one. DIR holds the whole
model (a LoRA merged in), which transformers and vLLM's pooling runner load; use it in a recipe as
`rewards: [{kind: reward_model, model: DIR}]`.
"""


def add_parser(sub) -> None:
    rp = sub.add_parser("rm", help="reward models: train one on preference labels")
    rsub = rp.add_subparsers(dest="rm_command", required=True, metavar="RM_COMMAND")
    tp = rsub.add_parser("train", help="train a reward model on preference labels (soft-label cross-entropy)",
                         description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    tp.add_argument("recipe", help="recipe YAML file (its policy base, reward_model_training: and eval.truth_regex)")
    tp.add_argument("--prefs", required=True, help="preference labels, JSONL")
    tp.add_argument("--out", required=True, help="folder for the reward model and rm_summary.json")
    tp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe value, e.g. --set reward_model_training.epochs=5 (repeatable)")
    tp.set_defaults(fn=cmd_train)


def cmd_train(a) -> int:
    recipe = load_recipe(a.recipe, a.overrides)
    s = train_reward_model(recipe, a.prefs, a.out)
    print(json.dumps({k: s[k] for k in ("model", "pairs", "trained_pairs", "heldout_pairs", "accuracy_vs_labels",
                                        "truth_pairs", "accuracy_vs_truth", "train_loss", "steps", "wall_s")
                      if k in s}, indent=2))
    say(f"reward model in {s['model']}: held-out accuracy {s['accuracy_vs_labels']} against the labels"
        + (f", {s['accuracy_vs_truth']} against the truth rule" if s.get("accuracy_vs_truth") is not None else ""))
    return 0
