"""`rlaif judge score`: Nova reward-Lambda event samples in, Nova reward-Lambda responses out.

The same rubric, prompt and judge as training, on a file: one output line per valid input id,
`{"id", "aggregate_reward_score", "metrics_list", "rationale"}`, shaped by rlaif/portable/lambda_response.py as
the exported Lambda shapes its answers. A judgment that fails after retries gets the recipe's neutral reward (a
Lambda must answer with a number; Nova's convention is 0.5) and `judge_failed = 1`. An empty completion is
scored 0 without asking the judge, as the Nova guidance's edge-case rule says.
"""
from __future__ import annotations

import sys

from rlaif.common.jsonl import write_jsonl
from rlaif.config.recipe import Recipe
from rlaif.data.nova import parse_lambda_sample
from rlaif.data.reader import read_jsonl_with
from rlaif.data.samples import Sample
from rlaif.factory import make_judge
from rlaif.judge.scorer import Verdict
from rlaif.portable.lambda_response import empty_result, lambda_result, reward_metrics


def lambda_response(sample_id: str, verdict: Verdict, criteria: list[str], neutral: float) -> dict:
    """The Lambda response for one judged sample, with the judge's reasons as `rationale`."""
    if verdict.gated:  # a gate check decided alone: no criterion was judged
        failing = [k for k, v in verdict.checks.items() if v == 0.0]
        return lambda_result(sample_id, 0.0, reward_metrics({}, False, verdict.checks)) | {
            "rationale": f"failed deterministic check(s) {', '.join(failing)}: scored 0 without the judge"}
    if verdict.failed:
        why = "; ".join(f"{k}: {v}" for k, v in verdict.errors.items())
        return lambda_result(sample_id, neutral, reward_metrics({}, True, verdict.checks)) | {
            "rationale": f"judge failed ({why or 'no verdict'}); neutral reward {neutral}"}
    scores = {c: verdict.scores.get(c) for c in criteria}
    rationale = verdict.rationale or "; ".join(f"{c}: {verdict.scores[c]:.3f}" for c in criteria)
    return lambda_result(sample_id, verdict.reward, reward_metrics(scores, False, verdict.checks)) | {
        "rationale": rationale}


def score_file(recipe: Recipe, base_url: str, input_path: str, output_path: str) -> dict:
    res = read_jsonl_with(input_path, parse_lambda_sample)
    for p in res.problems:
        print(f"error: {p}", file=sys.stderr)
    judge = make_judge(recipe, base_url, judgment_log=recipe.run_dir / "judge_score.jsonl")
    criteria = [c.name for c in judge.rubric.criteria]
    to_judge = [r for r in res.records if r["response"].strip()]
    # the reference answer as the Lambda event gives it (under metadata, or at the top level)
    verdicts = judge.score_sync([Sample(r["id"], r["prompt"], r["response"],
                                        r["metadata"] | {"reference_answer": r["reference_answer"]})
                                 for r in to_judge])
    judge.close()
    by_line = {r["_line"]: v for r, v in zip(to_judge, verdicts)}
    empty = "empty response: scored 0 without asking the judge"
    write_jsonl(output_path, [lambda_response(r["id"], by_line[r["_line"]], criteria, recipe.judge.neutral_reward)
                              if r["_line"] in by_line else empty_result(r["id"], criteria) | {"rationale": empty}
                              for r in res.records])
    summary = judge.summary()
    return {"input_lines": res.lines, "written": len(res.records), "refused": len({p.line for p in res.problems}),
            "empty": len(res.records) - len(to_judge), "judge_failures": summary["failed"],
            "problems": res.problems}
