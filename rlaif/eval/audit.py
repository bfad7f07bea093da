"""`rlaif judge audit`: how far to trust a judge before training on it, measured on labelled samples.

Labels: pointwise samples with gold verdicts and/or preferred pairs (rlaif/data/labels.py).

Per judge: agreement per criterion (accuracy, Cohen's kappa, Spearman for scales and for pass/fail scores
against 0/1 labels) and the confusion counts; length bias (rank correlation of the judge's score with
response length, minus that of the gold labels, so a judge is not blamed for a length effect the labels
share); self-consistency (the spread of repeated scoring of the same samples, cache off); and for pairs,
accuracy and position bias (how often the verdict flips when the order of the two responses flips). Several
judges run on the same labels side by side; the recipe's `audit:` thresholds make the result pass or fail.
"""
from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

from rlaif.common import stats
from rlaif.common.stats import fmt
from rlaif.config.audit import AuditSpec
from rlaif.config.recipe import Recipe
from rlaif.data.labels import Labelled, read_labels
from rlaif.errors import UserError
from rlaif.eval.second_opinion import endpoint_for
from rlaif.factory import make_judge
from rlaif.judge import pairwise
from rlaif.judge.calibration import fit
from rlaif.rewards.source import failed_count


# -- pure statistics over verdicts and labels --------------------------------------------------------------------
def criterion_agreement(gold: list, scores: list[float], kind: str) -> dict:
    """gold: bools (pass_fail) or 1-5 ints (scale); scores: the judge's scores in [0, 1]."""
    if kind == "scale":
        g = [int(x) for x in gold]
        p = [int(round(s * 4 + 1)) for s in scores]
        rho = stats.spearman(g, scores)
    else:
        g = [bool(x) for x in gold]
        p = [s > 0.5 for s in scores]
        rho = stats.spearman([float(x) for x in g], scores)
    return {"n": len(g), "kind": kind, "accuracy": stats.rounded(stats.accuracy(g, p)),
            "kappa": stats.rounded(stats.cohen_kappa(g, p)), "spearman": stats.rounded(rho),
            "confusion": stats.confusion(g, p)}


def length_bias(lengths: list[float], judge: list[float], gold: list[float]) -> dict:
    rj, rg = stats.spearman(lengths, judge), stats.spearman(lengths, gold)
    bias = None if rj is None else rj - (rg or 0.0)
    return {"judge_vs_length": stats.rounded(rj), "gold_vs_length": stats.rounded(rg), "bias": stats.rounded(bias)}


def spread(repeated: list[list[float]]) -> dict:
    """repeated: per sample, its scores over the repeats. Mean and max population std; verdict flip rate."""
    stds = [statistics.pstdev(r) for r in repeated if len(r) >= 2]
    flips = [len({x > 0.5 for x in r}) > 1 for r in repeated if len(r) >= 2]
    return {"n_samples": len(stds), "mean_spread": stats.rounded(statistics.fmean(stds)) if stds else None,
            "max_spread": stats.rounded(max(stds)) if stds else None,
            "verdict_flip_rate": stats.rounded(sum(flips) / len(flips)) if flips else None}


def pair_stats(p_chosen_first: list[float], p_rejected_first: list[float]) -> dict:
    """Inputs: P(Response A wins) with the chosen response as A, and with it as B, per pair.

    accuracy: the order-averaged verdict prefers the chosen response; position_flip_rate: the two orders give
    different winners; first_position_win_rate: how often Response A wins at all (0.5 when unbiased)."""
    n = len(p_chosen_first)
    if not n:
        return {"n_pairs": 0, "accuracy": None, "position_flip_rate": None, "first_position_win_rate": None}
    win = [(a + (1 - b)) / 2 > 0.5 for a, b in zip(p_chosen_first, p_rejected_first)]
    flip = [(a > 0.5) != (b <= 0.5) for a, b in zip(p_chosen_first, p_rejected_first)]
    first = [a > 0.5 for a in p_chosen_first] + [b > 0.5 for b in p_rejected_first]
    return {"n_pairs": n, "accuracy": stats.rounded(sum(win) / n), "position_flip_rate": stats.rounded(sum(flip) / n),
            "first_position_win_rate": stats.rounded(sum(first) / len(first))}


