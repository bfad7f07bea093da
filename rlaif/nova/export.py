"""`rlaif nova export-lambda RECIPE.yaml --out DIR`: the recipe's rubric and checks as a Bedrock reward Lambda.

The Lambda is one self-contained `lambda_function.py` (standard library and boto3, as the Lambda runtime gives)
plus a deployment README. It judges in verdict mode: Bedrock's Converse API returns text, not token logprobs,
so each sample (each item, for a per-item rubric) gets one JSON verdict with every criterion, constrained by
Converse's structured outputs where the judge model supports them. The code that decides a reward (sample
fencing, the verdict parser, the formula evaluator, the aggregation, the checks, the response shape) is
rlaif/portable, carried whole into the file, so given the same judge replies the Lambda and
`rlaif judge score --set judge.mode=verdict` give the same rewards; a test holds them to it.
"""
from __future__ import annotations

import ast
import json
import pprint
from datetime import datetime, timezone
from pathlib import Path

from rlaif import portable
from rlaif.config.recipe import Recipe
from rlaif.config.rubric import load_rubric
from rlaif.data.dataset import read_records
from rlaif.errors import UserError
from rlaif.judge import verdict
from rlaif.judge.prompt import rubric_prefix
from rlaif.portable.checks import STDLIB_KINDS
from rlaif.rewards.lambda_source import event_of
from rlaif.rewards.source import batch_samples

SCHEMA_KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "minLength",
                   "maxLength", "pattern", "minimum", "maximum", "minItems", "maxItems",
                   # annotations: no effect on validation
                   "title", "description", "$schema", "default", "examples", "$comment"}


def portable_source() -> str:
    """The modules of rlaif/portable, whole and in order, as one block of code: each under a comment naming it
    (in place of its docstring), without the imports between them and `from __future__` (the file has its own)."""
    parts = []
    for name in portable.MODULES:
        path = Path(portable.__file__).parent / f"{name}.py"
        src = path.read_text(encoding="utf-8")
        tree = ast.parse(src)
        lines = src.splitlines()
        drop: set[int] = set()
        for i, node in enumerate(tree.body):
            doc = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            ours = isinstance(node, ast.ImportFrom) and (node.module == "__future__"
                                                         or (node.module or "").startswith("rlaif"))
            if doc or ours:
                drop.update(range(node.lineno - 1, node.end_lineno))
        body = "\n".join(ln for k, ln in enumerate(lines) if k not in drop).strip()
        parts.append(f"# -- rlaif/portable/{name}.py {'-' * (96 - len(name))}\n{body}\n")
    return "\n\n".join(parts)


def _schema_problems(schema, where="schema") -> list[str]:
    if not isinstance(schema, dict):
        return []
    probs = [f"{where}.{k}" for k in schema if k not in SCHEMA_KEYWORDS]
    for k, v in (schema.get("properties") or {}).items():
        probs += _schema_problems(v, f"{where}.properties.{k}")
    for key in ("items", "additionalProperties"):
        probs += _schema_problems(schema.get(key), f"{where}.{key}")
    return probs


def lambda_config(recipe: Recipe, model_id: str | None = None) -> tuple[dict, list[str]]:
    """What the Lambda needs from the recipe, and notices for the user. Refuses what the Lambda cannot do."""
    rubric = load_rubric(recipe.rubric, where=f"{recipe.source}: rubric")
    notes = []
    if recipe.judge.mode == "pairwise":
        raise UserError(f"{recipe.source}: judge.mode: pairwise cannot be exported: a Bedrock reward Lambda scores "
                        "one sample at a time. Use --set judge.mode=verdict")
    if recipe.judge.mode == "logprob":
        notes.append("judge.mode is logprob, but Converse returns text, not logprobs: the Lambda asks for one JSON "
                     "verdict per sample (verdict mode). Its rewards equal `rlaif judge score --set judge.mode=verdict`.")
    checks = []
    for i, c in enumerate(recipe.checks):
        spec = c.model_dump(by_alias=True, exclude_none=True)
        if c.kind not in STDLIB_KINDS:
            raise UserError(f"{recipe.source}: checks[{i}] ({c.kind}): not available in a Lambda, which has only the "
                            "standard library and boto3; remove it from the recipe you export")
        if c.kind == "length" and (c.min_tokens is not None or c.max_tokens is not None):
            raise UserError(f"{recipe.source}: checks[{i}]: token bounds need the policy's tokenizer, which a Lambda "
                            "does not have; use min/max_chars or min/max_words")
        if c.kind == "json_schema" and (probs := _schema_problems(spec["schema"])):
            raise UserError(f"{recipe.source}: checks[{i}]: the Lambda's JSON Schema validator does not support "
                            f"{', '.join(probs)}")
        spec.pop("tokenizer", None)
        checks.append(spec)
    config = {
        "recipe": recipe.name,
        "rubric": rubric.name,
        "model_id": model_id,
        "system": rubric_prefix(rubric, "verdict"),
        "schema": verdict.schema(rubric),
        "structured_output": True,
        "max_tokens": verdict.request_params(rubric)["max_tokens"],
        "temperature": recipe.judge.temperature,
        "criteria": [{"name": c.name, "kind": c.kind, "weight": c.weight, "essential": c.essential}
                     for c in rubric.criteria],
        "pass_label": rubric.labels.pass_,
        "fail_label": rubric.labels.fail,
        "aggregation": rubric.aggregation,
        "formula": rubric.formula,
        "per_item": rubric.per_item,
        "uses_reference": any(c.uses_reference for c in rubric.criteria),
        "checks": checks,
        "judge_weight": recipe.judge.weight,
        "neutral_reward": recipe.judge.neutral_reward,
    }
    return config, notes


