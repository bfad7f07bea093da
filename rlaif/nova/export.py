"""`rlaif nova export-lambda RECIPE.yaml --out DIR`: the recipe's reward as a Bedrock reward Lambda.

The Lambda is one self-contained `lambda_function.py` (standard library and boto3, as the Lambda runtime gives)
plus a deployment README. It computes the recipe's whole reward: its judge sources (rubric, checks and a record's
own criteria), its verifiable rules, and its Python sources whose module is a single standard-library file (carried
whole), combined as in training. What it cannot carry is refused by name at export: a judge source with a judge
model of its own, a reward Lambda source, a Python module that imports beyond the standard library or is a package,
pairwise mode, checks that need a tokenizer. It judges in verdict mode: Bedrock's Converse API returns text, not
token logprobs, so each sample (each item, for a per-item rubric) gets one JSON verdict with every criterion,
constrained by Converse's structured outputs where the judge model supports them. The code that decides a reward
(sample fencing, the verdict parser, the formula evaluator, the aggregation, the checks, the verifiable rules, the
combination of sources, the response shape) is rlaif/portable, carried whole into the file, so given the same judge
replies the Lambda and rlaif (`rlaif reward score`, or `rlaif judge score` for the judge alone, with
--set judge.mode=verdict) give the same rewards; tests hold them to it.
"""
from __future__ import annotations

import ast
import json
import pprint
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

from rlaif import portable
from rlaif.config.recipe import Recipe
from rlaif.config.rewards import JudgeSourceSpec, PythonSourceSpec, VerifiableSourceSpec
from rlaif.config.rubric import load_rubric
from rlaif.data.dataset import read_records
from rlaif.errors import UserError
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


def judge_config(recipe: Recipe, spec: JudgeSourceSpec, notes: list[str]) -> dict:
    """What the Lambda needs of one judge source: its rubric (the recipe's unless it names its own), judged in
    verdict mode by the recipe's judge model. Refuses what the Lambda cannot do; adds to `notes` what it does
    differently."""
    where = f"{recipe.source}: rewards '{spec.name}'" if recipe.rewards is not None else f"{recipe.source}: judge"
    if spec.judge is not None:
        raise UserError(f"{where}: a judge of its own ({spec.judge.model}) cannot be exported: the Lambda calls one "
                        "Bedrock judge model (JUDGE_MODEL_ID); give this source the recipe's judge, or remove it from "
                        "the recipe you export")
    rubric = load_rubric(spec.rubric or recipe.rubric, where=f"{recipe.source}: rubric")
    mode = spec.mode or recipe.judge.mode
    if mode == "pairwise":
        raise UserError(f"{where}: judge.mode: pairwise cannot be exported: a Bedrock reward Lambda scores one "
                        "sample at a time. Use --set judge.mode=verdict")
    if mode == "logprob" and not any("Converse returns text" in n for n in notes):
        notes.append("judge.mode is logprob, but Converse returns text, not logprobs: the Lambda asks for one JSON "
                     "verdict per sample (verdict mode). Its rewards equal rlaif's with --set judge.mode=verdict.")
    return {
        "rubric": rubric.name,
        "system": rubric_prefix(rubric, "verdict"),
        "criteria": [{"name": c.name, "kind": c.kind, "weight": c.weight, "essential": c.essential}
                     for c in rubric.criteria],
        "pass_label": rubric.labels.pass_,
        "fail_label": rubric.labels.fail,
        "aggregation": rubric.aggregation,
        "formula": rubric.formula,
        "per_item": rubric.per_item,
        "uses_reference": any(c.uses_reference for c in rubric.criteria),
    }


def check_configs(recipe: Recipe) -> list[dict]:
    """The recipe's deterministic checks as the Lambda's StdlibCheck takes them; refuses what it cannot run."""
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
    return checks


