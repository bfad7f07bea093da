"""A verifiable reward as a source: each completion checked by a rule against its record's known answer
(rlaif/portable/verifiable.py). No calls, so no failures: a sample without its answer scores 0 and says so (a
recipe whose data lacks the field is refused before training starts)."""
from __future__ import annotations

import time
from pathlib import Path

from rlaif.common.failure_window import FailureWindow
from rlaif.config.rewards import VerifiableSourceSpec
from rlaif.data.samples import Sample
from rlaif.judge.judgment_log import JudgmentLog, SourceLog, as_log
from rlaif.portable.verifiable import verify
from rlaif.rewards.source import Scored


def answer_of(sample: Sample, field: str):
    """The sample's known answer: its reference answer, or another field of its record."""
    return sample.reference if field == "reference_answer" else sample.metadata.get(field)


class VerifiableSource:
    def __init__(self, spec: VerifiableSourceSpec, judgment_log: Path | JudgmentLog | SourceLog | None = None):
        self.spec, self.name = spec, spec.name
        self.judgments = as_log(judgment_log)
        self.failures = FailureWindow(1.0, lambda rate, n: "")  # a rule does not fail; the window stays quiet
        self.totals = {"calls": 0, "samples": 0, "passed": 0, "no_answer": 0, "failed": 0}

    def check(self, sample: Sample) -> tuple[float, str]:
        s = self.spec
        return verify(s.check, sample.response, answer_of(sample, s.field), tolerance=s.tolerance,
                      pattern=s.pattern, json_key=s.json_key)

    async def score(self, samples: list[Sample], step: int | None = None, state=None) -> Scored:
        now = round(time.time(), 3)
        results = [self.check(s) for s in samples]
        self.totals["samples"] += len(samples)
        self.totals["passed"] += sum(r == 1.0 for r, _ in results)
        self.totals["no_answer"] += sum(answer_of(s, self.spec.field) is None for s in samples)
        criterion = f"verifiable:{self.spec.check}"
        self.judgments.write([{"time": now, "step": step, "sample_id": s.id, "criterion": criterion, "score": r,
                               "rationale": why, "error": None, "reward": r, "completion": s.response[:2000]}
                              for s, (r, why) in zip(samples, results)])
        return Scored([r for r, _ in results], {}, {f"{self.name}_why": [why for _, why in results]})

    def fail_batch(self, n: int) -> list[float | None]:
        """A batch the rule could not check (a bug): counted, and left out of training rather than scored 0."""
        self.totals["failed"] += n
        return [None] * n

    def summary(self) -> dict:
        return dict(self.totals, fallbacks=self.totals["failed"], latency_p50_s=0.0)

    def close(self) -> None:
        self.judgments.close()

    async def aclose(self) -> None:
        pass
