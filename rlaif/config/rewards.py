"""The `rewards:` block of a recipe: the sources of the reward and how they combine.

    rewards:
      - {kind: judge, name: polite, weight: 1.0}             # the recipe's judge and rubric (or its own: rubric,
                                                             #   mode, judge)
      - {kind: verifiable, name: topic, check: reference_contained, field: topic, weight: 1.0}
      - {kind: python, name: brevity, function: my_rewards:brevity, weight: 0.5}
      - {kind: lambda, name: grader, file: rewards/my_lambda.py}   # a Bedrock reward Lambda, as reward.lambda_file
      - {kind: reward_model, name: rm, model: runs/x-rm}     # a reward model (`rlaif rm train`), vLLM-served or
                                                             #   in process (backend: transformers)

Sources combine as a weighted sum, or, when any source is `essential: true`, through a gate: a sample that fails
an essential source (its reward below 0.5) gets 0, the others the weighted sum (rlaif/rewards/combined.py). Without
`rewards:`, the reward is the recipe's judge (named `judge`), or its `reward.lambda_file` (named `lambda`), as
before. A failed call is counted, as the judge's are; a sample that any source could not score is left out of a
combined reward (None), whatever that source's own fallback (a Lambda's neutral 0.5 applies only when it is the
whole reward).
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal, Union

from pydantic import Field, PrivateAttr, field_validator, model_validator

from rlaif.config.judge import JudgeSpec, LocalJudgeSpec, ServeSpec, header_safe_key
from rlaif.config.strict import Strict
from rlaif.portable.verifiable import VERIFIABLE_CHECKS

NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"  # it names metrics: reward/<name>/mean
# names a source cannot take: the combined reward's, and the completions table's own columns
RESERVED_NAMES = frozenset({"combined", "prompt", "completion", "step", "advantage", "reward", "rewards",
                            "judge_scores", "judge_rationale", "reward_failed"})


class _Source(Strict):
    name: str = Field(pattern=NAME)
    weight: float = Field(1.0, ge=0, allow_inf_nan=False)  # its share of the weighted sum
    essential: bool = False  # failing it (reward below 0.5) zeroes the sample's reward (a gate)


class JudgeSourceSpec(_Source):
    """An LLM judge: the recipe's judge and rubric unless this source names its own."""
    kind: Literal["judge"]
    name: str = Field("judge", pattern=NAME)
    rubric: str | dict[str, Any] | None = None  # default: the recipe's rubric
    mode: Literal["logprob", "verdict", "pairwise"] | None = None  # default: the recipe's judge.mode
    judge: JudgeSpec | None = None  # default: the recipe's judge (served once for every source that shares it)


class VerifiableSourceSpec(_Source):
    """A rule against a known answer (rlaif/portable/verifiable.py): the record's reference_answer or a field."""
    kind: Literal["verifiable"]
    check: Literal[VERIFIABLE_CHECKS]  # type: ignore[valid-type]
    field: str = "reference_answer"  # or a key the records carry beside messages (kept as their metadata)
    tolerance: float = Field(1e-6, ge=0, allow_inf_nan=False)  # numeric_match: relative and absolute
    pattern: str | None = None  # regex: `{answer}` stands for the answer, escaped
    json_key: str | None = None  # json_field_equals: the completion's field that must equal the answer

    @model_validator(mode="after")
    def _fields_for_the_check(self):
        if self.check == "json_field_equals" and not self.json_key:
            raise ValueError("check json_field_equals needs json_key (the completion's field to compare)")
        if self.check == "regex":
            if not self.pattern:
                raise ValueError("check regex needs a pattern (`{answer}` stands for the answer)")
            try:
                re.compile(self.pattern.replace("{answer}", "answer"))
            except re.error as e:
                raise ValueError(f"pattern does not compile: {e}") from None
        return self


@contextlib.contextmanager
def search_path(folders: tuple[str, ...]):
    """sys.path with `folders` added at its end for the duration, and without them after (what the imported code
    itself added stays): the `rlaif` command, unlike `python -m`, does not put the working directory there."""
    added = [f for f in dict.fromkeys(folders) if f not in sys.path]
    sys.path.extend(added)
    try:
        yield
    finally:
        for f in added:
            if f in sys.path:
                sys.path.remove(f)


