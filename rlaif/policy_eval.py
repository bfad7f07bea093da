"""`rlaif eval`: the policy, base and with an adapter, on the held-out split, judged and second-opinioned.

Beyond the judge's pass rate (rlaif/evaluate.py): per-criterion pass rates, deterministic-check pass rates,
best-of-k as in the Nova case study (per prompt the judge's best of k completions is the one that counts), the
second opinion's pass rates (rule and/or second judge, as the case study re-scored with a modified judge
prompt), and the pairwise win rate of the adapter against the base policy on the same prompts.
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict


def _rate(xs) -> float | None:
    xs = [bool(x) for x in xs if x is not None]
    return round(sum(xs) / len(xs), 4) if xs else None


def extra_metrics(rows: list[dict], k: int) -> dict:
    out: dict = {}
    crits = sorted({c for r in rows for c in r.get("scores", {})})
    out["criterion_pass_rates"] = {c: _rate(None if r["scores"].get(c) is None else r["scores"][c] > 0.5
                                            for r in rows) for c in crits}
    checks = sorted({c for r in rows for c in r.get("checks", {})})
    if checks:
        out["check_pass_rates"] = {c: _rate(r["checks"].get(c, 0.0) >= 0.5 for r in rows) for c in checks}
    if any("second_judge_pass" in r for r in rows):
        out["second_judge_pass_rate"] = _rate(r.get("second_judge_pass") for r in rows)
        both = [r for r in rows if r.get("second_judge_pass") is not None and r["judge_pass"] is not None]
        out["judge_agreement_with_second_judge"] = _rate(r["judge_pass"] == r["second_judge_pass"] for r in both)
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["reward"] is not None:
            groups[r["id"].rsplit("#", 1)[0]].append(r)
    best = [max(g, key=lambda r: r["reward"]) for g in groups.values()]
    if best:
        out["best_of_k"] = {"k": k, "n_prompts": len(best),
                            "mean_reward": round(statistics.fmean(r["reward"] for r in best), 4),
                            "judge_pass_rate": _rate(r["judge_pass"] for r in best)}
        if any("rule_pass" in r for r in best):
            out["best_of_k"]["rule_pass_rate"] = _rate(r.get("rule_pass") for r in best)
        if any("second_judge_pass" in r for r in best):
            out["best_of_k"]["second_judge_pass_rate"] = _rate(r.get("second_judge_pass") for r in best)
    return out


def _win_rate(pairs: list[tuple[float, float]]) -> dict:
    """Wins, ties (counted half) and losses of the first of each pair against the second."""
    w = sum(a > b for a, b in pairs)
    t = sum(a == b for a, b in pairs)
    n = len(pairs)
    return {"n": n, "wins": w, "ties": t, "losses": n - w - t, "win_rate": round((w + t / 2) / n, 4) if n else None}


def compare(base: dict, tuned: dict) -> dict:
    """The adapter's completions against the base policy's, paired by prompt and sample index (same seed and
    settings). By the training judge's reward, and by the second opinion's pass/fail."""
    b = {r["id"]: r for r in base["rows"]}
    pairs = [(r, b[r["id"]]) for r in tuned["rows"] if r["id"] in b]
    out = {"by_judge_reward": _win_rate([(round(t["reward"], 4), round(o["reward"], 4)) for t, o in pairs
                                         if t["reward"] is not None and o["reward"] is not None])}
    for key in ("rule_pass", "second_judge_pass"):
        ps = [(float(t[key]), float(o[key])) for t, o in pairs
              if t.get(key) is not None and o.get(key) is not None]
        if ps:
            out[f"by_{key}"] = _win_rate(ps)
    return out


TABLE_KEYS = ("judge_pass_rate", "judge_mean_reward", "rule_pass_rate", "judge_agreement_with_rule",
              "second_judge_pass_rate", "judge_agreement_with_second_judge", "judge_failures", "mean_completion_chars")


def eval_table_rows(base: dict, tuned: dict | None, cmp: dict | None) -> list[tuple[str, str, str]]:
    """(metric, base, adapter) rows: the eval table of the terminal, the report and the smoke summary."""
    def fmt(x):
        return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

    out = []
    for k in TABLE_KEYS:
        if k in base or (tuned and k in tuned):
            out.append((k, fmt(base.get(k)), fmt(tuned.get(k)) if tuned else "-"))
    for c in base.get("criterion_pass_rates", {}):
        out.append((f"{c} pass rate", fmt(base["criterion_pass_rates"][c]),
                    fmt(tuned["criterion_pass_rates"].get(c)) if tuned else "-"))
    for c in base.get("check_pass_rates", {}):
        out.append((f"check {c} pass rate", fmt(base["check_pass_rates"][c]),
                    fmt(tuned["check_pass_rates"].get(c)) if tuned else "-"))
    bk, tk = base.get("best_of_k", {}), (tuned or {}).get("best_of_k", {})
    for k in ("mean_reward", "judge_pass_rate", "rule_pass_rate", "second_judge_pass_rate"):
        if k in bk:
            out.append((f"best-of-{bk['k']} {k}", fmt(bk[k]), fmt(tk.get(k)) if tuned else "-"))
    for key, label in (("by_judge_reward", "win rate vs base (judge reward)"),
                       ("by_rule_pass", "win rate vs base (rule)"),
                       ("by_second_judge_pass", "win rate vs base (second judge)")):
        if cmp and key in cmp:
            w = cmp[key]
            out.append((label, "-", f"{fmt(w['win_rate'])} ({w['wins']}W/{w['ties']}T/{w['losses']}L)"))
    return out


def print_comparison(base: dict, tuned: dict | None, cmp: dict | None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"eval on {base['dataset']}: {base['n_prompts']} prompts x {base['samples_per_prompt']} samples")
    t.add_column("metric")
    t.add_column("base", justify="right")
    t.add_column(f"adapter {tuned['adapter']}" if tuned else "adapter", justify="right")
    for row in eval_table_rows(base, tuned, cmp):
        t.add_row(*row)
    Console().print(t)


def baseline_warnings(base: dict) -> list[str]:
    """The Nova guidance's baseline check: >95% passing already means RFT is not needed; ~0% means SFT first."""
    rate = base.get("judge_pass_rate")
    if rate is None:
        return []
    if rate > 0.95:
        return [f"the base policy already passes {rate:.0%} of held-out samples: reinforcement fine-tuning is "
                "unlikely to help (Nova guidance: baseline above 95%)"]
    if rate < 0.05:
        return [f"the base policy passes only {rate:.0%} of held-out samples: rewards will be sparse "
                "(fewer than 5% positive); consider supervised fine-tuning first"]
    return []


def cmd_eval(a) -> int:
    from rlaif.errors import UserError
    from rlaif.evaluate import evaluate_policy
    from rlaif.recipe import load_recipe
    from rlaif.second_opinion import open_second_opinion
    from rlaif.train import judge_endpoint, say

    r = load_recipe(a.recipe, a.overrides)
    dataset = a.dataset or r.data.eval
    if not dataset:
        raise UserError(f"{r.source}: data.eval: no held-out dataset (or pass --dataset FILE)")
    base = tuned = cmp = None
    with judge_endpoint(r, r.run_dir) as ep, open_second_opinion(r, ep.url) as second:
        if not a.adapter or not a.adapter_only:
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
            json.dump({"base": _strip(base), "adapter": _strip(tuned), "comparison": cmp,
                       "second_opinion": second.name}, f, indent=2)
    return 0


def _strip(res: dict | None) -> dict | None:
    return None if res is None else {k: v for k, v in res.items() if k != "rows"}
