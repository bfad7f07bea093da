"""The `train:` block of a recipe: how a training run behaves when asked to stop."""
from __future__ import annotations

from pydantic import Field

from rlaif.config.strict import Strict


class TrainSpec(Strict):
    # SIGTERM or Ctrl-C: seconds to finish the step under way and save a checkpoint before exiting anyway.
    # None: sized from the run, four times its slowest step so far and at least 60 s.
    preempt_grace_s: float | None = Field(None, gt=0, allow_inf_nan=False)
