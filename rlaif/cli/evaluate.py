"""`rlaif eval RECIPE [--adapter DIR | --policy-url URL]`: the policy, base and with an adapter (loaded here, or
served by `rlaif serve`), on held-out prompts, judged and second-opinioned (rlaif/eval/policy_eval.py)."""
from __future__ import annotations

import json

from rlaif.common.console import say
from rlaif.config.recipe import load_recipe
from rlaif.errors import UserError
from rlaif.eval.policy_eval import baseline_warnings, compare, evaluate_policy, print_comparison, without_rows
from rlaif.eval.sampling import served_policy_models
from rlaif.eval.second_opinion import open_second_opinion
from rlaif.factory import judge_endpoint


def add_parser(sub) -> None:
    ep = sub.add_parser("eval", help="sample the policy on held-out prompts and score it with the judge",
                        description="Sample completions (recipe's eval block) for held-out prompts from the base "
                                    "policy and base + adapter, and report judge pass rates (overall, per criterion, "
                                    "best-of-k), check pass rates, the adapter's win rate against the base, and, "
                                    "when the recipe has eval.truth_regex or eval.second_judge, the second "
                                    "opinion's pass rates and the judge's agreement with it.")
    ep.add_argument("recipe")
    ep.add_argument("--adapter", help="LoRA adapter folder (e.g. runs/NAME/adapter): evaluated beside the base "
                    "policy, with the adapter's win rate against it; default: the base policy alone")
    ep.add_argument("--adapter-only", action="store_true", help="with --adapter or --policy-url: skip the base "
                    "policy")
    ep.add_argument("--policy-url", metavar="URL", help="sample a served policy instead of loading one: "
                    "`rlaif serve RUN_DIR`'s URL (its model 'trained' is evaluated beside 'base'), or any "
                    "OpenAI-compatible server with --policy-model")
    ep.add_argument("--policy-model", default="trained", help="with --policy-url: the model name to evaluate "
                    "(default: trained); a server that also lists 'base' has it evaluated beside")
    ep.add_argument("--dataset", help="Nova RFT JSONL of prompts (default: the recipe's data.eval)")
    ep.add_argument("--output", help="write the metrics as JSON here")
    ep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ep.set_defaults(fn=cmd_eval)


def cmd_eval(a) -> int:
    r = load_recipe(a.recipe, a.overrides)
    dataset = a.dataset or r.data.eval
    if not dataset:
        raise UserError(f"{r.source}: data.eval: no held-out dataset (or pass --dataset FILE)")
    base = tuned = cmp = None
    if a.policy_url and a.adapter:
        raise UserError("--policy-url samples a served policy: give it or --adapter, not both")
    listed = served_policy_models(a.policy_url) if a.policy_url else []
    if a.policy_url and a.policy_model not in listed:
        raise UserError(f"--policy-url {a.policy_url} serves {', '.join(listed) or 'no model'}, not "
                        f"'{a.policy_model}' (--policy-model)")
    with judge_endpoint(r, r.run_dir) as ep, open_second_opinion(r, ep.url) as second:
        if a.policy_url:  # `rlaif serve`: 'trained' beside 'base', as an adapter beside its base
            if "base" in listed and a.policy_model != "base" and not a.adapter_only:
                base = evaluate_policy(r, ep.url, dataset=dataset, second=second, served=(a.policy_url, "base"))
            tuned = evaluate_policy(r, ep.url, dataset=dataset, second=second, served=(a.policy_url, a.policy_model))
        if not a.policy_url and (not a.adapter or not a.adapter_only):
            base = evaluate_policy(r, ep.url, dataset=dataset, second=second)
        if a.adapter:
            tuned = evaluate_policy(r, ep.url, dataset=dataset, adapter=a.adapter, second=second)
    if base and tuned:
        cmp = compare(base, tuned)
    print_comparison(base or tuned, tuned if base else None, cmp)
    for w in baseline_warnings(base) if base else []:
        say(f"[yellow]warning[/]: {w}")
    if a.output:
        with open(a.output, "w") as f:
            json.dump({"base": without_rows(base), "adapter": without_rows(tuned), "comparison": cmp,
                       "second_opinion": second.name}, f, indent=2)
    return 0
