"""A LoRA adapter's settings: the policy's (policy.lora) and a reward model's (reward_model_training.lora)."""
from __future__ import annotations

from pydantic import Field

from rlaif.config.strict import Strict


class LoraSpec(Strict):
    r: int = Field(16, gt=0, description="rank: higher = more capacity and memory")
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"
    # weights that are parameters rather than nn.Linear modules: the experts of an MoE layer stored as one 3-D
    # tensor (gpt-oss: mlp.experts.gate_up_proj, mlp.experts.down_proj), which target_modules cannot reach
    target_parameters: list[str] | None = None
