"""`rlaif nova parity RECIPE --samples FILE`: does the reward Lambda Bedrock will call agree with rlaif's own reward?

Both sides score the same samples with the same judge. The Lambda is the one `rlaif nova export-lambda` writes for
the recipe, run unchanged: its boto3 calls go through the local Converse gateway to the recipe's judge. rlaif's
reward is the recipe as given: `rlaif reward score` (every `rewards:` source, combined as in training) for a
recipe that lists its rewards, `rlaif judge score` for one whose reward is its judge alone. Verdict mode on both
sides gives identical rewards (the Lambda carries rlaif's reward code whole); a logprob recipe is compared with
the verdict-mode Lambda, and the agreement says how far the local reward is from the one Bedrock computes.

Agreement, over the samples both sides scored (a failure on either side, a judge's or any source's, is counted
apart, not compared): mean and largest absolute difference of `aggregate_reward_score`, the share of identical
rewards, Spearman's rank correlation, and per criterion (per source, for a recipe's rewards) the verdicts that flip
(a pass, score above 0.5 as rlaif's pass rates count it, on one side only). A sample one side did not answer is
listed as missing on that side, and fails the command.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlaif.common.jsonl import write_jsonl
from rlaif.common.stats import spearman
from rlaif.config.recipe import Recipe
from rlaif.config.rewards import JudgeSourceSpec
from rlaif.config.rubric import load_rubric
from rlaif.data.nova import parse_lambda_sample
from rlaif.data.reader import read_jsonl_with
from rlaif.errors import UserError
from rlaif.eval.reward_file import reward_file
from rlaif.eval.score_file import score_file
from rlaif.nova.export import export_lambda
from rlaif.nova.gateway import Gateway, boto3_env, build_app
from rlaif.rewards.lambda_source import load_handler

LAMBDA_BATCH = 64  # SageMaker sends the reward Lambda 64 samples a call
SAME = 1e-6  # both sides round rewards to 6 places
# credentials of the user's own that would send boto3 past the gateway, or sign for the real service
AWS_KEYS_SET_ASIDE = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK")


@dataclass
class Side:
    reward: float | None  # None: rlaif's answer for a sample a source could not score (it has no reward)
    failed: bool
    criteria: dict[str, float]  # the criteria the judge scored, or the sources that scored (none when failed)


FAILED = ("judge_failed", "reward_failed")  # the judge's answer; a recipe's rewards: (rlaif/portable/lambda_response)


def side_of(result: dict) -> Side:
    metrics = result.get("metrics_list") or []
    reward = result["aggregate_reward_score"]
    return Side(None if reward is None else float(reward),
                reward is None or any(m["name"] in FAILED and m["value"] == 1.0 for m in metrics),
                {m["name"]: float(m["value"]) for m in metrics if m.get("type") == "Reward"})


def passes(score: float) -> bool:
    """A criterion's pass, as every pass rate in rlaif counts it: a score above 0.5."""
    return score > 0.5


def agreement(lambda_out: dict[str, dict], rlaif_out: dict[str, dict], criteria: list[str]) -> tuple[dict, list]:
    """(the summary, one row per sample both sides answered) of the two sides' answers, keyed by sample id.

    Samples only one side answered are listed (`missing_in_lambda`, `missing_in_rlaif`); the reward measures (mean
    and largest difference, identical, Spearman) are over the samples both sides scored without a judge failure
    (`compared`): a failure's neutral 0.5 on both sides is no agreement."""
    ids = [i for i in rlaif_out if i in lambda_out]
    lam = {i: side_of(lambda_out[i]) for i in ids}
    ours = {i: side_of(rlaif_out[i]) for i in ids}
    both = [i for i in ids if not lam[i].failed and not ours[i].failed]
    diffs = np.array([abs(lam[i].reward - ours[i].reward) for i in both]) if both else np.zeros(0)
    flips = {c: {"judged_by_both": 0, "pass_in_lambda_only": 0, "pass_in_rlaif_only": 0} for c in criteria}
    rows = []
    for i in ids:
        flipped = []
        for c in criteria:
            a, b = lam[i].criteria.get(c), ours[i].criteria.get(c)
            if a is None or b is None:
                continue
            flips[c]["judged_by_both"] += 1
            if passes(a) != passes(b):
                flips[c]["pass_in_lambda_only" if passes(a) else "pass_in_rlaif_only"] += 1
                flipped.append(c)
        rewards = (lam[i].reward, ours[i].reward)
        rows.append({"id": i, "lambda_reward": rewards[0], "rlaif_reward": rewards[1],
                     "abs_diff": None if None in rewards else round(abs(rewards[0] - rewards[1]), 6),
                     "compared": i in both,
                     "lambda_judge_failed": lam[i].failed, "rlaif_judge_failed": ours[i].failed, "flipped": flipped})
    summary = {
        "samples": len(ids),
        "compared": len(both),
        "missing_in_lambda": [i for i in rlaif_out if i not in lambda_out],
        "missing_in_rlaif": [i for i in lambda_out if i not in rlaif_out],
        "mean_abs_diff": round(float(diffs.mean()), 6) if both else None,
        "max_abs_diff": round(float(diffs.max()), 6) if both else None,
        "identical": int((diffs < SAME).sum()),
        "spearman": spearman([lam[i].reward for i in both], [ours[i].reward for i in both]),
        "judge_failed": {"lambda": sum(s.failed for s in lam.values()), "rlaif": sum(s.failed for s in ours.values())},
        "flips": flips,
    }
    return summary, rows


