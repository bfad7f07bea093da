"""A judge cascade: the recipe's judge answers every sample; only the samples it is unsure of go to a second,
larger judge, whose verdict replaces its own.

Unsure: a criterion's P(pass) within `band` of 0.5, or a judgment that failed (the larger judge is asked instead
of falling back). A sample a deterministic check gated was never judged and is not escalated. Most samples of a
confident judge fall outside the band, so the larger judge sees a fraction of them: the metrics say how large
(`judge/cascade_escalation_rate`), how many calls it was spared, and how often the small judge's verdict agreed
with the large one on the share that went up (`judge/cascade_agreement`: below 0.5 would mean the band is where
the small judge is wrong, which is the point).
"""
from __future__ import annotations

from rlaif.data.samples import Sample
from rlaif.judge.scorer import Judge, Verdict


def unsure(v: Verdict, band: float) -> bool:
    if v.gated:
        return False
    if v.failed or not v.scores:
        return True
    return any(s is None or abs(s - 0.5) < band for s in v.scores.values())


class Cascade:
    def __init__(self, large: Judge, band: float):
        self.large, self.band = large, band
        self.totals = {"samples": 0, "escalated": 0, "agreed": 0, "compared": 0}

    async def refine(self, samples: list[Sample], verdicts: list[Verdict],
                     step: int | None = None) -> tuple[list[Verdict], dict[str, float]]:
        """The verdicts with the unsure ones replaced by the larger judge's, and this batch's cascade metrics."""
        up = [i for i, v in enumerate(verdicts) if unsure(v, self.band)]
        merged = list(verdicts)
        agreed = compared = 0
        if up:
            for i, big in zip(up, await self.large.score_samples([samples[i] for i in up], step=step)):
                small = verdicts[i]
                if small.reward is not None and big.reward is not None:
                    compared += 1
                    agreed += (small.reward > 0.5) == (big.reward > 0.5)
                merged[i] = big
        n = len(verdicts)
        self.totals["samples"] += n
        self.totals["escalated"] += len(up)
        self.totals["agreed"] += agreed
        self.totals["compared"] += compared
        metrics = {"judge/cascade_escalation_rate": len(up) / max(1, n),
                   "judge/cascade_large_calls_saved": float(n - len(up))}
        if compared:
            metrics["judge/cascade_agreement"] = agreed / compared
        return merged, metrics

    def summary(self) -> dict:
        t = self.totals
        return {"large_judge": self.large.backend.name, "band": self.band, "samples": t["samples"],
                "escalated": t["escalated"], "escalation_rate": round(t["escalated"] / max(1, t["samples"]), 4),
                "large_calls_saved": t["samples"] - t["escalated"],
                "agreement_on_escalated": round(t["agreed"] / t["compared"], 4) if t["compared"] else None}
