"""`rlaif judge rescore RUN_DIR --judge OTHER.yaml`: the completions a run was rewarded for, judged again by
another judge (or the same judge with another rubric), after the fact.

The training judge's verdicts are in the run's judgment logs (the rows of its first judge source, by name), with each
completion, its step and the process that logged it (a GRPO group may span processes); the prompts are
the run's training records (by id). Each logged sample (all, or `per_step` of each step, drawn with a fixed seed)
goes to the other judge, and per step the two judges' pass rates and their agreement are written, with the run's
regex (`eval.truth_regex`) beside them when it has one. A training judge that drifts away from the other judge as
training goes on is the signature of a policy learning to please it: the reward-hacking watch, after the fact.
Files in RUN_DIR/rescore/NAME/: rescore.jsonl (a row per sample), rescore.json (per step and the summary), and
the other judge's own judgment log.
"""
from __future__ import annotations

import json
import random
import re
import statistics
from collections import defaultdict
from pathlib import Path

from rlaif.common.jsonl import read_jsonl, write_jsonl
from rlaif.common.stats import mean
from rlaif.config.recipe import Recipe
from rlaif.data.dataset import read_records
from rlaif.data.samples import Sample
from rlaif.errors import UserError
from rlaif.factory import make_judge
from rlaif.judge.judgment_log import run_logs
from rlaif.rewards.source import record_metadata


def run_recipe(run_dir: Path) -> dict:
    path = run_dir / "recipe.resolved.json"
    if not path.exists():
        raise UserError(f"{run_dir}: no recipe.resolved.json: not a training run folder")
    return json.loads(path.read_text())


def training_source(run: dict, run_dir: Path) -> str:
    """The name of the run's judge source whose verdicts are re-scored: its first (the one whose numbers are
    `judge/*`); `judge` for a run without `rewards:` (its judge alone)."""
    rewards = run.get("rewards")
    if not rewards:
        if (run.get("reward") or {}).get("lambda_file"):
            raise UserError(f"{run_dir}: the run's reward is a Lambda file, no judge source: nothing to re-score")
        return "judge"
    judges = [r.get("name", "judge") for r in rewards if r.get("kind") == "judge"]
    if not judges:
        raise UserError(f"{run_dir}: the run has no judge source: its rewards are "
                        f"{', '.join(str(r.get('name')) for r in rewards)}; nothing to re-score")
    return judges[0]


def log_rank(log: Path) -> int:
    """The training process that wrote a judgment log: judgments.jsonl is rank 0's, judgments.rankN.jsonl rank N's."""
    m = re.fullmatch(r"judgments\.rank(\d+)\.jsonl", log.name)
    return int(m.group(1)) if m else 0


def logged_samples(run_dir: Path) -> list[dict]:
    """One entry per judged training sample: {rank, step, sample_id, completion, reward} from the rows of the run's
    training judge source (by its name, from the run's recipe; `judge` without one). Keyed by the process too: the
    processes of a GRPO group that spans them each log their own `record#0` at the same step."""
    logs = run_logs(run_dir)
    if not logs:
        raise UserError(f"{run_dir}: no judgments.jsonl: the run logged no judgments to re-score (the judgment log "
                        "is written by every run with a judge reward)")
    recipe = Path(run_dir) / "recipe.resolved.json"
    source = training_source(json.loads(recipe.read_text()), run_dir) if recipe.exists() else "judge"
    by_key: dict[tuple, dict] = {}
    for log in logs:
        rank = log_rank(log)
        for n, row in enumerate(read_jsonl(log), start=1):
            # rows written before sources were tagged are the judge's
            if row.get("source", "judge") != source or str(row.get("criterion", "")).startswith("check:"):
                continue
            if not {"step", "sample_id", "completion"} <= row.keys():
                raise UserError(f"{log}:{n}: a judgment without step, sample_id or completion: not rlaif's log")
            key = (rank, row["step"], row["sample_id"])
            entry = by_key.setdefault(key, {"rank": rank, "step": row["step"], "sample_id": row["sample_id"],
                                            "completion": row["completion"], "reward": None, "error": None})
            if row.get("error"):
                entry["error"] = row["error"]
            elif row.get("reward") is not None:
                entry["reward"] = row["reward"]
    return [e for e in by_key.values() if e["error"] is None and e["reward"] is not None]


def pick(samples: list[dict], per_step: int | None, seed: int = 0) -> list[dict]:
    """All samples, or `per_step` of each step drawn with a fixed seed; in step order."""
    steps: dict[int, list] = defaultdict(list)
    for s in samples:
        steps[s["step"]].append(s)
    rng = random.Random(seed)
    out = []
    for step in sorted(steps):
        group = sorted(steps[step], key=lambda s: (s["sample_id"], s.get("rank", 0)))
        out += group if per_step is None or len(group) <= per_step else rng.sample(group, per_step)
    return out