def render_lambda(config: dict, source: str) -> str:
    body = (Path(__file__).parent / "templates" / "lambda_body.py").read_text(encoding="utf-8")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = f'''"""Reward Lambda for Amazon Bedrock reinforcement fine-tuning, written by `rlaif nova export-lambda`.

Recipe: {config["recipe"]} ({source}); rubric: {config["rubric"]}; written {stamp}.
Handler: lambda_function.lambda_handler. Standard library and boto3 only. See README.md beside this file.

Environment: JUDGE_MODEL_ID (the judge's Bedrock model id; required unless set at export),
JUDGE_CONCURRENCY (parallel judge calls, default 8), JUDGE_MAX_ATTEMPTS (default 4), JUDGE_TIMEOUT_S
(default 60), NEUTRAL_REWARD (on judge failure, default {config["neutral_reward"]}), LOG_SAMPLES=1 to log
sample text (off by default), LOG_LEVEL.
"""
from __future__ import annotations

import ast
import concurrent.futures
import json
import logging
import math
import operator
import os
import random
import re
import time
import unicodedata

CONFIG = {pprint.pformat(config, width=116, sort_dicts=False)}

'''
    return header + portable_source() + "\n\n" + body


def deploy_readme(config: dict, notes: list[str]) -> str:
    crit = ", ".join(c["name"] for c in config["criteria"])
    notes_md = "".join(f"- {n}\n" for n in notes) or "- none\n"
    return f"""# Reward Lambda: {config['recipe']}

Written by `rlaif nova export-lambda`. Rubric `{config['rubric']}` ({crit}); {len(config['checks'])} deterministic
check(s); aggregation `{config['aggregation']}`. One Converse call per sample (per item for a per-item rubric), a JSON
verdict with every criterion; `aggregate_reward_score` in [0, 1]; `metrics_list` has one `Reward` entry per criterion
and `Metric` entries for the checks and `judge_failed`. A judge that fails after retries (exponential backoff with
full jitter on throttling and 5xx) gives the neutral reward {config['neutral_reward']}; an empty completion scores 0.

Notes from the export:
{notes_md}
## Deploy
- Runtime: Python 3.12 (or 3.11/3.13); handler `lambda_function.lambda_handler`; upload `lambda_function.py` alone.
- Environment: `JUDGE_MODEL_ID` = the judge's model id (e.g. `us.amazon.nova-2-lite-v1:0` or
  `openai.gpt-oss-120b-1:0`); optional `JUDGE_CONCURRENCY` (8), `JUDGE_MAX_ATTEMPTS` (4), `JUDGE_TIMEOUT_S` (60),
  `NEUTRAL_REWARD`, `LOG_SAMPLES=1` (logs sample text; off by default), `LOG_LEVEL`.
- Timeout: Bedrock and SageMaker send batches (SageMaker: 64 samples per call). 64 samples / 8 parallel calls x
  2-10 s per verdict is 16-80 s: set 300 s (the 3 s default always times out; the maximum is 900 s).
- Memory: 512 MB (the work is network-bound; more memory also buys more CPU for JSON and regexes).
- Concurrency: reserve at least the trainer's Lambda concurrency (SageMaker training jobs: 12 by default; HyperPod:
  up to 100), and keep JUDGE_CONCURRENCY x Lambda concurrency within the judge model's Bedrock quota
  (requests and tokens per minute), or throttling will turn into neutral rewards.
- IAM, the Lambda's execution role: `bedrock:InvokeModel` on the judge model (Converse needs it; for an inference
  profile, on the profile and its models), plus `AWSLambdaBasicExecutionRole` for CloudWatch logs.
- IAM, Bedrock's RFT job role: `lambda:InvokeFunction` on this function (its ARN goes in
  `graderConfig.lambdaGrader.lambdaArn`; `rlaif nova job-config` prints the job configuration). HyperPod
  needs "SageMaker" in the function name.

## Try it locally, against the open judge
```bash
rlaif nova gateway --judge RECIPE.yaml --port 8089 &      # Bedrock Converse on 127.0.0.1, backed by the judge
export AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:8089 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \\
       AWS_DEFAULT_REGION=us-east-1 JUDGE_MODEL_ID=any
python -c "import json, lambda_function as f; print(f.lambda_handler(json.load(open('event.json')), None))"
```
"""


def export_lambda(recipe: Recipe, out_dir: str | Path, model_id: str | None = None) -> tuple[Path, list[str]]:
    config, notes = lambda_config(recipe, model_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    code = render_lambda(config, recipe.source)
    compile(code, "lambda_function.py", "exec")  # a broken file is our bug: fail here, not in AWS
    path = out / "lambda_function.py"
    path.write_text(code, encoding="utf-8")
    (out / "README.md").write_text(deploy_readme(config, notes), encoding="utf-8")
    (out / "event.json").write_text(json.dumps(example_event(recipe), indent=2, ensure_ascii=False), encoding="utf-8")
    return path, notes


def example_event(recipe: Recipe) -> list[dict]:
    """Two samples in the shape Bedrock sends, from the recipe's training data, to try the Lambda with."""
    try:
        res = read_records(recipe.data.train, recipe.data.columns)
    except UserError:
        res = None
    records = res.records[:2] if res and res.records else [{"id": "example", "metadata": "{}", "nova_reference": None,
                                                            "prompt": [{"role": "user", "content": "Say hello."}]}]
    # the records as TRL hands them to a reward: a batch of columns, the same conversion as in training
    columns = {k: [r[k] for r in records] for k in ("id", "metadata", "nova_reference")}
    samples = batch_samples([r["prompt"] for r in records], ["(the policy's completion goes here)"] * len(records),
                            columns)
    return event_of(samples)