def _child(locations: list[str], name: str) -> SimpleNamespace | None:
    """A package's submodule `name` in its folders, looked up as files (a regular package, a module file, else a
    namespace package): importlib's finders would import the parents first."""
    for loc in locations:
        folder = Path(loc) / name
        if (folder / "__init__.py").is_file():
            return SimpleNamespace(origin=str(folder / "__init__.py"), submodule_search_locations=[str(folder)])
        for suffix in importlib.machinery.all_suffixes():
            if (Path(loc) / f"{name}{suffix}").is_file():
                return SimpleNamespace(origin=str(Path(loc) / f"{name}{suffix}"), submodule_search_locations=None)
    folders = [str(Path(loc) / name) for loc in locations if (Path(loc) / name).is_dir()]
    return SimpleNamespace(origin=None, submodule_search_locations=folders) if folders else None


def find_module(name: str):
    """Where `name` would be imported from (its spec: `origin`, `submodule_search_locations`), or None; found
    without running any of its code, nor its packages' `__init__` (importlib.util.find_spec imports the parents
    of a dotted name)."""
    parts = name.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name is found without running anything
    except (ImportError, ValueError):
        return None
    for i in range(1, len(parts)):
        module = sys.modules.get(".".join(parts[:i + 1]))  # imported already (os.path is no file of os's)
        if module is not None:
            spec = getattr(module, "__spec__", None) or SimpleNamespace(origin=None, submodule_search_locations=None)
        elif spec is None or not spec.submodule_search_locations:
            return None
        else:
            spec = _child(list(spec.submodule_search_locations), parts[i])
    return spec


def may_define(spec, name: str) -> bool:
    """False only when the module's source plainly binds no `name` anywhere (no def, class, assignment or import of
    it, no `import *`, no module `__getattr__`); True when that cannot be told without running it."""
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return True
    try:
        tree = ast.parse(Path(origin).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return True  # importing it will say what is wrong
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node.name in (name, "__getattr__"):
            return True
        if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                a.name == "*" or (a.asname or a.name.split(".")[0]) == name for a in node.names):
            return True
    return False


