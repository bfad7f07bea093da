"""Recipes are data: one YAML file says everything about a run, validated before anything starts.

Precedence: `--set key=value` on the command line over the recipe file over the defaults below. Every error
names the recipe file and the field (`recipes/x.yaml: judge.modle: unknown key (typo?)`), so a typo never
turns into a silent default. The `grpo:` block goes to TRL's `GRPOConfig` as it is, after its keys are checked
against GRPOConfig's own fields (read from TRL's source: loading a recipe does not import TRL).
"""
from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer, model_validator

from rlaif.config.audit import AuditSpec
from rlaif.config.checks import Check
from rlaif.config.grpo_fields import grpo_config_fields
from rlaif.config.judge import JudgeSpec
from rlaif.config.labeling import LabelingSpec
from rlaif.config.lora import LoraSpec
from rlaif.config.reward_model import RewardModelTrainingSpec
from rlaif.config.nova import NovaSpec, grpo_settings
from rlaif.config.rewards import (RESERVED_NAMES, JudgeSourceSpec, LambdaSettings, LambdaSourceSpec, PythonSourceSpec,
                                  RewardSourceSpec)
from rlaif.config.rollouts import RolloutsSpec, grpo_rollout_settings
from rlaif.config.rubric import load_rubric
from rlaif.config.strict import Strict
from rlaif.config.train import TrainSpec
from rlaif.config.yaml import YAMLError, path_exists, read_yaml, yaml_load
from rlaif.errors import UserError, format_validation_error


class PolicySpec(Strict):
    model: str = Field(description="local folder or hub id of the policy")
    lora: LoraSpec | None = LoraSpec()
    # a reasoning policy (gpt-oss's harmony channels, Qwen3's <think>): each completion is parsed with the chat
    # template's response parser (TRL's, for the templates it knows), so rewards and evaluation see the final
    # answer alone. Without it the tokenizer drops the channel markers and the judge reads the thinking as answer.
    reasoning: bool = False


class DataSpec(Strict):
    train: str  # Nova RFT JSONL, or a Parquet/JSON/CSV table with `columns`
    eval: str | None = None
    columns: dict[str, str] | None = None  # for tables: {prompt|messages|system|reference_answer|id: column}


class EvalSpec(Strict):
    samples_per_prompt: int = Field(4, gt=0)
    temperature: float = Field(1.0, ge=0)
    max_new_tokens: int = Field(64, gt=0)
    seed: int = 1234
    max_prompts: int | None = None
    truth_regex: str | None = None  # a deterministic second opinion, e.g. (?i)\bplease\b
    judge_labels: str | None = None  # labelled samples for the judge audit before training
    second_judge: str | None = None  # a recipe whose judge + rubric give a second opinion (another prompt or judge)
    every_steps: int | None = Field(None, gt=0)  # validation during training: held-out reward every N steps
    val_prompts: int = Field(16, gt=0)  # held-out prompts sampled (samples_per_prompt each) per validation

    @model_validator(mode="after")
    def _regex_compiles(self):
        if self.truth_regex:
            try:
                re.compile(self.truth_regex)
            except re.error as e:
                raise ValueError(f"truth_regex does not compile: {e}") from None
        return self


class RewardSpec(LambdaSettings):
    """Bring your Lambda: a Bedrock reward Lambda file as the reward, instead of rlaif's judge reward."""
    lambda_file: str | None = None  # a Python file with lambda_handler(event, context); running it is your choice


