"""Nova's reward-Lambda response for one sample: `{id, aggregate_reward_score, metrics_list}`, where
`metrics_list` holds a `Reward` entry per judged criterion and `Metric` entries for what is only logged
(`judge_failed`, one `check_<name>` per deterministic check, `empty_response`); for a reward of several sources,
a `Reward` entry per source and `reward_failed`."""
from __future__ import annotations


def lambda_result(sample_id, score: float, metrics: list) -> dict:
    return {"id": sample_id, "aggregate_reward_score": round(float(score), 6), "metrics_list": metrics}


def reward_metrics(scores: dict, failed: bool, check_scores: dict) -> list[dict]:
    """A Reward per criterion that was judged (none after a failure, nor when a gate decided alone: pass no
    scores then), `judge_failed`, and a Metric per deterministic check."""
    out = [{"name": n, "value": round(v, 6), "type": "Reward"} for n, v in scores.items()
           if not failed and v is not None]
    out.append({"name": "judge_failed", "value": float(failed), "type": "Metric"})
    out += [{"name": f"check_{k}", "value": v, "type": "Metric"} for k, v in check_scores.items()]
    return out


def empty_result(sample_id, criteria: list[str]) -> dict:
    """An empty completion scores 0 without the judge, as the Nova guidance's edge-case rule says."""
    return lambda_result(sample_id, 0.0, [{"name": c, "value": 0.0, "type": "Reward"} for c in criteria]
                         + [{"name": "empty_response", "value": 1.0, "type": "Metric"}])


def composed_result(sample_id, score: float | None, parts: list, failed: bool) -> dict:
    """The answer for a reward of several sources (a recipe's `rewards:`): a Reward per source that scored the
    sample, by the source's name (`parts`: (name, reward or None) pairs), and `reward_failed`, 1 when a source could
    not score it. Such a sample has no reward: `rlaif reward score` writes null, the exported Lambda, which must
    answer a number, its neutral reward."""
    metrics = [{"name": n, "value": round(v, 6), "type": "Reward"} for n, v in parts if v is not None]
    metrics.append({"name": "reward_failed", "value": float(failed), "type": "Metric"})
    return {"id": sample_id, "aggregate_reward_score": None if score is None else round(float(score), 6),
            "metrics_list": metrics}