def python_module(spec: PythonSourceSpec, where: str) -> str:
    """The source of a Python source's module, when the Lambda can carry it: a single file that imports the
    standard library only (the Lambda runtime has nothing else rlaif can vouch for). Refused by name otherwise."""
    module = spec.function.partition(":")[0]
    found = spec.find()
    origin = getattr(found, "origin", None)
    if found is None:
        raise UserError(f"{where}: {spec.function}: module {module} not found")
    if not origin or not origin.endswith(".py") or Path(origin).name == "__init__.py":
        raise UserError(f"{where}: {spec.function} cannot be bundled into the Lambda: its module {module} is "
                        f"{'a package' if getattr(found, 'submodule_search_locations', None) else 'not a Python file'}"
                        "; the Lambda carries a single-file module that imports the standard library only")
    text = Path(origin).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(text, filename=origin)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if isinstance(node, ast.ImportFrom) and node.level:
            raise UserError(f"{where}: {spec.function} cannot be bundled into the Lambda: {origin}:{node.lineno} "
                            "imports relatively, from a package; the Lambda carries one file")
        for name in names:
            if name.split(".")[0] not in sys.stdlib_module_names:
                raise UserError(f"{where}: {spec.function} cannot be bundled into the Lambda: {origin}:{node.lineno} "
                                f"imports {name}, which is not in the standard library (the Lambda runtime has the "
                                "standard library and boto3); keep the function in a module of its own that imports "
                                "the standard library only, or remove the source from the recipe you export")
    return text


def source_config(recipe: Recipe, spec, notes: list[str], judges: dict, modules: dict) -> dict:
    """One reward source as the Lambda computes it (judges and modules collect what the judge sources and the
    Python sources need)."""
    base = {"kind": spec.kind, "name": spec.name, "weight": spec.weight, "essential": spec.essential}
    where = f"{recipe.source}: rewards '{spec.name}'"
    if isinstance(spec, JudgeSourceSpec):
        judges[spec.name] = judge_config(recipe, spec, notes)
        return base
    if isinstance(spec, VerifiableSourceSpec):  # rlaif/portable/verifiable.py is in the Lambda
        return base | spec.model_dump(include={"check", "field", "tolerance", "pattern", "json_key"})
    if isinstance(spec, PythonSourceSpec):
        module, _, function = spec.function.partition(":")
        modules[module] = python_module(spec, where)
        return base | {"module": module, "function": function}
    raise UserError(f"{where if recipe.rewards is not None else recipe.source + ': reward.lambda_file'}: "
                    f"{spec.file} is a reward Lambda of its own: Bedrock calls one Lambda per job, so it is not "
                    "exported into this one; deploy that file as it is, or export a recipe without it")


def lambda_config(recipe: Recipe, model_id: str | None = None) -> tuple[dict, dict, list[str]]:
    """What the Lambda needs from the recipe, the Python modules it carries, and notices for the user: the
    recipe's whole reward (its `rewards:` sources, combined as in training), or its judge alone. Refuses what the
    Lambda cannot do."""
    notes: list[str] = []
    judges: dict[str, dict] = {}
    modules: dict[str, str] = {}
    sources = [source_config(recipe, spec, notes, judges, modules) for spec in recipe.reward_sources()]
    if judges and recipe.judge.calibration is not None:
        notes.append("judge.calibration is not carried: the Lambda's verdicts count as they are (0 or 1), "
                     "uncalibrated")
    if judges and recipe.judge.cascade is not None:
        notes.append("judge.cascade is not carried: the Lambda asks the one judge (JUDGE_MODEL_ID) for every verdict")
    config = {
        "recipe": recipe.name,
        # the judge alone answers with its criteria (as `rlaif judge score`); a recipe's rewards: with a Reward per
        # source (as `rlaif reward score`)
        "composed": recipe.rewards is not None,
        "model_id": model_id,
        "temperature": recipe.judge.temperature,
        "checks": check_configs(recipe) if judges else [],
        "judge_weight": recipe.judge.weight,
        "neutral_reward": recipe.judge.neutral_reward,
        "judges": judges,
        "sources": sources,
    }
    return config, modules, notes