@contextlib.contextmanager
def boto3_pointed_at(url: str, model_id: str):
    """The process environment as the Lambda runtime would give it, with Bedrock at `url`; restored after."""
    changes = boto3_env(url) | {"JUDGE_MODEL_ID": model_id}
    saved = {k: os.environ.get(k) for k in (*changes, *AWS_KEYS_SET_ASIDE)}
    try:
        for k in AWS_KEYS_SET_ASIDE:
            os.environ.pop(k, None)
        os.environ.update(changes)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def needs_judge(recipe: Recipe) -> bool:
    """Whether the recipe's reward asks a judge (a recipe of rules and functions is compared without one)."""
    return any(isinstance(s, JudgeSourceSpec) for s in recipe.reward_sources())


def run_lambda(recipe: Recipe, judge_url: str | None, samples: list[dict],
               out_dir: Path) -> tuple[list[dict], list[str]]:
    """The recipe's exported Lambda on `samples`, through a Converse gateway backed by the judge at `judge_url`
    (None: the reward asks no judge)."""
    path, notes = export_lambda(recipe, out_dir / "lambda")
    handler = load_handler(path)
    with contextlib.ExitStack() as stack:
        if judge_url is not None:
            gateway = Gateway(build_app(judge_url, recipe.judge.name, judge_api_key=recipe.judge.api_key,
                                        timeout_s=recipe.judge.timeout_s)).start()
            stack.callback(gateway.stop)
            stack.enter_context(boto3_pointed_at(gateway.url, f"rlaif-parity/{recipe.judge.name}"))
        out = []
        for k in range(0, len(samples), LAMBDA_BATCH):  # in the batches Bedrock's trainer sends
            out += handler(samples[k:k + LAMBDA_BATCH], None)
    return out, notes


def raw_samples(path: Path, lines: list[int]) -> list[dict]:
    """The samples on `lines` (1-based) of a JSONL file, as the file has them: the Lambda gets them unchanged."""
    text = path.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")
    return [json.loads(text[n - 1]) for n in lines]


def parity(recipe: Recipe, judge_url: str | None, samples_path: str | Path, out_dir: str | Path) -> dict:
    """Score `samples_path` (reward-Lambda event samples, JSONL) with the exported Lambda and with rlaif; write
    lambda.jsonl, rlaif.jsonl, parity.jsonl (a row per sample) and parity.json (the summary) into `out_dir`.
    `judge_url`: the recipe's judge, None when its reward asks none."""
    if judge_url is not None and recipe.judge.backend == "transformers":
        raise UserError(f"{recipe.source}: judge.backend: transformers: the Lambda reaches its judge over HTTP; "
                        "parity needs a served judge (judge.backend: vllm)")
    samples_path, out = Path(samples_path), Path(out_dir)
    res = read_jsonl_with(samples_path, parse_lambda_sample)
    if not res.records:
        raise UserError(f"{samples_path}: no valid reward-Lambda sample ({res.lines} line(s) read, "
                        f"{len(res.problems)} problem(s); the first: {res.problems[0] if res.problems else 'none'})")
    if len({r["id"] for r in res.records}) < len(res.records):
        raise UserError(f"{samples_path}: sample ids repeat: parity pairs the two sides' answers by id")
    out.mkdir(parents=True, exist_ok=True)
    lambda_out, notes = run_lambda(recipe, judge_url, raw_samples(samples_path, [r["_line"] for r in res.records]), out)
    write_jsonl(out / "lambda.jsonl", lambda_out)
    if recipe.rewards is not None:  # the whole reward, as the Lambda computes it: a Reward per source
        scored = reward_file(recipe, samples_path, out / "rlaif.jsonl", base_url=judge_url)
        criteria = [s.name for s in recipe.reward_sources()]
    else:  # the judge alone: a Reward per criterion
        scored = score_file(recipe, judge_url, str(samples_path), str(out / "rlaif.jsonl"))
        criteria = [c.name for c in load_rubric(recipe.rubric, where=f"{recipe.source}: rubric").criteria]
    rlaif_out = {d["id"]: d for d in map(json.loads, (out / "rlaif.jsonl").read_text(encoding="utf-8").splitlines())}
    summary, rows = agreement({str(d["id"]): d for d in lambda_out}, rlaif_out, criteria)
    if not summary["samples"]:  # each side answers every valid sample: none in common is our bug, said plainly
        raise UserError(f"{samples_path}: the Lambda and rlaif answered no sample in common "
                        f"({len(lambda_out)} and {len(rlaif_out)} answers)")
    summary |= {"recipe": recipe.name, "samples_file": str(samples_path),
                "judge": recipe.judge.name if judge_url is not None else None,
                "rlaif_mode": recipe.judge.mode if judge_url is not None else "no judge",
                "lambda_mode": "verdict" if judge_url is not None else "no judge",
                "rewards": "rewards:" if recipe.rewards is not None else "judge", "refused_lines": scored["refused"],
                "notes": notes}
    write_jsonl(out / "parity.jsonl", rows)
    (out / "parity.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary

