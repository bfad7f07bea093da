"""Sources combined through a gate: a sample that fails an essential source (its reward below 0.5) gets 0; the
others get the weighted sum of every source's reward, as TRL's `reward_weights` would give. TRL sees one reward
function; each source's own numbers are still logged (`reward/<name>/mean`, pass and fail rates) and each gets a
column of the completions table."""
from __future__ import annotations

import asyncio

from rlaif.data.samples import Sample
from rlaif.rewards.source import RewardSource, Scored, source_metrics

GATE_PASS = 0.5


class AnyFailures:
    """The gate's failure state: the first stop any of its sources asks for."""

    def __init__(self, sources: list[RewardSource]):
        self.sources = sources

    @property
    def stop_reason(self) -> str | None:
        return next((s.failures.stop_reason for s in self.sources if s.failures.stop_reason), None)


class GatedSource:
    def __init__(self, sources: list[RewardSource], weights: list[float], essential: list[bool],
                 name: str = "gated"):
        self.sources, self.weights, self.essential, self.name = sources, weights, essential, name
        self.failures = AnyFailures(sources)
        self.gated = 0

    def combine(self, rewards: list[float | None]) -> float | None:
        """One sample's reward from its sources' rewards; None when any source has none (a failed judgment is
        left out of its group, as it would be alone)."""
        if any(r is None for r in rewards):
            return None
        if any(e and r < GATE_PASS for e, r in zip(self.essential, rewards)):
            self.gated += 1
            return 0.0
        return sum(w * r for w, r in zip(self.weights, rewards))

    async def score(self, samples: list[Sample], step: int | None = None) -> Scored:
        parts = await asyncio.gather(*[s.score(samples, step) for s in self.sources])
        gated0 = self.gated
        rewards = [self.combine([p.rewards[i] for p in parts]) for i in range(len(samples))]
        metrics, columns = {}, {}
        for src, part in zip(self.sources, parts):
            metrics |= part.metrics | source_metrics(src.name, part.rewards)
            columns |= part.columns | {src.name: part.rewards}
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
