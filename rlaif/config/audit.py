"""The `audit:` block of a recipe: thresholds that turn `rlaif judge audit` into pass or fail, and its sampling."""
from __future__ import annotations

from pydantic import Field

from rlaif.config.strict import Strict


class AuditSpec(Strict):
    """Thresholds that turn an audit into pass or fail (None: reported, not enforced), and its sampling."""
    min_accuracy: float | None = Field(None, ge=0, le=1)  # every labelled criterion
    min_kappa: float | None = Field(None, ge=-1, le=1)
    min_spearman: float | None = Field(None, ge=-1, le=1)  # scale criteria and overall scores
    max_length_bias: float | None = Field(None, ge=0, le=2)  # |rho(judge, length) - rho(gold, length)|
    max_score_spread: float | None = Field(None, ge=0)  # mean std of repeated scores of one sample
    min_pair_accuracy: float | None = Field(None, ge=0, le=1)
    max_position_flip_rate: float | None = Field(None, ge=0, le=1)
    repeats: int = Field(3, ge=2)  # how often each consistency sample is scored
    consistency_samples: int = Field(50, ge=0)  # how many samples are scored repeatedly (0: skip)
