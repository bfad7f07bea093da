"""The contract every reward source keeps, and the one conversion of a TRL batch into samples.

A source scores `Sample`s (the prompt, the completion, the record's metadata with its `reference_answer`) and
answers one reward per sample (None: left out of its group, TRL's convention for a failed judgment), the metrics
of the batch, and extra columns for TRL's completions table. It counts its failures in a `FailureWindow`, whose
`stop_reason` stops training at the end of the step. It never raises for a bad reply; when a whole batch cannot
be scored (a bug), `fail_batch` counts that and gives the fallback.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol

from rlaif.common.failure_window import FailureWindow
from rlaif.data.samples import Sample


@dataclass
class Scored:
    rewards: list[float | None]
    # logged through TRL's log_metric: the same keys every batch, as TRL averages them across processes
    metrics: dict[str, float] = field(default_factory=dict)
    columns: dict[str, list] = field(default_factory=dict)  # extra columns of the completions table (log_extra)


class RewardSource(Protocol):
    name: str  # TRL logs the source's mean reward as rewards/<name>/mean
    failures: FailureWindow

    async def score(self, samples: list[Sample], step: int | None = None) -> Scored: ...

    def fail_batch(self, n: int) -> list[float | None]: ...

    def summary(self) -> dict:
        """Totals for train_summary.json; at least calls, samples, fallbacks, failed (every failed call or
        sample, whatever the cause) and latency_p50_s."""

    def close(self) -> None: ...


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
        return json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        return raw


def batch_samples(prompts: list, completions: list, columns: dict) -> list[Sample]:
    """TRL's batch (prompts, completions and the dataset's columns as lists) as samples.

    A sample's id is the record's id and its place in the batch (`train-0001#5`: the group's completions share
    the record). Its metadata is the record's extra keys with `reference_answer` as the record had it (string or
    object), which is what a Bedrock reward Lambda receives.
    """
    n = len(prompts)
    ids = columns.get("id") or [None] * n
    metas = columns.get("metadata") or [None] * n
    nova_refs = columns.get("nova_reference")
    refs = [_reference(r) for r in nova_refs] if nova_refs else (columns.get("reference_answer") or [None] * n)
    out = []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        meta = json.loads(metas[i]) if isinstance(metas[i], str) else dict(metas[i] or {})
        if refs[i] is not None:
            meta["reference_answer"] = refs[i]
        out.append(Sample(id=f"{ids[i] if ids[i] is not None else 'sample'}#{i}",
                          prompt=[dict(m) for m in p] if isinstance(p, list) else [{"role": "user", "content": str(p)}],
                          response=c[-1]["content"] if isinstance(c, list) else str(c),
                          metadata=meta))
    return out
