"""The judge as a reward source: its rewards, and the judge metrics of each batch (calls, failures, retries,
latency, pass rate and mean score per criterion, check pass rates, the health signals, the prefix-cache hit
rate), with the per-criterion scores (and verdict rationales) as columns of TRL's completions table.

With a cascade, the call metrics are the first judge's (the larger judge's are `judge/cascade_*`), and every
number read from verdicts (reward range, positive and pass rates, scores) is read from the verdicts whose
rewards are used, after the cascade. Either judge's failure window can stop the run.

The run's first judge source logs under `judge/` and `checks/` (what the health checks, the progress line and the
report read); any other judge source logs the same numbers under its own name (`<name>/calls`,
`<name>/checks/...`), so two judges never average into one metric."""
from __future__ import annotations

import asyncio
import logging
import statistics

from rlaif.common import fastjson
from rlaif.common.failure_window import FirstStop
from rlaif.common.stats import percentile
from rlaif.data.samples import Sample
from rlaif.judge.cascade import Cascade
from rlaif.judge.scorer import Judge, Verdict
from rlaif.rewards.canaries import Canaries
from rlaif.rewards.source import Scored

log = logging.getLogger("rlaif.rewards")

class JudgeSource:
    def __init__(self, judge: Judge, name: str = "judge", primary: bool = True, canaries: Canaries | None = None,
                 cascade: Cascade | None = None):
        self.judge = judge
        self.name = name
        self.primary = primary  # the run's first judge: its metrics are the `judge/*` ones
        self.canaries = canaries  # labelled samples judged beside each batch (rewards/canaries.py)
        self.cascade = cascade  # a larger judge for the unsure verdicts (judge/cascade.py)
        self.canary_errors = 0  # batches whose canaries raised (the training batch was judged all the same)
        self.failures = judge.failures if cascade is None else FirstStop(
            [("", judge.failures), ("the cascade's larger judge: ", cascade.large.failures)])

    def _own(self, key: str) -> str:
        """A metric's or column's name for this source: as is for the primary judge, else under the source's name."""
        if self.primary:
            return key
        if key.startswith("judge/"):
            return f"{self.name}/{key.removeprefix('judge/')}"
        if key.startswith("judge_"):
            return f"{self.name}_{key.removeprefix('judge_')}"
        return f"{self.name}/{key}"

    async def score(self, samples: list[Sample], step: int | None = None, state=None) -> Scored:
        j = self.judge
        before, n_lat = dict(j.totals), len(j.latencies)
        if self.canaries is None:
            verdicts, canary_metrics = await j.score_samples(samples, step=step), {}
        else:  # concurrently: the canaries share the batch's server, its rubric prefix and its time
            verdicts, canary_metrics = await asyncio.gather(j.score_samples(samples, step=step),
                                                            self._canary_batch(step))
            if self.canaries.alarm and self.canaries.spec.stop and self.failures.stop_reason is None:
                self.failures.stop(self.canaries.alarm)
        metrics = self._call_metrics(before, j.latencies[n_lat:]) | canary_metrics
        if self.cascade is not None:  # the calls above are the first judge's; the rewards, the cascade's
            verdicts, cascade_metrics = await self.cascade.refine(samples, verdicts, step)
            metrics |= cascade_metrics
        metrics |= self._verdict_metrics(verdicts)
        hit_rate = j.prefix_cache.latest()  # never waits for /metrics
        if hit_rate is not None:
            metrics["judge/prefix_cache_hit_rate"] = hit_rate
        columns = {"judge_scores": [fastjson.dumps({k: (None if x is None else round(x, 3))
                                                    for k, x in v.scores.items()}).decode() for v in verdicts]}
        if j.mode == "verdict":
            columns["judge_rationale"] = [v.rationale for v in verdicts]
        # a failed judgment's reward is the recipe's fallback (None, or neutral), and it is a failure all the same:
        # a combined reward leaves such a sample out whatever the fallback (rewards/combined.py)
        return Scored([v.reward for v in verdicts], {self._own(k): v for k, v in metrics.items()},
                      {self._own(k): v for k, v in columns.items()}, failed=[v.failed for v in verdicts])

    async def _canary_batch(self, step: int | None) -> dict[str, float]:
        """This batch's canaries, never failing the training batch: a canary that raises is logged and counted
        (`judge/canary_errors`), and the batch is judged as if none rode with it."""
        try:
            return await self.canaries.batch(step) | {"judge/canary_errors": 0.0}
        except Exception as e:
            self.canary_errors += 1
            log.exception("canaries at step %s failed (the training batch is judged without them): %s", step, e)
            return {"judge/canary_errors": 1.0}

    def _call_metrics(self, before: dict, lat: list[float]) -> dict[str, float]:
        """The first judge's calls in this batch: how many, how they failed, how long they took."""
        t, m = self.judge.totals, {}
        calls = t["calls"] - before["calls"]
        m["judge/cache_hits"] = float(t["cache_hits"] - before["cache_hits"])
        m["judge/calls"] = float(calls)
        m["judge/fail_rate"] = (t["failures"] - before["failures"]) / max(1, calls)
        m["judge/parse_fail_rate"] = (t["parse_failures"] - before["parse_failures"]) / max(1, calls)
        m["judge/retries"] = float(t["retries"] - before["retries"])
        m["judge/neutralised"] = float(t["neutralised"] - before["neutralised"])
        m["judge/latency_p50_s"] = percentile(lat, 0.5)
        m["judge/latency_p95_s"] = percentile(lat, 0.95)
        return m

    def _verdict_metrics(self, verdicts: list[Verdict]) -> dict[str, float]:
        """What the verdicts whose rewards are used say: checks, reward range and positive rate (the health
        signals), pass rate and mean score per criterion."""
        j, m = self.judge, {}
        if j.checks:
            m["checks/gated_rate"] = sum(v.gated for v in verdicts) / max(1, len(verdicts))
            for c in j.checks:
                m[f"checks/{c.label}/pass_rate"] = statistics.fmean(v.checks[c.label] for v in verdicts)
        m["judge/truncated"] = float(sum(v.truncated for v in verdicts))  # samples cut to fit the judge's context
        # training-health signals (rlaif/eval/health.py): the share of samples scored, and over those, the reward
        # range and the share of positive (> 0.5) rewards. A failed judgment is no score (its fallback is not the
        # judge's), and a batch with none scored logs none of these: a 0 would read as a policy that never passes
        # (TRL averages each key over the batches and processes that logged it)
        scored = [v.reward for v in verdicts if not v.failed and v.reward is not None]
        if verdicts:
            m["judge/scored_rate"] = len(scored) / len(verdicts)
        if scored:
            m["judge/reward_min"] = min(scored)
            m["judge/reward_max"] = max(scored)
            m["judge/positive_rate"] = sum(r > 0.5 for r in scored) / len(scored)
        for c in j.rubric.criteria:
            vals = [v.scores[c.name] for v in verdicts if v.scores.get(c.name) is not None]
            if vals:
                m[f"judge/{c.name}/pass_rate"] = sum(x > 0.5 for x in vals) / len(vals)
                m[f"judge/{c.name}/score"] = statistics.fmean(vals)
        return m

    def fail_batch(self, n: int) -> list[float | None]:
        return self.judge.fail_batch(n)

    def summary(self) -> dict:
        out = self.judge.summary()
        return out | {"cascade": self.cascade.summary()} if self.cascade is not None else out

    def close(self) -> None:
        self.judge.close()
        if self.cascade is not None:
            self.cascade.large.close()

    async def aclose(self) -> None:
        await self.judge.backend.aclose()
