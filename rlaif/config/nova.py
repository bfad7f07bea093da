"""The `nova:` block of a recipe: Bedrock's RFT hyperparameters, mapped to TRL GRPO settings, and what the
Bedrock job configuration needs (`rlaif nova job-config`, rlaif/nova/job_config.py).

    nova:
      hyperparameters: {epochCount: 2, batchSize: 64, learningRate: 1.0e-5, trainingSamplePerPrompt: 4,
                        inferenceMaxTokens: 1024, maxPromptLength: 4096, evalInterval: 10}

| Bedrock (rftConfig.hyperParameters) | TRL GRPOConfig / rlaif                                                     |
|-------------------------------------|----------------------------------------------------------------------------|
| epochCount                          | num_train_epochs                                                           |
| batchSize (prompts per round)       | generation_batch_size = batchSize x trainingSamplePerPrompt completions;   |
|                                     | per_device_train_batch_size (unless grpo: says) at most 8, and             |
|                                     | gradient_accumulation_steps so one optimiser step sees the whole round     |
| learningRate                        | learning_rate                                                              |
| trainingSamplePerPrompt             | num_generations (the GRPO group size)                                      |
| inferenceMaxTokens                  | max_completion_length                                                      |
| maxPromptLength                     | rlaif drops longer prompts (policy tokenizer, chat template), counted      |
| evalInterval                        | eval_strategy "steps", eval_steps (needs data.eval)                        |
| reasoningEffort                     | no TRL twin: recorded for the job configuration only                       |

A key set both here and in `grpo:` is an error, so a recipe never says two things.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from rlaif.config.strict import Strict
from rlaif.errors import UserError

# completions a device takes per forward/backward when the recipe does not say (TRL's own default): Bedrock's batchSize
# is a whole round (64 prompts x 8 samples = 512 completions), which one GPU cannot hold; accumulation covers the rest
MAX_PER_DEVICE = 8

# the ranges of Bedrock's API (botocore's RFTHyperParameters); `job-config` holds a recipe to them
BEDROCK_RANGES = {"epochCount": (1, 50), "batchSize": (16, 512), "learningRate": (1e-7, 1e-3),
                  "trainingSamplePerPrompt": (2, 16), "evalInterval": (1, 100)}


class NovaHyperparameters(Strict):
    """Bedrock's names. Locally any positive value is accepted (a smoke run uses small batches); `rlaif nova
    job-config` checks Bedrock's own ranges."""
    epochCount: int | None = Field(None, gt=0)
    batchSize: int | None = Field(None, gt=0)
    learningRate: float | None = Field(None, gt=0)
    trainingSamplePerPrompt: int | None = Field(None, ge=2)
    inferenceMaxTokens: int | None = Field(None, gt=0)
    maxPromptLength: int | None = Field(None, gt=0)
    evalInterval: int | None = Field(None, gt=0)
    reasoningEffort: Literal["low", "medium", "high"] | None = None


class OpenWeightHyperparameters(Strict):
    """Bedrock's open-weight RFT (OpenAI-compatible `fine_tuning.jobs.create`) hyperparameters. Bedrock documents
    n_epochs, batch_size and learning_rate_multiplier (its examples: 1, 4, 1.0) and no ranges; the others are the
    openai SDK's reinforcement hyperparameters, which Bedrock does not document for these models: sent only when
    set. docs/nova.md has the sources."""
    # defaults: the values of every AWS example (no defaults or ranges are documented)
    n_epochs: int = Field(1, gt=0)
    batch_size: int = Field(4, gt=0)  # prompts per training step
    learning_rate_multiplier: float = Field(1.0, gt=0)  # Bedrock advises < 1.0 for stability
    reasoning_effort: Literal["default", "low", "medium", "high"] | None = None
    eval_interval: int | None = Field(None, gt=0)
    eval_samples: int | None = Field(None, gt=0)
    compute_multiplier: float | None = Field(None, gt=0)


class OpenWeightSpec(Strict):
    """The open-weight Bedrock twin of the run (`rlaif nova job-config --target open-weight`): the base model Bedrock
    trains, the reward Lambda it calls, and the job's hyperparameters."""
    # the documented ids (us-west-2 only); AWS's Qwen notebook uses qwen.qwen3-32b-v1:0
    base_model: str = "openai.gpt-oss-20b"
    region: str = "us-west-2"
    lambda_arn: str = "arn:aws:lambda:us-west-2:<ACCOUNT_ID>:function:<REWARD_FUNCTION>"
    hyperparameters: OpenWeightHyperparameters = OpenWeightHyperparameters()


class NovaSpec(Strict):
    """Bedrock terms for the run, and what `rlaif nova job-config` needs (placeholders where left out)."""
    hyperparameters: NovaHyperparameters = NovaHyperparameters()
    open_weight: OpenWeightSpec = OpenWeightSpec()  # the same run as an open-weight Bedrock job
    base_model: str = "amazon.nova-2-lite-v1:0:256k"
    role_arn: str = "arn:aws:iam::<ACCOUNT_ID>:role/<BEDROCK_RFT_ROLE>"
    lambda_arn: str = "arn:aws:lambda:us-east-1:<ACCOUNT_ID>:function:<REWARD_FUNCTION>"
    s3_prefix: str = "s3://<BUCKET>/<PREFIX>"


def per_device_batch(completions: int, world_size: int) -> int:
    """The largest per-device batch up to MAX_PER_DEVICE that the round divides into evenly (its processes x the
    accumulation steps); the round's own share when none does (then the caller says the round is uneven)."""
    share = max(1, completions // world_size)
    return next((d for d in range(min(MAX_PER_DEVICE, share), 0, -1) if completions % (d * world_size) == 0),
                math.ceil(completions / world_size))


def grpo_settings(hp: NovaHyperparameters, grpo: dict, *, world_size: int = 1, has_eval: bool = False,
                  source: str = "<recipe>") -> tuple[dict, list[tuple[str, str, str]]]:
    """GRPOConfig keys from Bedrock's hyperparameters, and rows (bedrock, grpo, value) for the log/table."""
    out: dict = {}
    rows: list[tuple[str, str, str]] = []

    def put(bedrock: str, key: str, value) -> None:
        if key in grpo:
            raise UserError(f"{source}: grpo.{key} and nova.hyperparameters.{bedrock} both set it; keep one")
        out[key] = value
        rows.append((bedrock, key, str(value)))

    if hp.epochCount is not None:
        put("epochCount", "num_train_epochs", hp.epochCount)
    if hp.learningRate is not None:
        put("learningRate", "learning_rate", hp.learningRate)
    group = hp.trainingSamplePerPrompt or grpo.get("num_generations")
    if hp.trainingSamplePerPrompt is not None:
        put("trainingSamplePerPrompt", "num_generations", hp.trainingSamplePerPrompt)
    if hp.batchSize is not None:
        if not group:
            group = 8  # TRL's default group size
        completions = hp.batchSize * group
        put("batchSize", "generation_batch_size", completions)
        per_device = grpo.get("per_device_train_batch_size")
        if per_device is None:
            per_device = per_device_batch(completions, world_size)
            put("batchSize", "per_device_train_batch_size", per_device)
        accum, rem = divmod(completions, per_device * world_size)
        if rem:
            raise UserError(f"{source}: nova.hyperparameters.batchSize {hp.batchSize} x {group} samples per prompt = "
                            f"{completions} completions per round, not a multiple of per_device_train_batch_size "
                            f"{per_device} x {world_size} process(es)")
        put("batchSize", "gradient_accumulation_steps", accum)
    if hp.inferenceMaxTokens is not None:
        put("inferenceMaxTokens", "max_completion_length", hp.inferenceMaxTokens)
    if hp.evalInterval is not None:
        if has_eval:
            put("evalInterval", "eval_strategy", "steps")
            put("evalInterval", "eval_steps", hp.evalInterval)
        else:
            rows.append(("evalInterval", "(none)", "ignored: the recipe has no data.eval"))
    if hp.maxPromptLength is not None:
        rows.append(("maxPromptLength", "(rlaif)", f"prompts over {hp.maxPromptLength} tokens are dropped"))
    if hp.reasoningEffort is not None:
        rows.append(("reasoningEffort", "(none)", "no TRL twin; kept for the job configuration"))
    return out, rows