def apply_thresholds(res: dict, spec: AuditSpec) -> list[dict]:
    """One row per enforced threshold: {metric, value, op, bar, ok}. A missing value fails an enforced bar."""
    rows = []

    def need(metric, value, op, bar):
        if bar is None:
            return
        ok = value is not None and (value >= bar if op == ">=" else value <= bar)
        rows.append({"metric": metric, "value": value, "op": op, "bar": bar, "ok": ok})

    for name, c in res["criteria"].items():
        need(f"{name} accuracy", c["accuracy"], ">=", spec.min_accuracy)
        need(f"{name} kappa", c["kappa"], ">=", spec.min_kappa)
        if c["kind"] == "scale" or name == "overall":
            need(f"{name} spearman", c["spearman"], ">=", spec.min_spearman)
    lb = res.get("length_bias", {}).get("bias")
    need("length bias", None if lb is None else abs(lb), "<=", spec.max_length_bias)
    need("score spread", res.get("consistency", {}).get("mean_spread"), "<=", spec.max_score_spread)
    if res.get("pairs", {}).get("n_pairs"):
        need("pair accuracy", res["pairs"]["accuracy"], ">=", spec.min_pair_accuracy)
        need("position flip rate", res["pairs"]["position_flip_rate"], "<=", spec.max_position_flip_rate)
    return rows


# -- running a judge over the labels ------------------------------------------------------------------------------
def _without_cache(recipe: Recipe) -> Recipe:
    return recipe.model_copy(update={"judge": recipe.judge.model_copy(update={"cache": False})})


def _score_pairs(recipe: Recipe, url: str, pairs: list[dict]) -> tuple[list[float], list[float], int, int]:
    """Ask the judge about each pair in both orders; P(chosen wins) per order, weighted over the criteria."""
    judge = make_judge(recipe, url)
    rubric, client = judge.rubric, judge.backend
    params = pairwise.request_params(recipe.judge.top_logprobs, recipe.judge.temperature)
    total_w = sum(c.weight for c in rubric.criteria)

    calls = 0

    async def one(prompt, a, b):
        nonlocal calls
        out = 0.0
        for c in rubric.criteria:
            calls += 1
            res = await client.chat(pairwise.render(rubric, c, prompt, a, b).messages, **params)
            if res.response is None:
                return None
            try:
                out += c.weight * pairwise.p_first_wins(res.response)
            except Exception:  # a ParseError: counted as a failed pair below
                return None
        return out / total_w

    async def run():
        try:
            return await asyncio.gather(*[one(p["prompt"], p["chosen"], p["rejected"]) for p in pairs],
                                        *[one(p["prompt"], p["rejected"], p["chosen"]) for p in pairs])
        finally:
            await client.aclose()

    got = asyncio.run(run())
    first, second = got[:len(pairs)], got[len(pairs):]
    ok = [(a, b) for a, b in zip(first, second) if a is not None and b is not None]
    return [a for a, _ in ok], [b for _, b in ok], len(pairs) - len(ok), calls


