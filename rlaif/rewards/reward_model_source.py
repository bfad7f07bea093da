"""A reward model as a source: each batch scored in one go (one forward pass per chunk in this process, or one
/classify request per chunk to vLLM's pooling runner), the head's raw score normalised as the recipe says.

A sample the backend could not score (a failed request, after the client's retries and its wait for a restarted
server) is None, counted in `<name>/fail_rate` and the failure window, and left out of its group, as a failed
judgment is. A server rlaif launched and supervises is restarted when it dies (rlaif/factory.py hooks this
source's `server_down` / `server_up` / `give_up` to its Supervisor, as it does a judge's): meanwhile requests wait
for it in the pool (rlaif/judge/pool.py) and its failures do not stop the run.
"""
from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Protocol

from rlaif.common.failure_window import FailureWindow
from rlaif.common.stats import percentile
from rlaif.data.samples import Sample
from rlaif.judge.judgment_log import JudgmentLog, SourceLog, as_log
from rlaif.rewards.source import Scored

log = logging.getLogger("rlaif.rewards")


class RewardModelBackend(Protocol):
    async def score(self, prompts: list[list[dict]], responses: list[str]) -> tuple[list[float | None], str | None]:
        """Each conversation's raw score (None where it failed), and the last error."""

    async def aclose(self) -> None: ...


class InProcess:
    """rlaif/judge/reward_model.py's LocalRewardModel as a backend: its forward passes off the event loop."""

    def __init__(self, model):
        self.model = model
        self.pool = None  # nothing to wait for

    async def score(self, prompts, responses):
        return await asyncio.to_thread(self.model.score, prompts, responses), None

    async def aclose(self) -> None:
        pass


def normalise(raw: list[float | None], how: str) -> list[float | None]:
    """The rewards from the raw scores (None stays None): sigmoid, none, or zscore over the batch's scored ones."""
    if how == "sigmoid":
        return [None if x is None else 1.0 / (1.0 + math.exp(-x)) for x in raw]
    if how == "zscore":
        scored = [x for x in raw if x is not None]
        mean = statistics.fmean(scored) if scored else 0.0
        std = statistics.pstdev(scored) if len(scored) > 1 else 0.0
        return [None if x is None else (x - mean) / (std if std > 1e-8 else 1.0) for x in raw]
    return list(raw)


class RewardModelSource:
    def __init__(self, backend: RewardModelBackend, *, name: str = "reward_model", model: str = "",
                 normalize: str = "sigmoid", max_fail_rate: float = 0.2,
                 judgment_log: Path | JudgmentLog | SourceLog | None = None):
        self.backend, self.name, self.model, self.normalize = backend, name, model, normalize
        self.judgments = as_log(judgment_log)
        self.failures = FailureWindow(max_fail_rate, lambda rate, n: f"reward model {model} failed for {rate:.0%} "
                                      f"of the last {n} samples, above {max_fail_rate:.0%}", 256, 32)
        self.totals = {"calls": 0, "samples": 0, "failures": 0, "server_restarts": 0}
        self.latencies: list[float] = []
        self._restarting: set[str] = set()  # launched servers their supervisor is restarting

    async def score(self, samples: list[Sample], step: int | None = None, state=None) -> Scored:
        t0 = time.perf_counter()
        self.totals["calls"] += 1
        self.totals["samples"] += len(samples)
        try:
            raw, error = await self.backend.score([s.prompt for s in samples], [s.response for s in samples])
            if len(raw) != len(samples):
                raise ValueError(f"{len(raw)} scores for {len(samples)} samples")
        except Exception as e:  # a bug or a reply that is not one: counted, never raised into the trainer
            raw, error = [None] * len(samples), f"{type(e).__name__}: {str(e)[:300]}"
        raw = [None if x is None or not math.isfinite(x) else float(x) for x in raw]
        latency = time.perf_counter() - t0
        self.latencies.append(latency)
        n_failed = sum(x is None for x in raw)
        if n_failed:
            self.totals["failures"] += n_failed
            if self.totals["failures"] == n_failed or self.totals["failures"] % 100 < n_failed:
                log.error("reward model %s: %d of %d samples not scored: %s", self.model, n_failed, len(raw), error)
        if not self._restarting:  # a restart's failures are the supervisor's to fix, not a reason to stop
            self.failures.record(True, n_failed)
            self.failures.record(False, len(raw) - n_failed)
            self.failures.check()
        rewards = normalise(raw, self.normalize)
        now = round(time.time(), 3)
        self.judgments.write([{"time": now, "step": step, "sample_id": s.id, "criterion": f"reward_model:{self.model}",
                               "score": x, "error": None if x is not None else error, "reward": r,
                               "latency_s": round(latency, 4), "completion": s.response[:2000]}
                              for s, x, r in zip(samples, raw, rewards)])
        scored = [x for x in raw if x is not None]
        metrics = {f"{self.name}/calls": 1.0, f"{self.name}/fail_rate": n_failed / max(1, len(raw)),
                   f"{self.name}/latency_s": latency}
        if scored:
            metrics[f"{self.name}/raw_mean"] = statistics.fmean(scored)
        return Scored(rewards, metrics, {f"{self.name}_raw": [None if x is None else round(x, 4) for x in raw]})

    # a launched pooling server's supervisor tells this source, as it tells a judge (rlaif/factory.py)
    def server_down(self, url: str, exit_code=None) -> None:
        self._restarting.add(url)
        if self.backend.pool is not None:
            self.backend.pool.mark_down(url, f"exit code {exit_code}; restarting it", was_up=True)

    def server_up(self, url: str) -> None:
        self._restarting.discard(url)
        self.failures.clear()
        self.totals["server_restarts"] += 1
        if self.backend.pool is not None:
            self.backend.pool.mark_up(url)

    def give_up(self, url: str, why: str) -> None:
        self._restarting.discard(url)
        pool = self.backend.pool
        if pool is not None:
            pool.give_up(url)
            if pool.recoverable():
                log.error("%s; %d other replica(s) go on scoring", why, len(pool.healthy()))
                return
        self.failures.stop(why)

    def fail_batch(self, n: int) -> list[float | None]:
        self.totals["failures"] += n
        self.failures.record(True, n)
        self.failures.check()
        return [None] * n

    def summary(self) -> dict:
        pool = self.backend.pool
        return dict(self.totals, failed=self.totals["failures"], fallbacks=0,  # left out, never replaced
                    latency_p50_s=round(percentile(self.latencies, 0.5), 4),
                    outage_wait_s=round(pool.waited_s, 1) if pool is not None else 0.0)

    def close(self) -> None:
        self.judgments.close()

    async def aclose(self) -> None:
        await self.backend.aclose()
