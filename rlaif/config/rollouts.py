"""The `rollouts:` block of a recipe: how the policy generates its completions during training.

    rollouts:
      engine: vllm          # transformers (TRL's generate, the default) | transformers-paged | vllm
      check_every: 10       # the stale-weight guard (vllm): its noise floor at the first weight sync (step 0),
                            # then a check at step 1 and every N steps after
      max_logprob_gap: 0.05 # ... stop the run when the engine's and the trainer's logprobs differ more than this
      noise_factor: 2       # ... beyond the noise floor: above max(floor + max_logprob_gap, noise_factor x floor)
      async: {max_staleness: 1}   # TRL's asynchronous GRPO trainer (needs engine: vllm)

The engine maps onto TRL's own switches (`use_vllm` + `vllm_mode: colocate`, or
`use_transformers_continuous_batching`); everything else about rollouts stays in `grpo:`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlaif.config.strict import Strict
from rlaif.errors import UserError

ENGINES = ("transformers", "transformers-paged", "vllm")


class AsyncSpec(Strict):
    """TRL's AsyncGRPOTrainer: generation, judging and optimisation overlap; a rollout may come from weights up to
    `max_staleness` optimiser steps old."""
    max_staleness: int = Field(1, ge=0)
    # generation requests in flight; None: TRL's (max_staleness x samples per step). Samples it drops as stale were
    # judged already, so fewer in flight means fewer wasted judge calls
    max_inflight_tasks: int | None = Field(None, gt=0)
    weight_sync_steps: int = Field(1, gt=0)  # optimiser steps between adapter pushes to the server
    # seconds of silence from the rollout worker before the run stops (TRL's default, 300, left a run whose worker
    # had died hanging for minutes)
    worker_silence_s: float = Field(60.0, gt=0)


class RolloutsSpec(Strict):
    engine: Literal["transformers", "transformers-paged", "vllm"] = "transformers"
    # The stale-weight guard (vLLM rollouts): the engine's and the trainer's log-probabilities of one fixed
    # sequence, compared right after the weight sync. Both hold the same weights then, so the gap is numerical
    # noise unless the sync was lost: about 1e-6 per token in fp32; in bf16 5e-3 to 2e-2 with transformers on CPU
    # (benchmarks/guard_noise.py), 1e-2 to 1e-1 reported for bf16 vLLM on GPUs, more with MoE kernels. So the
    # guard measures the noise of the run's own model and hardware at the first sync (step 0: the LoRA adapter is
    # still zero, engine and trainer agree whether or not the sync worked), then checks at step 1 and every
    # `check_every` steps, and stops on a gap above max(floor + max_logprob_gap, noise_factor x floor): the noise
    # adds to whatever else differs (at most its own size per token: the first term), and when it is large its
    # spread from one check to the next grows with it (the second).
    check_every: int = Field(10, gt=0)
    # mean |difference| per token, nats, beyond the noise floor. It also covers the rounding of the LoRA adapter
    # merged into bf16 weights, which the floor (adapter zero) cannot see: 7e-3 to 2e-2 on CPU
    max_logprob_gap: float = Field(0.05, gt=0)
    noise_factor: float = Field(2.0, ge=1)
    # a floor above this is no rounding: the engine computes another model than the trainer before any training
    # (its weights, dtype or kernels); raise it for a model whose kernels are known to be that noisy
    max_noise_floor: float = Field(0.5, gt=0)
    # the engine's dtype; None: the training dtype (grpo.bf16 / fp16, else float32). vLLM would otherwise load an
    # fp32 checkpoint as bf16 and sample from other weights than the trainer's
    vllm_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    # None: eager on CPU (torch.compile costs 12-100 s at every start there), compiled with CUDA graphs on GPU
    vllm_enforce_eager: bool | None = None
    vllm_kv_cache_gib: float = Field(1.0, gt=0)  # CPU only: VLLM_CPU_KVCACHE_SPACE, when it is not set
    async_: AsyncSpec | None = Field(None, alias="async")


def grpo_rollout_settings(spec: RolloutsSpec, grpo: dict, source: str) -> dict:
    """The GRPOConfig fields the rollout engine sets. A recipe that sets TRL's switch itself in grpo: keeps it,
    as long as it says the same as rollouts.engine; a contradiction is an error, not a silent choice."""
    use_vllm = spec.engine == "vllm"
    paged = spec.engine == "transformers-paged"
    for key, want in (("use_vllm", use_vllm), ("use_transformers_continuous_batching", paged)):
        if key in grpo and bool(grpo[key]) != want:
            raise UserError(f"{source}: grpo.{key}: {grpo[key]} contradicts rollouts.engine: {spec.engine}; "
                            "choose the engine with rollouts.engine alone")
    if spec.async_ is not None and not use_vllm:
        raise UserError(f"{source}: rollouts.async: TRL's asynchronous trainer generates with vLLM; set "
                        "rollouts.engine: vllm")
    out: dict = {}
    if use_vllm and spec.async_ is None and grpo.get("vllm_mode", "colocate") != "colocate":
        # TRL's server mode talks to a `trl vllm-serve` process the user starts; rlaif starts none, and the
        # stale-weight guard cannot reach that engine. rollouts.async is the server mode rlaif runs (it starts the
        # policy's server itself)
        raise UserError(f"{source}: grpo.vllm_mode: {grpo['vllm_mode']}: rlaif runs vLLM rollouts in the training "
                        "process (colocate) or, with rollouts.async, from a vLLM server it starts itself; TRL's "
                        "server mode needs a `trl vllm-serve` that rlaif does not start and whose weights its "
                        "stale-weight guard cannot check. Remove grpo.vllm_mode, or set rollouts.async")
    if use_vllm:
        out["use_vllm"] = True
        out["vllm_mode"] = grpo.get("vllm_mode", "colocate")
    if paged:
        out["use_transformers_continuous_batching"] = True
    return out

