"""The `train:` block of a recipe: how a training run behaves when asked to stop."""
from __future__ import annotations

from pydantic import Field

from rlaif.config.strict import Strict


class TrainSpec(Strict):
    # SIGTERM or Ctrl-C: seconds to finish the step under way and save a checkpoint before exiting anyway. Keep it
    # 5 s under the launcher's kill (torchrun's --shutdown_timeout, Kubernetes' terminationGracePeriodSeconds).
    # None: four times the slowest step so far, at least 60 s, cut to 25 s for a SIGTERM (its sender SIGKILLs 30 s
    # later by default) and under torchrun to its --shutdown_timeout less 5 s (rlaif/train/preemption.py).
    preempt_grace_s: float | None = Field(None, gt=0, allow_inf_nan=False)
