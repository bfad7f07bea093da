"""Any reward source as a TRL reward function.

TRL's contract: an (async) callable that takes `prompts`, `completions` and the dataset's columns as keyword
arguments, plus `trainer_state`, `log_metric` and `log_extra`, and returns one float (or None) per completion.
The adapter turns the batch into samples once, scores them with the source, logs the source's metrics and
completions-table columns, and never raises into the trainer: a batch that fails as a whole is counted and gets
the source's fallback.
"""
from __future__ import annotations

import logging

from rlaif.rewards.combined import CombinedSource
from rlaif.rewards.source import RewardSource, batch_samples, source_metrics

log = logging.getLogger("rlaif.rewards")


class TRLReward:
    def __init__(self, source: RewardSource):
        self.source = source
        self.__name__ = source.name  # TRL names the metric rewards/<__name__>/mean

    async def __call__(self, prompts, completions, completion_ids=None, trainer_state=None, log_metric=None,
                       log_extra=None, **columns) -> list[float | None]:
        try:
            samples = batch_samples(prompts, completions, columns, completion_ids)
            scored = await self.source.score(samples, getattr(trainer_state, "global_step", None), state=trainer_state)
            metrics = dict(scored.metrics)
            if not isinstance(self.source, CombinedSource):  # a sum of sources: each logged its own already, and
                # TRL logs the sum (rewards/combined/mean); a pass rate above 0.5 means nothing for a sum
                metrics |= source_metrics(self.__name__, scored.scored())  # a neutral fallback is a failure
            for k, v in metrics.items() if log_metric is not None else ():
                log_metric(k, v)
            for k, v in scored.columns.items() if log_extra is not None else ():
                log_extra(k, v)
            return scored.rewards
        except Exception as e:  # never raise into the trainer: the whole batch falls back, counted
            log.exception("reward %s failed for a whole batch: %s", self.__name__, e)
            return self.source.fail_batch(len(prompts))

    @property
    def stop_reason(self) -> str | None:
        return self.source.failures.stop_reason

    @property
    def should_stop(self) -> bool:
        return self.source.failures.stop_reason is not None

    def summary(self) -> dict:
        return self.source.summary()

    def close(self) -> None:
        self.source.close()
