"""A judge cascade: the recipe's judge answers every sample; only the samples it is unsure of go to a second,
larger judge, whose verdict replaces its own, unless the larger judge failed on it: then the first judge's verdict
stands (a failure never replaces a verdict), and the failure is counted (`judge/cascade_fail_rate`, the summary's
`large_failed`; the larger judge's own failure window can stop the run, rlaif/rewards/judge_source.py).

Unsure: a criterion's P(pass) within `band` of 0.5, or a judgment that failed (the larger judge is asked instead
of falling back). A sample a deterministic check gated was never judged and is not escalated. Most samples of a
confident judge fall outside the band, so the larger judge sees a fraction of them: the metrics say how large
(`judge/cascade_escalation_rate`), how many calls it was spared, and how often the small judge's verdict agreed
with the large one on the share that went up (`judge/cascade_agreement`: below 0.5 would mean the band is where
the small judge is wrong, which is the point).
"""
from __future__ import annotations

import logging

from rlaif.data.samples import Sample
from rlaif.judge.scorer import Judge, Verdict

log = logging.getLogger("rlaif.judge")


def unsure(v: Verdict, band: float) -> bool:
    if v.gated:
        return False
    if v.failed or not v.scores:
        return True
    return any(s is None or abs(s - 0.5) < band for s in v.scores.values())


class Cascade:
    def __init__(self, large: Judge, band: float):
        self.large, self.band = large, band
        # large_failed: escalated samples the larger judge failed on; kept_small: of those, the ones whose first
        # verdict stood (the others had failed at the first judge too)
        self.totals = {"samples": 0, "escalated": 0, "agreed": 0, "compared": 0, "large_failed": 0, "kept_small": 0}

    async def _large(self, samples: list[Sample], step: int | None) -> list[Verdict]:
        """The larger judge's verdicts; a larger judge that raises (it should not) failed on every one, counted
        in its own failure window."""
        try:
            return await self.large.score_samples(samples, step=step)
        except Exception as e:
            log.exception("the cascade's larger judge failed for a whole batch: %s", e)
            self.large.fail_batch(len(samples))
            return [Verdict(s.id, None, {}, {"*": f"{type(e).__name__}: {e}"}, failed=True) for s in samples]

    async def refine(self, samples: list[Sample], verdicts: list[Verdict],
                     step: int | None = None) -> tuple[list[Verdict], dict[str, float]]:
        """The verdicts with the unsure ones replaced by the larger judge's where it answered, and this batch's
        cascade metrics."""
        up = [i for i, v in enumerate(verdicts) if unsure(v, self.band)]
        merged = list(verdicts)
        agreed = compared = failed = kept = 0
        if up:
            for i, big in zip(up, await self._large([samples[i] for i in up], step)):
                small = verdicts[i]
                if big.failed:  # a failure never replaces a verdict
                    failed += 1
                    kept += not small.failed
                    continue
                if small.reward is not None and big.reward is not None and not small.failed:
                    compared += 1
                    agreed += (small.reward > 0.5) == (big.reward > 0.5)
                merged[i] = big
        n = len(verdicts)
        for k, x in (("samples", n), ("escalated", len(up)), ("agreed", agreed), ("compared", compared),
                     ("large_failed", failed), ("kept_small", kept)):
            self.totals[k] += x
        metrics = {"judge/cascade_escalation_rate": len(up) / max(1, n),
                   "judge/cascade_large_calls_saved": float(n - len(up))}
        if up:  # a rate of nothing is no number: left out (TRL averages a key over the batches that logged it)
            metrics["judge/cascade_fail_rate"] = failed / len(up)
        if compared:
            metrics["judge/cascade_agreement"] = agreed / compared
        return merged, metrics

    def summary(self) -> dict:
        t = self.totals
        return {"large_judge": self.large.backend.name, "band": self.band, "samples": t["samples"],
                "escalated": t["escalated"], "escalation_rate": round(t["escalated"] / max(1, t["samples"]), 4),
                "large_calls_saved": t["samples"] - t["escalated"],
                "agreement_on_escalated": round(t["agreed"] / t["compared"], 4) if t["compared"] else None,
                "large_failed": t["large_failed"], "kept_small": t["kept_small"],
                "fail_rate": round(t["large_failed"] / t["escalated"], 4) if t["escalated"] else None}
