"""The `reward_model_training:` block of a recipe: how `rlaif rm train` distils preference labels into a reward
model (a one-output sequence-classification head on the recipe's policy base), as the RLAIF paper does.

    reward_model_training:
      method: lora            # or full: every weight trained
      loss: soft              # the paper's cross-entropy on P(chosen > rejected); hard: TRL's -log sigmoid(r_c - r_r)
      learning_rate: 2.0e-3
      epochs: 10
      heldout_fraction: 0.1   # pairs kept out of training, for the accuracy the summary reports

The defaults train the tiny world's reward model in seconds on a CPU (tests/test_reward_model.py: 160 pairs,
100 steps; held-out accuracy 1.0 and 0.975 with seeds 0 and 1, where 3 epochs gave 0.75).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rlaif.config.lora import LoraSpec
from rlaif.config.strict import Strict


class RewardModelTrainingSpec(Strict):
    base: str | None = None  # the checkpoint the head goes on; default: the recipe's policy.model
    method: Literal["lora", "full"] = "lora"  # lora: merged into the base when saved (vLLM serves whole weights)
    lora: LoraSpec = LoraSpec()
    # soft: -[p log s(r_c - r_r) + (1 - p) log s(r_r - r_c)] with p the label's P(chosen > rejected) (the paper's);
    # hard: TRL's Bradley-Terry loss, every label as 1.0; margin: TRL's -log s(r_c - r_r - m), m = margin_scale *
    # (2p - 1): a surer label asks for a wider gap (Llama 2's margin from the rating strength)
    loss: Literal["soft", "hard", "margin"] = "soft"
    margin_scale: float = Field(1.0, ge=0, allow_inf_nan=False)
    learning_rate: float = Field(2.0e-3, gt=0, allow_inf_nan=False)
    epochs: float = Field(10.0, gt=0, allow_inf_nan=False)
    batch_size: int = Field(16, gt=0)  # pairs per step
    heldout_fraction: float = Field(0.1, ge=0, lt=1)  # pairs kept out of training, for the reported accuracy
    seed: int = 0  # the head's initialisation, the shuffle and the held-out split
    max_length: int | None = Field(1024, gt=0)  # longer pairs are left out (counted), as TRL's RewardTrainer does
    # passed to trl.RewardConfig as is (e.g. {bf16: true, gradient_accumulation_steps: 4}), over the fields above
    reward_config: dict[str, Any] = {}
