"""Several sources as one reward: each sample's weighted sum of its sources' rewards, through a gate when a source
is essential (a sample that fails an essential source, its reward below 0.5, gets 0).

TRL sees this one reward function rather than one per source, for a reason: TRL sums its functions with
`nansum`, so a sample whose judgment failed (None) while a rule scored it would be trained on the rule's share
alone, as if the judge had said 0. Here such a sample gets None and is left out of its group, as it is when the
judge is the only source; so does a sample a source failed on whose fallback is a number (a Lambda's neutral 0.5,
which only a Lambda that is the whole reward answers, as Bedrock's contract has it): a failure never becomes a
share of the sum. Each source's own numbers are still logged (`reward/<name>/mean`, pass and fail rates)
and each gets a column of the completions table.
"""
from __future__ import annotations

import asyncio
import logging

from rlaif.data.samples import Sample
from rlaif.portable.composed import compose
from rlaif.rewards.source import RewardSource, Scored, source_metrics

log = logging.getLogger("rlaif.rewards")


class AnyFailures:
    """The combination's failure state: the first stop any of its sources asks for."""

    def __init__(self, sources: list[RewardSource]):
        self.sources = sources

    @property
    def stop_reason(self) -> str | None:
        return next((s.failures.stop_reason for s in self.sources if s.failures.stop_reason), None)


class CombinedSource:
    def __init__(self, sources: list[RewardSource], weights: list[float], essential: list[bool],
                 name: str = "combined"):
        self.sources, self.weights, self.essential, self.name = sources, weights, essential, name
        self.failures = AnyFailures(sources)
        self.gated = 0

    def combine(self, rewards: list[float | None]) -> float | None:
        """One sample's reward from its sources' rewards; None when any source has none (a failed judgment is
        left out of its group, as it would be alone). The rule is rlaif/portable/composed.py's, which the exported
        Lambda carries too."""
        reward, gated = compose(rewards, self.weights, self.essential)
        self.gated += gated
        return reward

    async def _part(self, src: RewardSource, samples: list[Sample], step: int | None, state) -> Scored:
        """One source's scores; a source that fails as a whole (a bug) gives its fallback for the batch, counted
        by that source alone, and the other sources' scores stand."""
        try:
            return await src.score(samples, step, state=state)
        except Exception as e:
            log.exception("reward source %s failed for a whole batch: %s", src.name, e)
            return Scored(src.fail_batch(len(samples)), failed=[True] * len(samples))

    async def score(self, samples: list[Sample], step: int | None = None, state=None) -> Scored:
        parts = await asyncio.gather(*[self._part(s, samples, step, state) for s in self.sources])
        own = [p.scored() for p in parts]  # a failure is None here, whatever the source's fallback
        gated0 = self.gated
        rewards = [self.combine([r[i] for r in own]) for i in range(len(samples))]
        metrics, columns = {}, {}
        for src, part, scored in zip(self.sources, parts, own):
            metrics |= part.metrics | source_metrics(src.name, scored)
            columns |= part.columns | {src.name: scored}
        if any(self.essential):
            metrics["reward/gated_rate"] = (self.gated - gated0) / max(1, len(samples))
        return Scored(rewards, metrics, columns)

    def fail_batch(self, n: int) -> list[float | None]:
        for s in self.sources:
            s.fail_batch(n)
        return [None] * n

    def summary(self) -> dict:
        """The run summary's shape (calls, samples, fallbacks, failed, latency), summed over the sources, with each
        source's own under `sources`."""
        parts = {s.name: s.summary() for s in self.sources}
        total = {k: sum(p.get(k, 0) for p in parts.values()) for k in ("calls", "fallbacks", "failed")}
        return total | {"samples": max((p.get("samples", 0) for p in parts.values()), default=0),
                        "latency_p50_s": max((p.get("latency_p50_s", 0.0) for p in parts.values()), default=0.0),
                        "gated": self.gated, "sources": parts}

    def close(self) -> None:
        for s in self.sources:
            s.close()

    async def aclose(self) -> None:
        for s in self.sources:
            await s.aclose()
