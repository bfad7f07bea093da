"""`rlaif label`: AI preference labels from the recipe's judge, in TRL's preference format."""
from __future__ import annotations

import sys
from pathlib import Path

from rlaif.config.recipe import load_recipe
from rlaif.eval.label_store import progress_path, summary_path
from rlaif.eval.labeling import label, options_from


def add_parser(sub) -> None:
    lp = sub.add_parser(
        "label", help="AI preference labels: the judge compares pairs of completions (for a reward model)",
        description="Sample K completions per prompt from the recipe's policy (eval temperature and token cap, "
                    "seeded), or read given pairs, and have the recipe's judge compare every pair: in both orders "
                    "when judge.mode is pairwise (the soft label is P(chosen > rejected) averaged over the two "
                    "orders; position_flip says whether they disagreed), or by scoring each completion in logprob "
                    "or verdict mode (Bradley-Terry from the two scores; the verdict's rationale kept). Writes "
                    "TRL's conversational preference format, one pair per line (id, prompt, chosen, rejected, "
                    "p_chosen, p_orders, position_flip, rationale, mode, metadata), then OUT.summary.json. Ties and "
                    "failed judgments are counted and left out; a malformed input line is named and left out. "
                    "Killed, the same command continues where it stopped (OUT.progress.jsonl) without asking the "
                    "judge again. Exits 1 when the judge stops the run.")
    lp.add_argument("recipe")
    src = lp.add_mutually_exclusive_group()
    src.add_argument("--prompts", metavar="FILE", help="prompts in the recipe's dataset format (Nova RFT JSONL, or "
                     "a table with data.columns); default: the recipe's data.train")
    src.add_argument("--pairs", metavar="FILE", help="pairs to label instead of sampling: JSONL of {prompt, a, b} or "
                     "TRL rows {prompt, chosen, rejected} (a completion a string or one assistant turn)")
    lp.add_argument("--out", required=True, help="the preference rows, JSONL")
    # each default is the recipe's labeling: block (rlaif/config/labeling.py), whose own defaults are given here
    lp.add_argument("--samples-per-prompt", type=int, metavar="K",
                    help="completions sampled per prompt; every pair of them is judged, K*(K-1)/2 (default: the "
                         "recipe's labeling.samples_per_prompt, 2)")
    lp.add_argument("--max-prompts", type=int, metavar="N", help="label the first N valid prompts only")
    lp.add_argument("--tie-epsilon", type=float, metavar="E",
                    help="a soft label within E of 0.5 is a tie, counted and left out (default: labeling.tie_epsilon, "
                         "0.05)")
    lp.add_argument("--batch-prompts", type=int, metavar="N",
                    help="prompts sampled, judged and saved together; a killed run loses at most one such chunk "
                         "(default: labeling.batch_prompts, 16)")
    lp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    lp.set_defaults(fn=cmd_label)


def cmd_label(a) -> int:
    r = load_recipe(a.recipe, a.overrides)
    out = Path(a.out)
    o = options_from(r, out, a.prompts, a.pairs)
    given = {"samples_per_prompt": a.samples_per_prompt, "max_prompts": a.max_prompts, "tie_epsilon": a.tie_epsilon,
             "batch_prompts": a.batch_prompts}
    for key, value in given.items():
        if value is not None:  # a flag given overrides the recipe's labeling: value
            setattr(o, key, value)
    s = label(r, o)
    flips = "" if s["flip_rate"] is None else f"; position flips {s['flip_rate']:.1%}"
    cut = f"; {s['truncated']} cut to fit the judge's context" if s["truncated"] else ""
    print(f"{out}: {s['pairs_written']} pair(s) from {s['prompts']}/{s['prompts_in_input']} prompt(s), "
          f"{s['mode']}; left out: {s['ties']} tie(s), {s['failures']} failed, {s['identical']} identical; "
          f"{s['malformed_lines']} malformed line(s){flips}{cut}; {s['judge_calls']} judge call(s) "
          f"({s['judge_calls_this_run']} this run); summary: {summary_path(out)}", file=sys.stderr)
    if s["stopped"]:
        print(f"error: the judge stopped the labelling: {s['stopped']}. What was labelled is saved; run the same "
              f"command again to continue ({progress_path(out)} says where).", file=sys.stderr)
        return 1
    return 0