class Recipe(Strict):
    name: str
    output_dir: str = "runs/${name}"
    seed: int = 0
    torch_threads: int | None = Field(None, gt=0)  # CPU threads for the trainer; None = torch's default
    policy: PolicySpec
    judge: JudgeSpec
    rubric: str | dict[str, Any]
    checks: list[Check] = []  # deterministic checks, run before the judge (rlaif/config/checks.py)
    data: DataSpec
    grpo: dict[str, Any] = {}
    eval: EvalSpec = EvalSpec()
    reward: RewardSpec = RewardSpec()
    # the sources of the reward and their weights (rlaif/config/rewards.py); default: the judge alone, or
    # reward.lambda_file alone
    rewards: list[RewardSourceSpec] | None = None
    train: TrainSpec = TrainSpec()  # stopping on a signal (rlaif/config/train.py)
    rollouts: RolloutsSpec = RolloutsSpec()  # how the policy generates in training (rlaif/config/rollouts.py)
    nova: NovaSpec = NovaSpec()  # Bedrock's hyperparameter names and job settings (rlaif/config/nova.py)
    audit: AuditSpec = AuditSpec()  # thresholds for `rlaif judge audit` (rlaif/config/audit.py)
    # `rlaif rm train`: a reward model from preference labels (rlaif/config/reward_model.py)
    reward_model_training: RewardModelTrainingSpec = RewardModelTrainingSpec()
    labeling: LabelingSpec = LabelingSpec()  # `rlaif label`'s defaults (rlaif/config/labeling.py)

    source: str = Field("<recipe>", exclude=True)

    @model_serializer(mode="wrap")
    def _without_secrets(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo):
        # what is written of a recipe (runs/NAME/recipe.resolved.json, and so an export's rlaif_recipe.json) or
        # shown of it holds no key: the judge's api_key, grpo.hub_token, a token in judge.serve.env
        return redact_secrets(handler(self))

    def __repr_args__(self):  # a recipe in a log or a traceback: as written, without its secrets
        return list(self.model_dump().items())

    @model_validator(mode="after")
    def _token_checks_use_the_policy_tokenizer(self):
        for c in self.checks:
            if getattr(c, "kind", None) == "length" and c.tokenizer is None \
                    and (c.min_tokens is not None or c.max_tokens is not None):
                c.tokenizer = self.policy.model
        return self

    @model_validator(mode="after")
    def _engine_from_trl_switches(self):
        # a recipe written for TRL alone (grpo.use_vllm: true) keeps working: its engine is vLLM
        if "engine" not in self.rollouts.model_fields_set:
            if self.grpo.get("use_vllm"):
                self.rollouts.engine = "vllm"
            elif self.grpo.get("use_transformers_continuous_batching"):
                self.rollouts.engine = "transformers-paged"
        return self

    @model_validator(mode="after")
    def _one_way_to_say_the_reward(self):
        if self.rewards is None:
            return self
        if self.reward.lambda_file:
            raise ValueError("give the reward Lambda as a `kind: lambda` entry of rewards:, not reward.lambda_file "
                             "as well")
        if not self.rewards:
            raise ValueError("rewards: needs at least one source (or leave it out: the judge is the reward)")
        names = [s.name for s in self.rewards]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rewards: source names must be unique (they name metrics); repeated: {', '.join(dup)}")
        if not any(s.weight > 0 for s in self.rewards):
            raise ValueError("rewards: every weight is 0; at least one source must count")
        reserved = sorted(set(names) & RESERVED_NAMES)
        if reserved:
            raise ValueError(f"rewards: {', '.join(reserved)}: a name rlaif uses itself (for the combined reward or a "
                             "column of the completions table); choose another")
        judges = [s for s in self.rewards if isinstance(s, JudgeSourceSpec)]
        for s in judges[1:]:
            if s.name in ("judge", "checks"):
                raise ValueError(f"rewards: '{s.name}': the first judge source's metrics are judge/* and checks/*; "
                                 "another judge source logs under its own name, so give it another")
        for i, s in enumerate(self.rewards):
            if isinstance(s, JudgeSourceSpec) and (s.judge is not None or s.mode is not None):
                effective = (s.judge or self.judge).model_dump() | ({"mode": s.mode} if s.mode else {})
                try:  # the source's judge as it will run: its own or the recipe's, in its own mode
                    JudgeSpec.model_validate(effective)
                except ValueError as e:
                    msg = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
                    raise ValueError(f"rewards[{i}] ({s.name}): {msg}") from None
        return self

    def template_kwargs(self) -> dict:
        """What the policy's chat template is given in training (grpo.chat_template_kwargs), for sampling outside
        the trainer (evaluation, validation) with the same prompt format."""
        kw = self.grpo.get("chat_template_kwargs") or {}
        return json.loads(kw) if isinstance(kw, str) else dict(kw)

    def reward_sources(self) -> list:
        """The reward's sources: the recipe's `rewards:`, or the judge alone, or `reward.lambda_file` alone."""
        if self.rewards is not None:
            return list(self.rewards)
        if self.reward.lambda_file:
            r = self.reward
            return [LambdaSourceSpec(kind="lambda", file=r.lambda_file,
                                     **r.model_dump(include=set(LambdaSettings.model_fields)))]
        return [JudgeSourceSpec(kind="judge")]

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir.replace("${name}", self.name))


SECRET_NAME = re.compile(r"secret|passw|credential|(^|_)(api_?key|token|auth)$", re.I)


