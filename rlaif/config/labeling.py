"""The `labeling:` block of a recipe: what `rlaif label` does by default (its flags override each value), and what
`rlaif smoke` labels with in a distilled recipe (recipes/smoke-distilled.yaml).

    labeling:
      prompts: null           # a dataset in the recipe's format; null: data.train
      samples_per_prompt: 2   # K completions per prompt; every pair of them is judged
      tie_epsilon: 0.05       # a soft label within this of 0.5 is a tie, counted and left out
      batch_prompts: 16       # prompts sampled, judged and saved together (a killed run loses at most one chunk)
      max_prompts: null       # the first N valid prompts only
"""
from __future__ import annotations

from pydantic import Field

from rlaif.config.strict import Strict


class LabelingSpec(Strict):
    prompts: str | None = None
    samples_per_prompt: int = Field(2, ge=2)
    tie_epsilon: float = Field(0.05, ge=0, lt=0.5, allow_inf_nan=False)
    batch_prompts: int = Field(16, gt=0)
    max_prompts: int | None = Field(None, gt=0)
