"""`rlaif judge audit`: how far to trust a judge before training on it, measured on labelled samples.

Labels (JSONL, one object per line), any mix of:
  - pointwise: {"id", "messages": [..., {"role": "assistant", ...}], "labels": {CRITERION: true|false|1-5,
    "overall": true|false|0..1}} -- a Nova sample with gold verdicts per criterion and/or overall;
  - pairwise:  {"id", "messages": [...prompt...], "chosen": "...", "rejected": "..."} -- a preferred response.

Per judge: agreement per criterion (accuracy, Cohen's kappa, Spearman for scales and for pass/fail scores
against 0/1 labels) and the confusion counts; length bias (rank correlation of the judge's score with
response length, minus that of the gold labels, so a judge is not blamed for a length effect the labels
share); self-consistency (the spread of repeated scoring of the same samples, cache off); and for pairs,
accuracy and position bias (how often the verdict flips when the order of the two responses flips). Several
judges run on the same labels side by side; the recipe's `audit:` thresholds make the result pass or fail.
"""
from __future__ import annotations

import asyncio
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from rlaif import stats
from rlaif.errors import UserError

if TYPE_CHECKING:
    from rlaif.recipe import Recipe


class AuditSpec(BaseModel):
    """Thresholds that turn an audit into pass or fail (None: reported, not enforced), and its sampling."""
    model_config = ConfigDict(extra="forbid")
    min_accuracy: float | None = Field(None, ge=0, le=1)  # every labelled criterion
    min_kappa: float | None = Field(None, ge=-1, le=1)
    min_spearman: float | None = Field(None, ge=-1, le=1)  # scale criteria and overall scores
    max_length_bias: float | None = Field(None, ge=0, le=2)  # |rho(judge, length) - rho(gold, length)|
    max_score_spread: float | None = Field(None, ge=0)  # mean std of repeated scores of one sample
    min_pair_accuracy: float | None = Field(None, ge=0, le=1)
    max_position_flip_rate: float | None = Field(None, ge=0, le=1)
    repeats: int = Field(3, ge=2)  # how often each consistency sample is scored
    consistency_samples: int = Field(50, ge=0)  # how many samples are scored repeatedly (0: skip)


@dataclass
class Labelled:
    samples: list = field(default_factory=list)  # rlaif.judge.reward.Sample
    gold: list[dict] = field(default_factory=list)
    pairs: list[dict] = field(default_factory=list)  # {id, prompt, chosen, rejected}


def read_labels(path: str | Path) -> Labelled:
    """Pointwise and pairwise labels from JSONL; a bad line stops with its line number and field."""
    from rlaif.data import normalise_messages
    from rlaif.judge.reward import Sample

    path = Path(path)
    if not path.exists():
        raise UserError(f"labels file not found: {path}")
    out = Labelled()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise UserError(f"{path}:{n}: not JSON: {e}") from None
        if not isinstance(obj, dict) or "messages" not in obj:
            raise UserError(f"{path}:{n}: messages: expected a JSON object with messages and labels, "
                            "or messages, chosen and rejected")
        rid = str(obj.get("id", n))
        if "chosen" in obj or "rejected" in obj:
            msgs, errs = normalise_messages(obj["messages"], "messages")
            for key in ("chosen", "rejected"):
                if not isinstance(obj.get(key), str):
                    errs.append(f"{key}: must be a string (the {key} response of the pair)")
            if errs:
                raise UserError(f"{path}:{n}: {errs[0]}")
            out.pairs.append({"id": rid, "prompt": msgs, "chosen": obj["chosen"], "rejected": obj["rejected"]})
            continue
        msgs, errs = normalise_messages(obj["messages"], "messages", completion_last=True)
        if errs:
            raise UserError(f"{path}:{n}: {errs[0]}")
        labels = obj.get("labels")
        if not isinstance(labels, dict) or not labels:
            raise UserError(f"{path}:{n}: labels: must be a non-empty object {{criterion: true/false or 1-5}}")
        for k, v in labels.items():
            if not isinstance(v, (bool, int, float)):
                raise UserError(f"{path}:{n}: labels.{k}: must be true/false or a number, not {v!r}")
        out.samples.append(Sample(id=rid, prompt=msgs[:-1], response=msgs[-1]["content"],
                                  metadata={k: v for k, v in obj.items() if k not in ("messages", "labels", "id")}))
        out.gold.append(labels)
    if not out.samples and not out.pairs:
        raise UserError(f"{path}: no labelled samples")
    return out


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
def _without_cache(recipe: "Recipe") -> "Recipe":
    return recipe.model_copy(update={"judge": recipe.judge.model_copy(update={"cache": False})})


def _score_pairs(recipe: "Recipe", url: str, pairs: list[dict]) -> tuple[list[float], list[float], int, int]:
    """Ask the judge about each pair in both orders; P(chosen wins) per order, weighted over the criteria."""
    from rlaif.judge import pairwise
    from rlaif.train import make_judge_reward

    judge = make_judge_reward(recipe, url, judgment_log=None)
    rubric, client = judge.rubric, judge.client
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
            except Exception:  # logprob.ParseError: counted as a failed pair below
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


def audit_judge(recipe: "Recipe", url: str, labelled: Labelled, spec: AuditSpec | None = None) -> dict:
    """The audit of one judge (the recipe's judge, rubric and mode) on the labels."""
    from rlaif.train import make_judge_reward

    spec = spec or getattr(recipe, "audit", None) or AuditSpec()
    judge = make_judge_reward(recipe, url, judgment_log=None)
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
            j = make_judge_reward(_without_cache(recipe), url, judgment_log=None)
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


def run_audit(recipe: "Recipe", url: str, labels_file: str | Path, others: list | None = None) -> dict:
    """The recipe's judge and any other judge recipes, side by side on the same labels and thresholds."""
    from rlaif.second_opinion import endpoint_for

    labelled = read_labels(labels_file)
    spec = recipe.audit if getattr(recipe, "audit", None) is not None else AuditSpec()
    judges = [audit_judge(recipe, url, labelled, spec)]
    for other in others or []:
        with endpoint_for(other, recipe, url) as other_url:
            judges.append(audit_judge(other, other_url, labelled, spec))
    return {"labels_file": str(labels_file), "n_samples": len(labelled.samples), "n_pairs": len(labelled.pairs),
            "judges": judges, "passed": judges[0]["passed"]}


def audit_rows(res: dict) -> list[tuple[str, list[str]]]:
    """The audit as (metric, value per judge) rows, for the terminal table and the HTML report."""
    judges = res["judges"]

    def fmt(x):
        return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

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
    rows.append(("judge calls / failures", [f"{j['judge_calls']['calls']} / "
                                            f"{j['judge_calls']['failures'] + j['judge_calls']['parse_failures']}"
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