def audit_judge(recipe: Recipe, url: str, labelled: Labelled, spec: AuditSpec | None = None) -> dict:
    """The audit of one judge (the recipe's judge, rubric and mode) on the labels."""
    spec = spec or recipe.audit
    judge = make_judge(recipe, url)
    kinds = {c.name: c.kind for c in judge.rubric.criteria}
    verdicts = judge.score_sync(labelled.samples) if labelled.samples else []
    summary = judge.summary()
    criteria, unknown = {}, set()
    agree = total = 0
    for name in sorted({k for g in labelled.gold for k in g}):
        if name != "overall" and name not in kinds:
            unknown.add(name)
            continue
        g, s = [], []
        for v, gold in zip(verdicts, labelled.gold):
            score = v.reward if name == "overall" else v.scores.get(name)
            if name in gold and score is not None:
                g.append(gold[name])
                s.append(score)
        if not g:
            continue
        if name == "overall" and not all(isinstance(x, bool) for x in g):
            # overall 0..1 scores: Spearman is the measure; pass/fail agreement at 0.5
            c = criterion_agreement([float(x) > 0.5 for x in g], s, "pass_fail")
            c["spearman"], c["kind"] = stats.rounded(stats.spearman([float(x) for x in g], s)), "score"
        else:
            c = criterion_agreement(g, s, kinds.get(name, "pass_fail"))
        criteria[name] = c
        agree += round((c["accuracy"] or 0) * c["n"])
        total += c["n"]
    res = {"judge": recipe.judge.name, "recipe": recipe.source, "mode": recipe.judge.mode,
           "rubric": judge.rubric.name, "n_samples": len(labelled.samples), "n_judgments": total,
           "agreement": round(agree / total, 4) if total else None, "criteria": criteria,
           "unknown_criteria": sorted(unknown)}
    # length bias on the reward against the mean gold label per sample (pass = 1; scales scaled to 0..1)
    lengths, judged, gold_mean = [], [], []
    for smp, v, gold in zip(labelled.samples, verdicts, labelled.gold):
        vals = [(float(x) - 1) / 4 if kinds.get(k) == "scale" else float(x) for k, x in gold.items()
                if k in kinds or k == "overall"]
        if v.reward is not None and vals:
            lengths.append(len(smp.response))
            judged.append(v.reward)
            gold_mean.append(statistics.fmean(vals))
    if len(lengths) >= 3:
        res["length_bias"] = length_bias(lengths, judged, gold_mean)
    calls = dict(summary)
    k = min(spec.consistency_samples, len(labelled.samples))
    if k:
        subset = labelled.samples[:k]
        runs = []
        for _ in range(spec.repeats):
            j = make_judge(_without_cache(recipe), url)
            runs.append([v.reward for v in j.score_sync(subset)])
            for key in ("calls", "failures", "parse_failures"):
                calls[key] += j.totals[key]
        repeated = [[r[i] for r in runs if r[i] is not None] for i in range(k)]
        res["consistency"] = spread(repeated) | {"repeats": spec.repeats}
    if labelled.pairs:
        a, b, failed, n_calls = _score_pairs(recipe, url, labelled.pairs)
        res["pairs"] = pair_stats(a, b) | {"failed_pairs": failed}
        calls["calls"] += n_calls
        calls["failures"] += failed  # a pair with a failed or unparsable answer in either order
    res["judge_calls"] = {k: calls[k] for k in ("calls", "failures", "parse_failures")}
    res["thresholds"] = apply_thresholds(res, spec)
    res["passed"] = all(t["ok"] for t in res["thresholds"])
    return res


def run_audit(recipe: Recipe, url: str, labels_file: str | Path, others: list[Recipe] | None = None) -> dict:
    """The recipe's judge and any other judge recipes, side by side on the same labels and thresholds."""
    labelled = read_labels(labels_file)
    spec = recipe.audit
    judges = [audit_judge(recipe, url, labelled, spec)]
    for other in others or []:
        with endpoint_for(other, recipe, url) as other_url:
            judges.append(audit_judge(other, other_url, labelled, spec))
    return {"labels_file": str(labels_file), "n_samples": len(labelled.samples), "n_pairs": len(labelled.pairs),
            "judges": judges, "passed": judges[0]["passed"]}