class PythonSourceSpec(_Source):
    """A function with TRL's reward-callable signature: `fn(prompts, completions, **columns) -> list[float|None]`,
    sync or async, given as `module:function` (the module importable from the working directory, the recipe's
    folder or sys.path). Loading the recipe only finds the module (`check`); its code runs when the reward is
    built (`load`), by the commands that score with it."""
    kind: Literal["python"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    _folder: str | None = PrivateAttr(None)  # the recipe's folder, set by load_recipe: the module is looked for there

    def _search(self, search: tuple[str | os.PathLike, ...]) -> tuple[str, ...]:
        return (os.getcwd(), *([self._folder] if self._folder else []), *map(str, search))

    def find(self, search: tuple[str | os.PathLike, ...] = ()):
        """Where the function's module would be imported from (its spec: `origin`, `submodule_search_locations`),
        found without running any of its code; None when it is nowhere to be found."""
        with search_path(self._search(search)):
            return find_module(self.function.partition(":")[0])

    def check(self, search: tuple[str | os.PathLike, ...] = ()) -> None:
        """A ValueError that says why when the module cannot be found or plainly has no such function; runs none of
        the module's code."""
        module, _, name = self.function.partition(":")
        spec = self.find(search)
        if spec is None:
            raise ValueError(f"{self.function}: cannot import {module}: no module named {module!r} in the working "
                             "directory, the recipe's folder or sys.path")
        if not may_define(spec, name):
            raise ValueError(f"{self.function}: {module} has no {name}")

    def load(self, search: tuple[str | os.PathLike, ...] = ()):
        """The function, imported now (the module's code runs); a ValueError that says why when it cannot be
        imported or is not callable. The module is looked for in the working directory and the recipe's folder as
        well as on sys.path, which is as it was afterwards."""
        module, _, name = self.function.partition(":")
        try:
            with search_path(self._search(search)):
                fn = getattr(importlib.import_module(module), name)
        except ImportError as e:
            raise ValueError(f"{self.function}: cannot import {module}: {e}") from None
        except AttributeError:
            raise ValueError(f"{self.function}: {module} has no {name}") from None
        except Exception as e:  # the user's module failed while importing
            raise ValueError(f"{self.function}: importing {module} failed: {type(e).__name__}: {e}") from None
        if not callable(fn):
            raise ValueError(f"{self.function}: {name} is not callable")
        return fn


class LambdaSettings(Strict):
    """How a Bedrock reward Lambda file is called: a `rewards:` source, or the recipe's `reward.lambda_file`."""
    batch_size: int = Field(64, gt=0)  # samples per Lambda call (SageMaker's lambda_batch_size)
    concurrency: int = Field(12, gt=0)  # Lambda calls at once (SageMaker's lambda_concurrency default)
    # a call still running after this is cut and its batch counted as failed (the Lambda's timeout on AWS);
    # context.get_remaining_time_in_millis counts down from it
    timeout_s: float = Field(900.0, gt=0, allow_inf_nan=False)
    # what a sample the Lambda did not answer gets when the Lambda is the whole reward (Bedrock's contract is 0.5);
    # in a combined reward such a sample is left out (None) whatever this says
    on_error: Literal["none", "neutral"] = "neutral"
    neutral_reward: float = Field(0.5, ge=0, le=1)
    max_fail_rate: float = Field(0.5, gt=0, le=1)  # over the last 256 samples; the run stops above it
    # serve Bedrock's Converse API on 127.0.0.1, backed by the recipe's judge, for the Lambda's boto3 calls
    bedrock_gateway: bool = True


class LambdaSourceSpec(_Source, LambdaSettings):
    """A Bedrock reward Lambda file (`lambda_handler(event, context)`), called with Bedrock's event."""
    kind: Literal["lambda"]
    name: str = Field("lambda", pattern=NAME)
    file: str


class RewardModelSourceSpec(_Source):
    """A reward model, what `rlaif rm train` saves (a one-output sequence classifier): served by vLLM's pooling
    runner (launched, supervised and pooled like the judge, or reached at base_url), or in the training process."""
    kind: Literal["reward_model"]
    name: str = Field("reward_model", pattern=NAME)
    model: str  # the folder `rlaif rm train --out` wrote (its tokenizer renders the ids, so a local folder)
    backend: Literal["vllm", "transformers"] = "vllm"
    # how the head's raw score becomes the reward: sigmoid (in (0, 1), like a judge's P(PASS); 0.5 is "as good as
    # a zero score"), none (the raw logit), zscore (centred and scaled over the batch's scored samples; GRPO's
    # group advantages are scale-free, but a mix of sources is not)
    normalize: Literal["sigmoid", "none", "zscore"] = "sigmoid"
    base_url: str | list[str] | None = None  # a running pooling server (`vllm serve DIR --runner pooling`)
    served_model_name: str | None = None  # default: the model folder's name
    # the pooling server's key (sent to base_url, given to a launched server); by default $RLAIF_RM_API_KEY, as the
    # judge's is $RLAIF_JUDGE_API_KEY: neither in the recipe nor on a command line, nor shown in a repr
    api_key: str | None = Field(default_factory=lambda: os.environ.get("RLAIF_RM_API_KEY") or None, repr=False)

    @field_validator("api_key")
    @classmethod
    def _a_key_a_header_can_carry(cls, v):
        return header_safe_key(v, "reward model")
    serve: ServeSpec = ServeSpec()  # how rlaif launches its pooling server (backend: vllm, no base_url)
    local: LocalJudgeSpec = LocalJudgeSpec()  # backend: transformers: device, dtype, sequences per forward
    batch_size: int = Field(256, gt=0)  # sequences per /classify request
    timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    max_retries: int = Field(3, ge=0)
    max_outage_wait_s: float = Field(600.0, ge=0, allow_inf_nan=False)  # a request waits this long for a restart
    max_fail_rate: float = Field(0.2, gt=0, le=1)  # over the last 256 samples; the run stops above it

    @property
    def label(self) -> str:
        """The served model's name: what the server lists and a request names."""
        return self.served_model_name or (Path(self.model).name if self.model else "reward_model")


RewardSourceSpec = Annotated[Union[JudgeSourceSpec, VerifiableSourceSpec, PythonSourceSpec, LambdaSourceSpec,
                                   RewardModelSourceSpec],
                             Field(discriminator="kind")]
