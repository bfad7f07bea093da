"""The Bedrock job for the same run: `rlaif nova job-config` prints the `CreateModelCustomizationJob` request (Nova),
or with `--target open-weight` the Files API upload and `fine_tuning.jobs.create` request of Bedrock's
OpenAI-compatible RFT for open-weight models (gpt-oss-20b, Qwen3-32B), and a runnable openai-SDK snippet."""
from __future__ import annotations

import pprint
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


OPEN_WEIGHT_MODELS = ("openai.gpt-oss-20b", "qwen.qwen3-32b", "qwen.qwen3-32b-v1:0")
FILE_ID = "<TRAINING_FILE_ID>"  # what files.create returns; the snippet fills it in


def open_weight_job(recipe: Recipe, training_file: str = FILE_ID) -> dict:
    """The `fine_tuning.jobs.create` parameters for the same run on Bedrock's open-weight RFT. The grader is the
    reward Lambda (`{"type": "lambda", "lambda": {"function": ARN}}`, a grader type the openai SDK's types do not
    list, which it sends as given). No suffix (Bedrock: not supported) and no validation file (not documented)."""
    ow = recipe.nova.open_weight
    if ow.base_model not in OPEN_WEIGHT_MODELS:
        raise UserError(f"{recipe.source}: nova.open_weight.base_model {ow.base_model!r} is not a model Bedrock's "
                        f"open-weight RFT trains ({', '.join(OPEN_WEIGHT_MODELS[:2])})")
    hp = {k: v for k, v in ow.hyperparameters.model_dump().items() if v is not None}
    return {"model": ow.base_model, "training_file": training_file,
            "method": {"type": "reinforcement",
                       "reinforcement": {"grader": {"type": "lambda", "lambda": {"function": ow.lambda_arn}},
                                         "hyperparameters": hp}}}


def open_weight_config(recipe: Recipe) -> dict:
    """What `job-config --target open-weight` prints: the upload, then the job."""
    ow = recipe.nova.open_weight
    return {"endpoint": f"https://bedrock-mantle.{ow.region}.api.aws/v1",
            "files_create": {"file": str(recipe.data.train), "purpose": "fine-tune"},
            "jobs_create": open_weight_job(recipe)}


def open_weight_snippet(recipe: Recipe) -> str:
    """A short runnable Python program: upload the training data, create the job, print its id."""
    cfg = open_weight_config(recipe)
    job = {k: v for k, v in cfg["jobs_create"].items() if k != "training_file"}
    return f"""# Bedrock's open-weight RFT for {recipe.name}. Needs: pip install openai; export OPENAI_API_KEY=<Bedrock API key>
import os

from openai import OpenAI

JOB = {pprint.pformat(job, sort_dicts=False, width=100)}

client = OpenAI(base_url=os.environ.get("OPENAI_BASE_URL", {cfg["endpoint"]!r}))
with open({cfg["files_create"]["file"]!r}, "rb") as f:
    training = client.files.create(file=f, purpose="fine-tune")
job = client.fine_tuning.jobs.create(training_file=training.id, **JOB)
print(job.id)
"""
