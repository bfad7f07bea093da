"""A Python function as a source: `module:function` with TRL's reward-callable signature, called as TRL calls
reward functions (`prompts`, `completions` in the conversational format, `completion_ids`, the dataset's columns,
`trainer_state` (its `global_step`), `log_metric` and `log_extra`, as keyword arguments; sync or async), so a
function written for TRL runs here unchanged. What it logs goes to the run's metrics and completions table. A
function that raises, or answers with the wrong number of values or with something that is not a finite number
or None, is counted and gets None for the batch (TRL leaves those samples out of their groups); it never raises
into the trainer."""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from pathlib import Path

from rlaif.common.failure_window import FailureWindow
from rlaif.common.stats import percentile
from rlaif.config.rewards import PythonSourceSpec
from rlaif.data.samples import Sample
from rlaif.judge.judgment_log import JudgmentLog, SourceLog, as_log
# the state a function gets where no trainer runs, and what counts as its answer: the exported Lambda's rules too
from rlaif.portable.composed import StepState, function_rewards
from rlaif.rewards.source import Scored, batch_columns

log = logging.getLogger("rlaif.rewards")


class PythonSource:
    def __init__(self, spec: PythonSourceSpec, judgment_log: Path | JudgmentLog | SourceLog | None = None,
                 max_fail_rate: float = 0.5):
        self.spec, self.name = spec, spec.name
        self.fn = spec.load()
        self.judgments = as_log(judgment_log)
        self.failures = FailureWindow(max_fail_rate, lambda rate, n: f"reward function {spec.function} failed for "
                                      f"{rate:.0%} of the last {n} samples, above {max_fail_rate:.0%}", 256, 32)
        self.totals = {"calls": 0, "samples": 0, "errors": 0, "fallbacks": 0}
        self.latencies: list[float] = []

    async def _call(self, samples: list[Sample], state, logged: Scored) -> list:
        ids = [s.completion_ids for s in samples]
        kwargs = dict(batch_columns(samples), prompts=[s.prompt for s in samples],
                      completions=[[{"role": "assistant", "content": s.response}] for s in samples],
                      completion_ids=None if any(i is None for i in ids) else ids,
                      trainer_state=state,
                      log_metric=lambda k, v: logged.metrics.__setitem__(k, float(v)),
                      log_extra=lambda k, v: logged.columns.__setitem__(k, list(v)))
        if inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(getattr(self.fn, "__call__", None)):
            return await self.fn(**kwargs)
        return await asyncio.to_thread(self.fn, **kwargs)  # user code off the trainer's event loop

    async def score(self, samples: list[Sample], step: int | None = None, state=None) -> Scored:
        t0 = time.perf_counter()
        self.totals["calls"] += 1
        self.totals["samples"] += len(samples)
        logged = Scored([])
        try:
            out = await self._call(samples, state if state is not None else StepState(step or 0), logged)
            rewards, error = function_rewards(out, len(samples)), None
        except Exception as e:  # the user's function: counted, logged, never raised into the trainer
            error = f"{type(e).__name__}: {str(e)[:300]}"
            if self.totals["errors"] < 20:
                log.error("reward function %s: %s", self.spec.function, error)
            self.totals["errors"] += 1
            rewards = [None] * len(samples)
            logged = Scored([])
        latency = time.perf_counter() - t0
        self.latencies.append(latency)
        failed = [r is None for r in rewards]
        for f in failed:
            self.failures.record(f)
        self.totals["fallbacks"] += sum(failed)
        self.failures.check()
        now = round(time.time(), 3)
        criterion = f"python:{self.spec.function}"
        self.judgments.write([{"time": now, "step": step, "sample_id": s.id, "criterion": criterion, "score": r,
                               "error": error, "reward": r, "latency_s": round(latency, 4),
                               "completion": s.response[:2000]} for s, r in zip(samples, rewards)])
        return Scored(rewards, logged.metrics, logged.columns)

    def fail_batch(self, n: int) -> list[float | None]:
        self.totals["errors"] += 1
        self.totals["fallbacks"] += n
        self.failures.record(True, n)
        self.failures.check()
        return [None] * n

    def summary(self) -> dict:
        return dict(self.totals, failed=self.totals["fallbacks"],
                    latency_p50_s=round(percentile(self.latencies, 0.5), 4))

    def close(self) -> None:
        self.judgments.close()

    async def aclose(self) -> None:
        pass
