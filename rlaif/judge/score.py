"""`rlaif judge score`: Nova reward-Lambda event samples in, Nova reward-Lambda responses out.

The same rubric, prompt and judge as training, on a file: one output line per valid input id,
`{"id", "aggregate_reward_score", "metrics_list", "rationale"}`, with one `Reward` metric per criterion and
`Metric` entries for what is only logged. A judgment that fails after retries gets the recipe's neutral reward
(a Lambda must answer with a number; Nova's convention is 0.5) and `judge_failed = 1`. An empty completion is
scored 0 without asking the judge, as the Nova guidance's edge-case rule says.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rlaif.data import parse_lambda_sample, read_jsonl_with
from rlaif.judge.reward import Sample


def lambda_response(sample_id: str, verdict, criteria: list[str], neutral: float) -> dict:
    failed = verdict is None or verdict.failed
    score = neutral if failed else verdict.reward
    # a criterion is reported when it was judged: not after a failure, nor when a gate decided alone
    metrics = [{"name": c, "value": round(verdict.scores[c], 6), "type": "Reward"} for c in criteria
               if not failed and verdict.scores.get(c) is not None]
    metrics.append({"name": "judge_failed", "value": float(failed), "type": "Metric"})
    if verdict is not None:
        metrics += [{"name": f"check_{k}", "value": v, "type": "Metric"} for k, v in verdict.checks.items()]
    if verdict is not None and verdict.gated:
        failing = [k for k, v in verdict.checks.items() if v == 0.0]
        return {"id": sample_id, "aggregate_reward_score": 0.0, "metrics_list": metrics,
                "rationale": f"failed deterministic check(s) {', '.join(failing)}: scored 0 without the judge"}
    if failed:
        why = "; ".join(f"{k}: {v}" for k, v in (verdict.errors.items() if verdict else []))
        rationale = f"judge failed ({why or 'no verdict'}); neutral reward {neutral}"
    else:
        rationale = verdict.rationale or "; ".join(f"{c}: {verdict.scores[c]:.3f}" for c in criteria)
    return {"id": sample_id, "aggregate_reward_score": round(float(score), 6), "metrics_list": metrics,
            "rationale": rationale}


def empty_response(sample_id: str, criteria: list[str]) -> dict:
    return {"id": sample_id, "aggregate_reward_score": 0.0,
            "metrics_list": [{"name": c, "value": 0.0, "type": "Reward"} for c in criteria]
            + [{"name": "empty_response", "value": 1.0, "type": "Metric"}],
            "rationale": "empty response: scored 0 without asking the judge"}


def score_file(recipe, base_url: str, input_path: str, output_path: str) -> dict:
    from rlaif.train import make_judge_reward

    res = read_jsonl_with(input_path, parse_lambda_sample)
    for p in res.problems:
        print(f"error: {p}", file=sys.stderr)
    judge = make_judge_reward(recipe, base_url, judgment_log=recipe.run_dir / "judge_score.jsonl")
    criteria = [c.name for c in judge.rubric.criteria]
    to_judge = [r for r in res.records if r["response"].strip()]
    # the reference answer as the Lambda event gives it (under metadata, or at the top level)
    verdicts = judge.score_sync([Sample(r["id"], r["prompt"], r["response"],
                                        r["metadata"] | {"reference_answer": r["reference_answer"]})
                                 for r in to_judge])
    by_line = {r["_line"]: v for r, v in zip(to_judge, verdicts)}
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for r in res.records:
            line = (lambda_response(r["id"], by_line[r["_line"]], criteria, recipe.judge.neutral_reward)
                    if r["_line"] in by_line else empty_response(r["id"], criteria))
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    summary = judge.summary()
    return {"input_lines": res.lines, "written": len(res.records), "refused": len({p.line for p in res.problems}),
            "empty": len(res.records) - len(to_judge), "judge_failures": summary["failures"] + summary["parse_failures"],
            "problems": res.problems}