def redact_secrets(data: Any) -> Any:
    """`data` with the value of every key named like a secret (api_key, HF_TOKEN, hub_token, ..._SECRET_...)
    replaced by "<redacted>"."""
    if isinstance(data, dict):
        return {k: "<redacted>" if isinstance(k, str) and SECRET_NAME.search(k) and isinstance(v, str) and v
                else redact_secrets(v) for k, v in data.items()}
    if isinstance(data, list):
        return [redact_secrets(v) for v in data]
    return data


def parse_overrides(pairs: list[str]) -> list[tuple[list[str], Any]]:
    out = []
    for p in pairs or []:
        if "=" not in p:
            raise UserError(f"--set {p!r}: expected key=value, e.g. --set judge.model=path/to/judge")
        key, val = p.split("=", 1)
        try:
            value = yaml_load(val) if val != "" else ""
        except YAMLError:
            value = val
        out.append((key.strip().split("."), value))
    return out


def _apply(data: dict, path: list[str], value: Any, flag: str) -> None:
    cur = data
    for k in path[:-1]:
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        if not isinstance(nxt, dict):
            raise UserError(f"--set {flag}: '{k}' is not a section of the recipe")
        cur = nxt
    cur[path[-1]] = value


def _check_grpo(block: dict, source: str) -> None:
    known = grpo_config_fields()
    for key in block:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"{source}: grpo.{key}: not a field of TRL's GRPOConfig{hint}")
    if "output_dir" in block:
        raise UserError(f"{source}: grpo.output_dir: set the recipe's top-level output_dir instead")


def looks_like_path(spec: str) -> bool:
    """Hub ids are `org/name`; anything else (./x, /x, a/b/c) must exist on disk."""
    return spec.startswith((".", "/", "~")) or spec.count("/") != 1


def check_paths(r: Recipe) -> None:
    src = r.source
    files = [("data.train", r.data.train), ("data.eval", r.data.eval), ("reward.lambda_file", r.reward.lambda_file)]
    files += [(f"rewards[{i}].file", s.file) for i, s in enumerate(r.rewards or []) if isinstance(s, LambdaSourceSpec)]
    files += [("judge.calibration", r.judge.calibration),
              ("judge.canaries.file", r.judge.canaries.file if r.judge.canaries else None)]
    for field_name, value in files:
        if value and not path_exists(value):
            raise UserError(f"{src}: {field_name}: file not found: {value}")
    models = [("policy.model", r.policy.model), ("judge.model", r.judge.model)]
    if r.judge.cascade is not None:
        models.append(("judge.cascade.judge.model", r.judge.cascade.judge.model))
    models += [(f"rewards[{i}].judge.model", s.judge.model) for i, s in enumerate(r.rewards or [])
               if isinstance(s, JudgeSourceSpec) and s.judge is not None]
    for field_name, value in models:
        if looks_like_path(value) and not path_exists(value, expand_user=True):
            hint = " (run `make models` to build the tiny models)" if "artifacts/tiny" in value else ""
            raise UserError(f"{src}: {field_name}: model folder not found: {value}{hint}")


def load_recipe(path: str | Path, overrides: list[str] | None = None, check_files: bool = True) -> Recipe:
    path = Path(path)
    if not path_exists(path):
        raise UserError(f"recipe not found: {path}")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a YAML mapping")
    for keys, value in parse_overrides(overrides or []):
        _apply(data, keys, value, ".".join(keys))
    try:
        recipe = Recipe.model_validate(data | {"source": str(path)})
    except Exception as e:  # pydantic.ValidationError
        raise UserError(format_validation_error(e, str(path))) from None
    _check_grpo(recipe.grpo, str(path))
    grpo_settings(recipe.nova.hyperparameters, recipe.grpo, has_eval=bool(recipe.data.eval), source=str(path))
    grpo_rollout_settings(recipe.rollouts, recipe.grpo, str(path))
    rubrics = [("rubric", recipe.rubric)] + [(f"rewards[{i}].rubric", s.rubric) for i, s in
                                             enumerate(recipe.rewards or []) if getattr(s, "rubric", None)]
    for where, rubric in rubrics:
        try:
            load_rubric(rubric, where=f"{path}: {where}")  # fail now, not mid-run
        except UserError as e:  # a rubric file's own error names that file: say which recipe pointed at it
            if str(path) in str(e):
                raise
            raise UserError(f"{path}: {where}: {e}") from None
    for i, s in enumerate(recipe.rewards or []):
        if isinstance(s, PythonSourceSpec):
            s._folder = str(path.resolve().parent)
            try:
                s.check()  # a module that is not there stops the run now; its code runs only when the reward is built
            except ValueError as e:
                raise UserError(f"{path}: rewards[{i}].function: {e}") from None
    if check_files:
        check_paths(recipe)
    return recipe
