"""The RLAIF family side by side in the smoke world: direct RLAIF (the judge scores every rollout,
recipes/smoke.yaml), distilled RLAIF (the judge labels preference pairs, a reward model is trained on them, GRPO
runs against the reward model: recipes/smoke-distilled.yaml) and the warm-started policy alone (no RL), on the same
prompts, steps and seeds.

    .venv/bin/python benchmarks/rlaif_family.py [--seeds 0,1,2] [--steps 150] [--json PATH] [--out DIR]

Each (member, seed) is one `rlaif smoke` run (rlaif/cli/smoke.py) against one judge server started here for all of
them, with `seed` (GRPO's sampling and the policy's LoRA init) set to the seed. The distilled member's labels (sampled
with the recipe's fixed eval seed) and reward model (its recipe's seed) are the same in every run: the seeds vary the
RL, not the distillation (docs/rlaif-family.md says why: a LoRA reward model on the tiny base fails with some seeds). The evaluation is the smoke run's: 64 held-out prompts x 4 samples at T=1 with eval.seed fixed, so every
member's "before" is the same warm-started policy, which is the third member. Columns (mean and spread over the
seeds): the rule-checked (regex) pass rate before and after, the judge's pass rate after, the win rate against the
base policy by the judge's reward (rlaif/eval/policy_eval.py: ties count half), the judge calls the method itself
needs (direct: the reward in training; distilled: the labels; the audits and evaluations, the same for both, left
out), the reward model's held-out accuracy against the labels, and the wall time of the run (audit and evaluation
included). The last line is `direct_gain=X distilled_gain=Y distilled_judge_calls_share=Z`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MEMBERS = {"direct": "recipes/smoke.yaml", "distilled": "recipes/smoke-distilled.yaml"}


def run_member(member: str, seed: int, steps: int, out: Path, url: str) -> dict:
    """One smoke run; its summary with the judge calls the method needed."""
    from rlaif.cli.smoke import run_smoke

    run_dir = out / f"{member}-seed{seed}"
    overrides = [f"seed={seed}", f"output_dir={run_dir}", f"grpo.max_steps={steps}"]
    t = time.perf_counter()
    rc = run_smoke(MEMBERS[member], overrides, base_url=url)
    s = json.loads((run_dir / "summary.json").read_text())
    train = json.loads((run_dir / "train_summary.json").read_text())
    method_calls = s["label_judge_calls"] if member == "distilled" else train["judge"]["calls"]
    return {"member": member, "seed": seed, "rc": rc, "bars_missed": s["bars_missed"],
            "rule_before": s["true_pass_rate_before"], "rule_after": s["true_pass_rate_after"],
            "judge_before": s["pass_rate_before"], "judge_after": s["pass_rate_after"],
            "win_rate_vs_base": s["win_rate_vs_base"], "method_judge_calls": method_calls,
            "reward_model_accuracy": s.get("reward_model_accuracy"), "steps": s["steps"],
            "wall_s": round(time.perf_counter() - t, 1)}


def spread(values: list[float | None], fmt: str) -> str:
    """mean +- standard deviation (over the seeds)."""
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    if len(v) == 1:
        return format(v[0], fmt)
    return f"{format(statistics.fmean(v), fmt)} +- {format(statistics.stdev(v), fmt)}"


def table(rows: list[dict], seeds: list[int], steps: int) -> str:
    by = {m: [r for r in rows if r["member"] == m] for m in MEMBERS}
    base = rows[0]  # every member's "before": the same warm-started policy, the same evaluation
    lines = [f"## The RLAIF family in the smoke world ({len(seeds)} seeds: {', '.join(map(str, seeds))}; "
             f"{steps} GRPO steps; 64 held-out prompts x 4 samples)", "",
             "| member | rule pass rate before -> after | judge pass rate after | win rate vs base (judge) | "
             "judge calls the method needs | reward model held-out accuracy | wall s |",
             "|---|---|---|---|---|---|---|",
             f"| warm-started policy alone (no RL) | {base['rule_before']:.3f} | {base['judge_before']:.3f} | 0.500 "
             f"| 0 | - | - |"]
    names = {"direct": "direct RLAIF (judge scores every rollout)",
             "distilled": "distilled RLAIF (judge labels -> reward model -> GRPO)"}
    for m, rs in by.items():
        if not rs:
            continue
        lines.append(f"| {names[m]} | {rs[0]['rule_before']:.3f} -> {spread([r['rule_after'] for r in rs], '.3f')} | "
                     f"{spread([r['judge_after'] for r in rs], '.3f')} | "
                     f"{spread([r['win_rate_vs_base'] for r in rs], '.3f')} | "
                     f"{spread([r['method_judge_calls'] for r in rs], '.0f')} | "
                     f"{spread([r['reward_model_accuracy'] for r in rs], '.3f')} | "
                     f"{spread([r['wall_s'] for r in rs], '.0f')} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=150, help="GRPO steps of each run (the smoke recipes': 150)")
    ap.add_argument("--members", default="direct,distilled")
    ap.add_argument("--out", help="the runs' folder (default: a temporary one)")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    members = a.members.split(",")
    for m in members:
        if m not in MEMBERS:
            raise SystemExit(f"unknown member {m!r}: {', '.join(MEMBERS)}")
    from rlaif.common.console import say
    from rlaif.config.recipe import load_recipe
    from rlaif.factory import judge_endpoint

    rows = []
    with contextlib.ExitStack() as stack:
        out = Path(a.out) if a.out else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        out.mkdir(parents=True, exist_ok=True)
        judge_dir = out / "judge"
        judge_dir.mkdir(exist_ok=True)
        url = stack.enter_context(judge_endpoint(load_recipe(MEMBERS["direct"]), judge_dir)).url
        for i, (seed, m) in enumerate((s, m) for s in seeds for m in members):
            say(f"[{i + 1}/{len(seeds) * len(members)}] {m}, seed {seed}")
            rows.append(run_member(m, seed, a.steps, out, url))
            say(f"{m}, seed {seed}: rule pass {rows[-1]['rule_before']:.3f} -> {rows[-1]['rule_after']:.3f}, "
                f"{rows[-1]['wall_s']:.0f} s")
    print(table(rows, seeds, a.steps))
    failed = [f"{r['member']} seed {r['seed']}: {'; '.join(r['bars_missed'])}" for r in rows if r["rc"] != 0]
    if failed:
        print("\nruns that missed a smoke bar: " + " | ".join(failed))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))

    def gain(m):
        rs = [r for r in rows if r["member"] == m]
        return statistics.fmean(r["rule_after"] - r["rule_before"] for r in rs) if rs else float("nan")
    calls = {m: statistics.fmean(r["method_judge_calls"] for r in rows if r["member"] == m) for m in members}
    share = calls["distilled"] / calls["direct"] if {"direct", "distilled"} <= set(calls) and calls["direct"] else \
        float("nan")
    print(f"direct_gain={gain('direct'):.3f} distilled_gain={gain('distilled'):.3f} "
          f"distilled_judge_calls_share={share:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
