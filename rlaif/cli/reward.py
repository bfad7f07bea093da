"""`rlaif reward score`: the recipe's whole reward (every source, combined as in training) on Nova reward-Lambda
samples."""
from __future__ import annotations

import sys

from rlaif.config.recipe import load_recipe
from rlaif.eval.reward_file import reward_file


def add_parser(sub) -> None:
    rp = sub.add_parser("reward", help="the recipe's whole reward, outside training")
    rsub = rp.add_subparsers(dest="reward_command", required=True, metavar="REWARD_COMMAND")
    sc = rsub.add_parser(
        "score", help="score Nova reward-Lambda samples with the recipe's whole reward, as training computes it",
        description="Read Nova reward-Lambda event samples (one JSON object per line: id, messages ending with the "
                    "assistant turn, metadata and/or reference_answer) and write one Nova reward-Lambda response "
                    "per valid sample: the recipe's whole reward (its rewards: sources - judges, verifiable rules, "
                    "Python functions, reward Lambdas - combined as in training), with a metrics_list Reward entry "
                    "per source by its name. A sample that a source could not score is written as failed "
                    "(aggregate_reward_score null, failed: true, and why), not as a number. Malformed lines are "
                    "named with their line number and skipped; --strict makes them exit 1. A judge server starts "
                    "only when a source needs one. For the judge alone, with its rationale and per-criterion "
                    "scores, use `rlaif judge score`.")
    sc.add_argument("recipe")
    sc.add_argument("--input", required=True, help="Nova Lambda-event samples, JSONL")
    sc.add_argument("--output", required=True, help="where to write the Lambda responses, JSONL")
    sc.add_argument("--strict", action="store_true", help="exit 1 if any input line was refused")
    sc.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override the recipe, as for `rlaif train` (e.g. 'rewards=[{kind: verifiable, name: "
                         "correct, check: numeric_match}]')")
    sc.set_defaults(fn=cmd_score)


def cmd_score(a) -> int:
    r = load_recipe(a.recipe, a.overrides)
    res = reward_file(r, a.input, a.output)
    why = "; ".join(f"{n} on {f['samples']} ({f['first']})" for n, f in res["failures"].items() if f["samples"])
    failed = f" (written with no reward, as training leaves them out; failed: {why})" if res["failed"] else ""
    print(f"{a.output}: {res['written']} response(s) from {', '.join(res['sources'])}; {res['failed']} sample(s) "
          f"failed{failed}; {res['refused']} input line(s) refused", file=sys.stderr)
    if res["stop_reason"]:
        print(f"note: training would stop here: {res['stop_reason']}", file=sys.stderr)
    return 1 if a.strict and res["problems"] else 0