def what_it_computes(config: dict) -> str:
    """The reward the Lambda computes, in a sentence for its docstring and README."""
    if not config["composed"]:
        (name, judge), = config["judges"].items()
        return (f"the judge: rubric `{judge['rubric']}` ({', '.join(c['name'] for c in judge['criteria'])}), "
                f"aggregation `{judge['aggregation']}`, {len(config['checks'])} deterministic check(s)")
    parts = []
    for s in config["sources"]:
        what = {"judge": lambda: f"judge, rubric `{config['judges'][s['name']]['rubric']}`",
                "verifiable": lambda: f"verifiable `{s['check']}` against `{s['field']}`",
                "python": lambda: f"Python `{s['module']}:{s['function']}`, bundled"}[s["kind"]]()
        parts.append(f"`{s['name']}` ({what}; weight {s['weight']:g}{', essential' if s['essential'] else ''})")
    return "the recipe's rewards: " + ", ".join(parts) + " (one source is the reward alone; several, their " \
        "weighted sum, 0 when an essential one is below 0.5)"


def render_lambda(config: dict, modules: dict[str, str], source: str) -> str:
    body = (Path(__file__).parent / "templates" / "lambda_body.py").read_text(encoding="utf-8")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = f'''"""Reward Lambda for Amazon Bedrock reinforcement fine-tuning, written by `rlaif nova export-lambda`.

Recipe: {config["recipe"]} ({source}); written {stamp}.
{textwrap.fill("It computes " + what_it_computes(config) + ".", 116, break_on_hyphens=False)}
Handler: lambda_function.lambda_handler. Standard library and boto3 only. See README.md beside this file.

Environment: JUDGE_MODEL_ID (the judge's Bedrock model id; required unless set at export),
JUDGE_CONCURRENCY (parallel judge calls, default 8), JUDGE_MAX_ATTEMPTS (default 4), JUDGE_TIMEOUT_S
(default 60), NEUTRAL_REWARD (on a failure, default {config["neutral_reward"]}), LOG_SAMPLES=1 to log
sample text (off by default), LOG_LEVEL.
"""
from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import inspect
import json
import logging
import math
import operator
import os
import random
import re
import sys
import time
import types
import unicodedata

CONFIG = {pprint.pformat(config, width=116, sort_dicts=False)}

# the Python sources' modules, carried whole: each is run when its function is first called
MODULE_SOURCES = {pprint.pformat(modules, width=116, sort_dicts=False)}

'''
    return header + portable_source() + "\n\n" + body


def deploy_readme(config: dict, notes: list[str]) -> str:
    notes_md = "".join(f"- {n}\n" for n in notes) or "- none\n"
    intro = f"Written by `rlaif nova export-lambda`. It computes {what_it_computes(config)}."
    if config["judges"]:
        intro += (" A judge is asked through Converse, one call per sample (per item for a per-item rubric), for a "
                  "JSON verdict with every criterion and the record's own criteria (`metadata.rubric`), retried with "
                  "exponential backoff and full jitter on throttling and 5xx.")
    if config["composed"]:
        intro += (" `aggregate_reward_score` is the sources' combination; `metrics_list` has a `Reward` entry per "
                  "source that scored the sample, by its name, and the `reward_failed` Metric: 1 when a source could "
                  "not score it (a judge that failed after retries, a function that raised or answered None), which "
                  f"then gets the neutral reward {config['neutral_reward']} in place of a reward, as Bedrock's "
                  "contract asks for a number.")
    else:
        intro += (" `aggregate_reward_score` is in [0, 1]; `metrics_list` has one `Reward` entry per criterion and "
                  "`Metric` entries for the checks and `judge_failed`. A judge that fails after retries gives the "
                  f"neutral reward {config['neutral_reward']}; an empty completion scores 0.")
    return f"""# Reward Lambda: {config['recipe']}

{textwrap.fill(intro, 116, break_on_hyphens=False)}

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
    config, modules, notes = lambda_config(recipe, model_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    code = render_lambda(config, modules, recipe.source)
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
