"""The policy's precision: the dtype its weights are loaded in, from the training dtype (grpo.bf16 / fp16).

TRL 1.16 loads a policy given by name in float32 unless `grpo.model_init_kwargs.dtype` says otherwise
(`create_model_from_path` in trl/trainer/utils.py), whatever `bf16` says: a LoRA run then holds its frozen base
in fp32, twice the memory, and computes in bf16 under autocast anyway. rlaif loads it as the user trains:

- LoRA: the base in the training dtype. It is frozen, so nothing is lost; peft keeps the adapter, the weights
  that are trained, in fp32 (`autocast_adapter_dtype`), and the optimiser's state with it.
- Full fine-tuning: float32. The trained weights are the optimiser's master copy; autocast computes in the
  training dtype. Loaded in bf16 they would round small updates away.

A dtype the recipe gives in `grpo.model_init_kwargs` is kept. No pydantic here: scripts/gpu_check.py, which runs
where only torch, transformers, peft and accelerate are installed, sizes its check with the same rule.
"""
from __future__ import annotations

from rlaif.errors import UserError


def policy_weight_dtype(training_dtype: str, lora: bool) -> str:
    """The dtype the policy's weights load in, for a run that computes in `training_dtype`."""
    return training_dtype if lora else "float32"


def policy_init_kwargs(given: dict | None, training_dtype: str, lora: bool, source: str) -> dict:
    """GRPOConfig's model_init_kwargs: the recipe's own, with the weights' dtype added unless it gives one."""
    kwargs = dict(given or {})
    if "torch_dtype" in kwargs:  # transformers 5 renamed it; TRL would add dtype=float32 beside it
        raise UserError(f"{source}: grpo.model_init_kwargs.torch_dtype: transformers 5 calls it dtype "
                        f"(e.g. dtype: {training_dtype})")
    kwargs.setdefault("dtype", policy_weight_dtype(training_dtype, lora))
    return kwargs
