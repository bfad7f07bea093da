"""The Bedrock job for the same run: `rlaif nova job-config` prints the `CreateModelCustomizationJob` request."""
from __future__ import annotations

from pathlib import Path

from rlaif.config.nova import BEDROCK_RANGES
from rlaif.config.recipe import Recipe
from rlaif.errors import UserError


def job_config(recipe: Recipe) -> dict:
    """The `CreateModelCustomizationJob` request for the same run (Bedrock's reinforcement fine-tuning)."""
    nova = recipe.nova
    hp = {k: v for k, v in nova.hyperparameters.model_dump().items() if v is not None}
    for key, (lo, hi) in BEDROCK_RANGES.items():
        if key in hp and not lo <= hp[key] <= hi:
            raise UserError(f"{recipe.source}: nova.hyperparameters.{key} {hp[key]} is outside Bedrock's range "
                            f"{lo}..{hi}; Bedrock would refuse the job")
    prefix = nova.s3_prefix.rstrip("/")
    cfg = {
        "jobName": f"{recipe.name}-rft",
        "customModelName": f"{recipe.name}-rft",
        "roleArn": nova.role_arn,
        "baseModelIdentifier": nova.base_model,
        "customizationType": "REINFORCEMENT_FINE_TUNING",
        "trainingDataConfig": {"s3Uri": f"{prefix}/{Path(recipe.data.train).name}"},
        "outputDataConfig": {"s3Uri": f"{prefix}/output/"},
        "customizationConfig": {"rftConfig": {"graderConfig": {"lambdaGrader": {"lambdaArn": nova.lambda_arn}},
                                              "hyperParameters": hp}},
    }
    if recipe.data.eval:
        cfg["validationDataConfig"] = {"validators": [{"s3Uri": f"{prefix}/{Path(recipe.data.eval).name}"}]}
    return cfg
