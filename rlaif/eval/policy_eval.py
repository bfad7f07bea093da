"""Evaluate a policy (base, or base + LoRA adapter) on held-out prompts with the recipe's judge: `rlaif eval`.

Completions are sampled as the recipe's `eval:` block says (temperature, samples per prompt, seed), then scored
by the same judge that rewards training. Beside the judge's pass rate: per-criterion pass rates,
deterministic-check pass rates, best-of-k as in the Nova case study (per prompt the judge's best of k completions
is the one that counts), the second opinion's pass rates (a rule and/or a second judge, as the case study
re-scored with a modified judge prompt: the opinion that tells a policy that learned the criterion from one that
learned to fool the judge), and the win rate of the adapter against the base policy on the same prompts.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import time
from collections import defaultdict

from rlaif.common.jsonl import write_jsonl
from rlaif.common.stats import fmt, mean, rate
from rlaif.config.recipe import Recipe
from rlaif.config.rewards import JudgeSourceSpec
from rlaif.data.dataset import load_dataset
from rlaif.data.samples import Sample
from rlaif.eval.sampling import load_policy, sample_completions, sample_served
from rlaif.eval.second_opinion import OpinionSource
from rlaif.factory import Endpoints, apply_threads, make_judge, make_sources
from rlaif.judge.judgment_log import JudgmentLog
from rlaif.rewards.source import record_metadata, row_columns


def evaluate_policy(recipe: Recipe, base_url: str, *, dataset: str, adapter: str | None = None,
                    tag: str | None = None, second: OpinionSource | None = None,
                    served: tuple[str, str] | None = None) -> dict:
    """Sample, judge, and score with the second opinion (by default the recipe's truth_regex alone). Adds
    per-criterion and check pass rates and best-of-k; with `tag`, writes the rows to RUN_DIR/eval_TAG.jsonl.
    `served` = (url, model): sample a served policy (`rlaif serve`) instead of loading one."""
    apply_threads(recipe)
    e = recipe.eval
    ds = load_dataset(dataset, columns=recipe.data.columns)
    if e.max_prompts:
        ds = ds.select(range(min(e.max_prompts, len(ds))))
    t0 = time.perf_counter()
    if served:
        completions = sample_served(*served, list(ds["prompt"]), k=e.samples_per_prompt, temperature=e.temperature,
                                    max_new_tokens=e.max_new_tokens, seed=e.seed,
                                    template_kwargs=recipe.template_kwargs())
        adapter = f"{served[0]} model '{served[1]}'"
    else:
        model, tok = load_policy(recipe.policy.model, adapter, reasoning=recipe.policy.reasoning)
        completions = sample_completions(model, tok, list(ds["prompt"]), k=e.samples_per_prompt,
                                         temperature=e.temperature, max_new_tokens=e.max_new_tokens, seed=e.seed,
                                         template_kwargs=recipe.template_kwargs())
    t_gen = time.perf_counter() - t0
    samples = [Sample(id=f"{row['id']}#{j}", prompt=row["prompt"], response=c, metadata=record_metadata(row),
                      columns=row_columns(row)) for row, cs in zip(ds, completions) for j, c in enumerate(cs)]
    judge = make_judge(recipe, base_url)
    verdicts = judge.score_sync(samples)
    by_source = score_sources(recipe, base_url, samples, verdicts) if recipe.rewards else {}
    rule = re.compile(e.truth_regex) if e.truth_regex else None
    rows = []
    for s, v in zip(samples, verdicts):
        row = {"id": s.id, "prompt": s.prompt[-1]["content"], "completion": s.response, "reward": v.reward,
               "judge_pass": None if v.reward is None else v.reward > 0.5}
        if rule is not None:
            row["rule_pass"] = bool(rule.search(s.response))
        row["scores"] = {k: (None if x is None else round(x, 4)) for k, x in v.scores.items()}
        if v.checks:
            row["checks"] = v.checks
        rows.append(row)
    for i, row in enumerate(rows if by_source else []):
        row["sources"] = {name: rewards[i] for name, rewards in by_source.items()}
    if second is not None and second.judge_recipe is not None:
        for row, passed in zip(rows, second.judge_pass(samples)):
            row["second_judge_pass"] = passed
    scored = [r for r in rows if r["judge_pass"] is not None]
    res = {
        "adapter": adapter,
        "dataset": dataset,
        "n_prompts": len(ds),
        "samples_per_prompt": e.samples_per_prompt,
        "temperature": e.temperature,
        "max_new_tokens": e.max_new_tokens,
        "seed": e.seed,
        "n_completions": len(rows),
        "judge_failures": len(rows) - len(scored),
        "judge_pass_rate": mean([r["judge_pass"] for r in scored]),
        "judge_mean_reward": mean([r["reward"] for r in scored]),
        "mean_completion_chars": mean([len(r["completion"]) for r in rows]),
        "generate_s": round(t_gen, 1),
        "judge_s": round(time.perf_counter() - t0 - t_gen, 1),
        "judge": judge.summary(),
        "rows": rows,
    }
    if rule is not None:
        res["rule_pass_rate"] = mean([r["rule_pass"] for r in rows])
        res["judge_agreement_with_rule"] = mean([r["judge_pass"] == r["rule_pass"] for r in scored])
    res.update(extra_metrics(rows, e.samples_per_prompt))
    if by_source:
        res.update(source_metrics(rows))
    if tag:
        res["completions_file"] = str(write_jsonl(recipe.run_dir / f"eval_{tag}.jsonl", rows))
    return res


def score_sources(recipe: Recipe, base_url: str, samples: list[Sample], verdicts: list) -> dict[str, list]:
    """Each of the recipe's reward sources on the samples: {source: reward per sample}. A judge source that is the
    recipe's judge as it stands reuses its verdicts; the others are asked (a judge of their own is served for the
    duration)."""
    out: dict[str, list] = {}
    with contextlib.ExitStack() as stack:
        log = JudgmentLog(None)
        to_score = [spec for spec in recipe.reward_sources()
                    if not (isinstance(spec, JudgeSourceSpec) and spec.rubric is None and spec.mode is None
                            and spec.judge is None)]
        for spec in recipe.reward_sources():
            if spec not in to_score:
                out[spec.name] = [v.reward for v in verdicts]
        sources = make_sources(recipe.model_copy(update={"rewards": to_score}), Endpoints(recipe, recipe.run_dir,
                                                                                         base_url, stack),
                               log, self_test=False) if to_score else []

        async def run():
            try:
                return await asyncio.gather(*[s.score(samples) for s in sources])
            finally:
                for s in sources:
                    await s.aclose()
        for src, scored in zip(sources, asyncio.run(run()) if sources else []):
            out[src.name] = scored.rewards
    return {spec.name: out[spec.name] for spec in recipe.reward_sources()}


def source_metrics(rows: list[dict]) -> dict:
    """Per source: mean reward and pass rate (reward above 0.5); and the share of completions every source
    passes."""
    names = list(rows[0]["sources"]) if rows else []
    per = {n: {"mean_reward": mean([r["sources"][n] for r in rows if r["sources"][n] is not None]),
               "pass_rate": rate(None if r["sources"][n] is None else r["sources"][n] > 0.5 for r in rows),
               "failures": sum(r["sources"][n] is None for r in rows)} for n in names}
    all_pass = rate(all(r["sources"][n] is not None and r["sources"][n] > 0.5 for n in names) for r in rows)
    return {"sources": per, "all_sources_pass_rate": all_pass}


def extra_metrics(rows: list[dict], k: int) -> dict:
    out: dict = {}
    crits = sorted({c for r in rows for c in r.get("scores", {})})
    out["criterion_pass_rates"] = {c: rate(None if r["scores"].get(c) is None else r["scores"][c] > 0.5
                                            for r in rows) for c in crits}
    checks = sorted({c for r in rows for c in r.get("checks", {})})
    if checks:
        out["check_pass_rates"] = {c: rate(r["checks"].get(c, 0.0) >= 0.5 for r in rows) for c in checks}
    if any("second_judge_pass" in r for r in rows):
        out["second_judge_pass_rate"] = rate(r.get("second_judge_pass") for r in rows)
        both = [r for r in rows if r.get("second_judge_pass") is not None and r["judge_pass"] is not None]
        out["judge_agreement_with_second_judge"] = rate(r["judge_pass"] == r["second_judge_pass"] for r in both)
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["reward"] is not None:
            groups[r["id"].rsplit("#", 1)[0]].append(r)
    best = [max(g, key=lambda r: r["reward"]) for g in groups.values()]
    if best:
        out["best_of_k"] = {"k": k, "n_prompts": len(best),
                            "mean_reward": round(statistics.fmean(r["reward"] for r in best), 4),
                            "judge_pass_rate": rate(r["judge_pass"] for r in best)}
        if any("rule_pass" in r for r in best):
            out["best_of_k"]["rule_pass_rate"] = rate(r.get("rule_pass") for r in best)
        if any("second_judge_pass" in r for r in best):
            out["best_of_k"]["second_judge_pass_rate"] = rate(r.get("second_judge_pass") for r in best)
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
    for n, m in base.get("sources", {}).items():
        for key in ("pass_rate", "mean_reward"):
            out.append((f"source {n} {key.replace('_', ' ')}", fmt(m[key]),
                        fmt(tuned["sources"][n][key]) if tuned else "-"))
    if "all_sources_pass_rate" in base:
        out.append(("all sources pass", fmt(base["all_sources_pass_rate"]),
                    fmt(tuned["all_sources_pass_rate"]) if tuned else "-"))
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


def without_rows(res: dict | None) -> dict | None:
    return None if res is None else {k: v for k, v in res.items() if k != "rows"}