def agreement_by_step(rows: list[dict]) -> list[dict]:
    """Per step: samples, each judge's pass rate and mean reward, their agreement, and the regex's view."""
    steps: dict[int, list] = defaultdict(list)
    for r in rows:
        steps[r["step"]].append(r)
    out = []
    for step in sorted(steps):
        g = steps[step]
        judged = [r for r in g if r["other_reward"] is not None]
        entry = {"step": step, "samples": len(g), "other_failures": len(g) - len(judged),
                 "train_pass_rate": mean([r["train_pass"] for r in g]),
                 "other_pass_rate": mean([r["other_pass"] for r in judged]),
                 "agreement": mean([r["train_pass"] == r["other_pass"] for r in judged]),
                 "train_mean_reward": mean([r["train_reward"] for r in g]),
                 "other_mean_reward": mean([r["other_reward"] for r in judged])}
        if g and "regex_pass" in g[0]:
            entry |= {"regex_pass_rate": mean([r["regex_pass"] for r in g]),
                      "train_agreement_with_regex": mean([r["train_pass"] == r["regex_pass"] for r in g]),
                      "other_agreement_with_regex": mean([r["other_pass"] == r["regex_pass"] for r in judged])}
        out.append(entry)
    return out


def before_after(steps: list[dict]) -> dict:
    """The first and the last quarter of the steps (at least one step each), sample-weighted."""
    k = max(1, len(steps) // 4)

    def part(sel):
        n = sum(s["samples"] for s in sel)
        keys = [key for key in sel[0] if key not in ("step", "samples", "other_failures")]
        return {"steps": [sel[0]["step"], sel[-1]["step"]], "samples": n} | {
            key: round(statistics.fmean([s[key] for s in sel if s[key] is not None]), 4)
            if any(s[key] is not None for s in sel) else None for key in keys}
    return {"first": part(steps[:k]), "last": part(steps[-k:])} if steps else {}


def rescore(run_dir: str | Path, other: Recipe, judge_url: str, *, per_step: int | None = None,
            name: str | None = None, seed: int = 0) -> dict:
    run_dir = Path(run_dir)
    run = run_recipe(run_dir)
    source = training_source(run, run_dir)
    samples = pick(logged_samples(run_dir), per_step, seed)
    if not samples:
        raise UserError(f"{run_dir}: the judgment logs hold no judged sample without an error")
    data = run["data"]
    try:
        res = read_records(data["train"], data.get("columns"))
    except UserError as e:
        raise UserError(f"{run_dir}: the run's training data ({data['train']}) holds the prompts: {e}") from None
    records = {str(r["id"]): r for r in res.records}
    missing = sorted({s["sample_id"].rpartition("#")[0] for s in samples} - records.keys())
    if missing:
        raise UserError(f"{run_dir}: {len(missing)} logged sample(s) name records not in {data['train']} (e.g. "
                        f"{missing[0]}): the training data changed since the run")
    out = run_dir / "rescore" / (name or re.sub(r"[^A-Za-z0-9_.-]+", "_", other.judge.model).strip("_"))
    out.mkdir(parents=True, exist_ok=True)
    judge = make_judge(other, judge_url, judgment_log=out / "judgments.jsonl")
    try:
        verdicts = judge.score_sync([
            Sample(f"{s['sample_id']}@{s['step']}" + (f"@rank{s['rank']}" if s["rank"] else ""), records[s["sample_id"].rpartition("#")[0]]["prompt"],
                   s["completion"], record_metadata(records[s["sample_id"].rpartition("#")[0]])) for s in samples])
    finally:
        judge.close()
    truth = (run.get("eval") or {}).get("truth_regex")
    rule = re.compile(truth) if truth else None
    rows = []
    for s, v in zip(samples, verdicts):
        row = {"step": s["step"], "rank": s["rank"], "sample_id": s["sample_id"], "completion": s["completion"],
               "train_reward": s["reward"], "train_pass": s["reward"] > 0.5, "other_reward": v.reward,
               "other_pass": None if v.reward is None else v.reward > 0.5}
        if rule is not None:
            row["regex_pass"] = bool(rule.search(s["completion"]))
        rows.append(row)
    steps = agreement_by_step(rows)
    judged = [r for r in rows if r["other_pass"] is not None]
    spec = next((r for r in run.get("rewards") or [] if r.get("kind") == "judge" and r.get("name") == source), {})
    summary = {"run": str(run_dir), "training_source": source,
               "training_judge": (spec.get("judge") or run["judge"])["model"],
               "other_judge": other.judge.model,
               "other_recipe": other.source, "samples": len(rows), "per_step": per_step,
               "other_failures": len(rows) - len(judged),
               "agreement": mean([r["train_pass"] == r["other_pass"] for r in judged]),
               "regex": truth, "before_after": before_after(steps), "folder": str(out)}
    write_jsonl(out / "rescore.jsonl", rows)
    (out / "rescore.json").write_text(json.dumps({"summary": summary, "steps": steps}, indent=2) + "\n")
    return {"summary": summary, "steps": steps}