def audit_rows(res: dict) -> list[tuple[str, list[str]]]:
    """The audit as (metric, value per judge) rows, for the terminal table and the HTML report."""
    judges = res["judges"]
    names = sorted({n for j in judges for n in j["criteria"]})
    rows = []
    for n in names:
        for m in ("n", "accuracy", "kappa", "spearman"):
            rows.append((f"{n} {m}", [fmt(j["criteria"].get(n, {}).get(m)) for j in judges]))
        rows.append((f"{n} confusion (gold->judge)",
                     [", ".join(f"{k} {v}" for k, v in j["criteria"].get(n, {}).get("confusion", {}).items()) or "-"
                      for j in judges]))
    for key, label in (("judge_vs_length", "rho(score, length)"), ("gold_vs_length", "rho(gold, length)"),
                       ("bias", "length bias")):
        rows.append((label, [fmt(j.get("length_bias", {}).get(key)) for j in judges]))
    for key, label in (("mean_spread", "score spread (mean std)"), ("verdict_flip_rate", "verdict flips on repeat")):
        rows.append((label, [fmt(j.get("consistency", {}).get(key)) for j in judges]))
    if res.get("n_pairs"):
        for key, label in (("accuracy", "pair accuracy"), ("position_flip_rate", "position flip rate"),
                           ("first_position_win_rate", "first position wins")):
            rows.append((label, [fmt(j.get("pairs", {}).get(key)) for j in judges]))
    rows.append(("judge calls / failures", [f"{j['judge_calls']['calls']} / {failed_count(j['judge_calls'])}"
                                            for j in judges]))
    rows.append(("thresholds", [("PASS" if j["passed"] else "FAIL: " + "; ".join(
        f"{t['metric']} {fmt(t['value'])} (needs {t['op']} {t['bar']})" for t in j["thresholds"] if not t["ok"]))
        if j["thresholds"] else "none set" for j in judges]))
    return rows


def print_audit(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"judge audit on {res['labels_file']} ({res['n_samples']} samples, {res['n_pairs']} pairs)")
    t.add_column("metric")
    for j in res["judges"]:
        t.add_column(f"{j['judge']} ({Path(j['recipe']).name}, {j['mode']})", justify="right")
    for metric, vals in audit_rows(res):
        t.add_row(metric, *vals)
    Console().print(t)


def audit_labels(recipe: Recipe, base_url: str, labels_file: str | Path) -> dict:
    """The recipe's judge audited on labelled samples, for the smoke summary; `agreement` pools all criteria."""
    res = run_audit(recipe, base_url, labels_file)
    j = res["judges"][0]
    return {"labels_file": str(labels_file), "n_samples": res["n_samples"], "n_judgments": j["n_judgments"],
            "agreement": j["agreement"], "judge": j["judge_calls"], "audit": res}


def calibrate_judge(recipe: Recipe, url: str, labels_file: str | Path, method: str = "auto") -> tuple:
    """(the Calibration of the recipe's judge fitted on half of the labels, its reliability before and after on the
    other half) for each pass/fail criterion with labels (rlaif/judge/calibration.py)."""
    if recipe.judge.mode != "logprob":
        raise UserError(f"{recipe.source}: --calibrate fits P(pass), which judge.mode logprob gives (not "
                        f"{recipe.judge.mode})")
    labelled = read_labels(labels_file)
    raw = recipe.model_copy(update={"judge": recipe.judge.model_copy(update={"calibration": None})})
    judge = make_judge(raw, url)
    verdicts = judge.score_sync(labelled.samples) if labelled.samples else []
    judge.close()
    scores: dict[str, tuple[list[float], list[bool]]] = {}
    for c in judge.rubric.criteria:
        if c.kind != "pass_fail":
            continue
        p, y = [], []
        for smp, v, gold in zip(labelled.samples, verdicts, labelled.gold):
            if c.name not in gold:
                continue
            if not isinstance(gold[c.name], bool):
                raise UserError(f"{labels_file}: sample {smp.id}: labels.{c.name}: a pass/fail criterion needs a "
                                f"true/false label to calibrate, not {gold[c.name]!r}")
            if v.scores.get(c.name) is not None:
                p.append(v.scores[c.name])
                y.append(gold[c.name])
        if p:
            scores[c.name] = (p, y)
    if not scores:
        raise UserError(f"{labels_file}: no true/false label for any pass/fail criterion of rubric "
                        f"{judge.rubric.name}: nothing to calibrate")
    return fit(recipe.judge.model, judge.rubric.name, scores, method)
