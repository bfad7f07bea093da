"""The contract every reward source keeps, and the one conversion of a TRL batch into samples.

A source scores `Sample`s (the prompt, the completion, the record's metadata with its `reference_answer`) and
answers one reward per sample (None: left out of its group, TRL's convention for a failed judgment), the metrics
of the batch, and extra columns for TRL's completions table. It counts its failures in a `FailureWindow`, whose
`stop_reason` stops training at the end of the step. It never raises for a bad reply; when a whole batch cannot
be scored (a bug), `fail_batch` counts that and gives the fallback. A failed sample's fallback may be a number (a
Lambda's neutral 0.5, Bedrock's contract); `Scored.failed` says which samples failed all the same.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol

from rlaif.common import fastjson
from rlaif.common.failure_window import FailureWindow
from rlaif.data.samples import Sample
from rlaif.portable.composed import record_columns


@dataclass
class Scored:
    rewards: list[float | None]
    # logged through TRL's log_metric, which averages each key over the batches and processes that logged it: a
    # number the batch does not have (a rate over no samples) is left out, never written as 0
    metrics: dict[str, float] = field(default_factory=dict)
    columns: dict[str, list] = field(default_factory=dict)  # extra columns of the completions table (log_extra)
    # the samples the source could not score, whatever its fallback put in `rewards` (a neutral 0.5 is still a
    # failure: a combined reward leaves such a sample out); None: exactly those whose reward is None
    failed: list[bool] | None = None

    def scored(self) -> list[float | None]:
        """The rewards with every failed sample as None: what the source itself scored."""
        if self.failed is None:
            return list(self.rewards)
        return [None if f else r for r, f in zip(self.rewards, self.failed)]


class RewardSource(Protocol):
    name: str  # TRL logs the source's mean reward as rewards/<name>/mean
    failures: FailureWindow

    async def score(self, samples: list[Sample], step: int | None = None, state=None) -> Scored:
        """`step`: the training step, for the judgment log; `state`: TRL's TrainerState when the trainer calls (a
        Python function gets it as `trainer_state`)."""

    def fail_batch(self, n: int) -> list[float | None]: ...

    def summary(self) -> dict:
        """Totals for train_summary.json; at least calls, samples, fallbacks, failed (every failed call or
        sample, whatever the cause) and latency_p50_s."""

    def close(self) -> None: ...

    async def aclose(self) -> None:
        """Close this event loop's connections (before an `asyncio.run` loop ends)."""


def failed_count(summary: dict) -> int:
    """Failed calls in a reward source's summary (or an audit's `judge_calls`); summaries written before `failed`
    existed count a judge's failures and parse failures."""
    if "failed" in summary:
        return summary["failed"]
    return summary.get("failures", 0) + summary.get("parse_failures", 0)


def _reference(raw):
    """The reference answer as the record had it: rlaif's datasets keep it as JSON text in `nova_reference`."""
    if raw is None:
        return None
    try:
        return fastjson.loads(raw)  # per sample of every batch: orjson (rlaif/common/fastjson.py)
    except (TypeError, json.JSONDecodeError):
        return raw


def record_metadata(row: dict) -> dict:
    """A dataset row's metadata as a sample carries it: the record's extra keys (kept as JSON text in `metadata`)
    with `reference_answer` as the record had it (string or object), which is what a Bedrock reward Lambda gets."""
    meta = row.get("metadata")
    meta = fastjson.loads(meta) if isinstance(meta, str) else dict(meta or {})
    ref = _reference(row["nova_reference"]) if row.get("nova_reference") is not None else row.get("reference_answer")
    if ref is not None:
        meta["reference_answer"] = ref
    return meta


def row_columns(row: dict) -> dict:
    """A dataset row as the columns TRL passes a reward function: every column but the prompt (which comes as
    `prompts`)."""
    return {k: v for k, v in row.items() if k != "prompt"}


def batch_samples(prompts: list, completions: list, columns: dict,
                  completion_ids: list | None = None) -> list[Sample]:
    """TRL's batch (prompts, completions and the dataset's columns as lists) as samples.

    A sample's id is the record's id and its place in the batch (`train-0001#5`: the group's completions share
    the record); its metadata comes from `record_metadata`; its columns are the batch's, for reward functions
    that take TRL's signature.
    """
    n = len(prompts)
    rows = [{k: v[i] for k, v in columns.items() if isinstance(v, list) and len(v) == n} for i in range(n)]
    return [Sample(id=f"{row['id'] if row.get('id') is not None else 'sample'}#{i}",
                   prompt=[dict(m) for m in p] if isinstance(p, list) else [{"role": "user", "content": str(p)}],
                   # a parsed reasoning completion cut off before its answer has no content: an empty answer
                   response=(c[-1].get("content") or "") if isinstance(c, list) else str(c),
                   metadata=record_metadata(row), columns=row,
                   completion_ids=list(completion_ids[i]) if completion_ids is not None else None)
            for i, (p, c, row) in enumerate(zip(prompts, completions, rows))]


def batch_columns(samples: list[Sample]) -> dict[str, list]:
    """The dataset's columns for a batch, as TRL passes them to a reward function (those the samples came with,
    else their record id and reference answer), and each key of the records' metadata as a column of its own,
    so that a function can take `topic=` for a record's `topic` key."""
    keys = list(dict.fromkeys(k for s in samples for k in s.columns))
    if not keys:  # samples of a reward-Lambda event: the rule the exported Lambda calls a function with
        return record_columns([s.id for s in samples], [s.reference for s in samples], [s.metadata for s in samples])
    cols = {k: [s.columns.get(k) for s in samples] for k in keys}
    meta_keys = dict.fromkeys(k for s in samples for k in s.metadata if k != "reference_answer" and k not in cols)
    return cols | {k: [s.metadata.get(k) for s in samples] for k in meta_keys}


def source_metrics(name: str, rewards: list[float | None]) -> dict[str, float]:
    """Every source's own numbers for a batch: mean reward and the share above 0.5, both over the samples it
    scored (as `rlaif eval` counts them), and the share it could not score (None). A batch with nothing scored
    has no mean and no pass rate, and logs none: a 0 would read as a policy that never passes (TRL averages each
    key over the batches and processes that logged it)."""
    scored = [r for r in rewards if r is not None]
    out = {f"reward/{name}/mean": sum(scored) / len(scored),
           f"reward/{name}/pass_rate": sum(r > 0.5 for r in scored) / len(scored)} if scored else {}
    return out | {f"reward/{name}/fail_rate": (len(rewards) - len(scored)) / max(1, len(rewards))}
