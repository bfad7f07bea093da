"""`rlaif reward score`: the recipe's whole reward on a file of Nova reward-Lambda samples.

The reward as training computes it: every source of the recipe's `rewards:` (judges, verifiable rules, Python
functions, reward Lambdas; without `rewards:`, the judge or the `reward.lambda_file` alone), built by
rlaif/factory.py and combined as in training, on the samples `rlaif judge score` reads (one event sample a line:
`id`, `messages` ending with the completion, `metadata` and/or `reference_answer`). One line per valid sample,
shaped as the exported Lambda answers a recipe of several sources (rlaif/portable/lambda_response.py:
`composed_result`): `{"id", "aggregate_reward_score", "metrics_list", "rationale"}`, with a `Reward` entry per
source that scored the sample, by its name, and `reward_failed`.

A sample that a source could not score (a judge failure, a Lambda that did not answer it or was cut at its
timeout, a function that raised) has no reward, whatever that source's fallback: `aggregate_reward_score` is null,
`failed` true, and `rationale` says which source failed and why; training leaves such a sample out of its group.
A line that is not a valid sample, or repeats an id, is named with its file and line and the rest are scored.
Only a source that needs a judge starts or reaches one: rules and functions score without any server. The judge's
live canaries stay off (they watch a training run and never change a reward).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from rlaif.common.jsonl import write_jsonl
from rlaif.config.recipe import Recipe
from rlaif.data.dataset import own_criteria_rule
from rlaif.data.nova import parse_lambda_sample
from rlaif.data.reader import Problem, read_jsonl_with
from rlaif.data.samples import Sample
from rlaif.factory import Endpoints, compose, make_sources
from rlaif.judge.judgment_log import JudgmentLog
from rlaif.portable.lambda_response import composed_result
from rlaif.rewards.combined import CombinedSource
from rlaif.rewards.judge_source import JudgeSource
from rlaif.rewards.source import RewardSource, Scored

log = logging.getLogger("rlaif.rewards")


class ErrorsKept(JudgmentLog):
    """The judgment log, keeping too the first error each source logged for each sample: why a sample failed."""

    def __init__(self, path: Path | None):
        super().__init__(path)
        self.errors: dict[tuple[str, str], str] = {}

    def write(self, rows: list[dict]) -> None:
        for r in rows:
            if r.get("error") and r.get("source"):
                self.errors.setdefault((r["source"], str(r["sample_id"])), str(r["error"]).splitlines()[0][:300])
        super().write(rows)


def read_samples(recipe: Recipe, input_path: str | Path) -> tuple[list[Sample], list[Problem], int]:
    """(the file's valid samples, in order; the problems of the others, by file and line; lines read). A sample
    repeating an id is refused (a response is keyed by id), and so is one whose own criteria the recipe's judges
    cannot judge (rlaif/data/dataset.py: as training refuses the record)."""
    res = read_jsonl_with(input_path, parse_lambda_sample)
    problems, seen, samples = list(res.problems), {}, []
    own_criteria_problem = own_criteria_rule(recipe)
    for r in res.records:
        line = r["_line"]
        if r["id"] in seen:
            problems.append(Problem(str(input_path), line, "id", f"{r['id']!r} is the id of line {seen[r['id']]} too: "
                                                                 "a response is keyed by id"))
            continue
        if (p := own_criteria_problem(r["metadata"])) is not None:
            problems.append(Problem(str(input_path), line, f"metadata.{p[0]}", p[1]))
            continue
        seen[r["id"]] = line
        ref = r["reference_answer"]  # under metadata or at the top level, as the event gave it
        samples.append(Sample(r["id"], r["prompt"], r["response"],
                              r["metadata"] | ({"reference_answer": ref} if ref is not None else {})))
    return samples, sorted(problems, key=lambda p: p.line), res.lines


async def score_all(reward: RewardSource, samples: list[Sample]) -> Scored:
    """The reward on every sample, as TRL's adapter calls it (rlaif/rewards/trl_adapter.py): a source that fails as
    a whole (a bug) fails the batch, counted, never raised."""
    try:
        return await reward.score(samples)
    except Exception as e:
        log.exception("reward %s failed for a whole batch: %s", reward.name, e)
        return Scored(reward.fail_batch(len(samples)), failed=[True] * len(samples))
    finally:
        await reward.aclose()


def per_source(reward: RewardSource, sources: list[RewardSource], scored: Scored) -> dict[str, list]:
    """Each source's own rewards (None where it could not score a sample, whatever its fallback)."""
    if isinstance(reward, CombinedSource):
        return {s.name: scored.columns[s.name] for s in sources}
    return {sources[0].name: scored.scored()}


def why_column(source: RewardSource) -> str:
    """The completions-table column in which a source says why, where it does: a rule's reason, a judge's
    rationale (verdict mode; the run's first judge logs it as `judge_rationale`)."""
    if isinstance(source, JudgeSource):
        return "judge_rationale" if source.primary else f"{source.name}_rationale"
    return f"{source.name}_why"


def rationale(i: int, sources: list[RewardSource], values: dict[str, list], columns: dict) -> str:
    """A scored sample's reasons: each source's reward, with its own words where it has them."""
    parts = []
    for s in sources:
        why = columns.get(why_column(s), [""] * (i + 1))[i]
        parts.append(f"{s.name} {values[s.name][i]:.3f}" + (f" ({why})" if why else ""))
    return "; ".join(parts)


def reward_file(recipe: Recipe, input_path: str | Path, output_path: str | Path, base_url: str | None = None) -> dict:
    """Score the file with the recipe's whole reward and write the responses; the counts, the failures per source
    (with the first reason each gave), the stop training would make, and the input's problems. `base_url`: the
    recipe's judge, when the caller has it running already."""
    samples, problems, lines = read_samples(recipe, input_path)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        judgments = ErrorsKept(recipe.run_dir / "reward_score.jsonl")
        stack.callback(judgments.close)
        # no self-test (a judge that cannot answer shows as counted failures), no canaries; a judge is started or
        # reached only when a source asks the Endpoints for it
        sources = make_sources(recipe, Endpoints(recipe, recipe.run_dir, base_url, stack), judgments,
                               self_test=False, canaries=False)
        reward = compose(recipe, sources)
        try:
            scored = asyncio.run(score_all(reward, samples)) if samples else Scored([])
        finally:
            reward.close()
        stop = reward.failures.stop_reason
    names = [s.name for s in sources]
    values = per_source(reward, sources, scored) if samples else {n: [] for n in names}
    out, failures = [], {n: {"samples": 0, "first": None} for n in names}
    for i, s in enumerate(samples):
        why = {n: judgments.errors.get((n, str(s.id))) for n in names}
        # a source failed on the sample: it has no reward of its own, or it logged an error for it (a judge whose
        # fallback is a number still logs why it fell back)
        failed_by = [n for n in names if values[n][i] is None or why[n] is not None]
        parts = [(n, None if n in failed_by else values[n][i]) for n in names]
        if failed_by or scored.rewards[i] is None:
            failed_by = failed_by or names
            for n in failed_by:
                failures[n]["samples"] += 1
                failures[n]["first"] = failures[n]["first"] or why[n] or "no reward"
            reasons = "; ".join(f"{n}: {why[n] or 'no reward'}" for n in failed_by)
            out.append(composed_result(s.id, None, parts, True) | {"failed": True, "rationale": f"failed: {reasons}"})
        else:
            out.append(composed_result(s.id, scored.rewards[i], parts, False)
                       | {"rationale": rationale(i, sources, values, scored.columns)})
    write_jsonl(output_path, out)
    return {"input_lines": lines, "written": len(out), "refused": len({p.line for p in problems}),
            "failed": sum(r.get("failed", False) for r in out), "failures": failures, "stop_reason": stop,
            "sources": names, "problems": problems}
