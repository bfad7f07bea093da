"""The `rewards:` block of a recipe: the sources of the reward and how they combine.

    rewards:
      - {kind: judge, name: polite, weight: 1.0}             # the recipe's judge and rubric (or its own: rubric,
                                                             #   mode, judge)
      - {kind: verifiable, name: topic, check: reference_contained, field: topic, weight: 1.0}
      - {kind: python, name: brevity, function: my_rewards:brevity, weight: 0.5}
      - {kind: lambda, name: grader, file: rewards/my_lambda.py}   # a Bedrock reward Lambda, as reward.lambda_file

Sources combine as a weighted sum, or, when any source is `essential: true`, through a gate: a sample that fails
an essential source (its reward below 0.5) gets 0, the others the weighted sum (rlaif/rewards/combined.py). Without
`rewards:`, the reward is the recipe's judge (named `judge`), or its `reward.lambda_file` (named `lambda`), as
before. A failed call is counted, as the judge's are; a sample that any source could not score is left out of a
combined reward (None), whatever that source's own fallback (a Lambda's neutral 0.5 applies only when it is the
whole reward).
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from rlaif.config.judge import JudgeSpec
from rlaif.config.strict import Strict
from rlaif.portable.verifiable import VERIFIABLE_CHECKS

NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"  # it names metrics: reward/<name>/mean
# names a source cannot take: the combined reward's, and the completions table's own columns
RESERVED_NAMES = frozenset({"combined", "prompt", "completion", "step", "advantage", "reward", "rewards",
                            "judge_scores", "judge_rationale"})


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


class PythonSourceSpec(_Source):
    """A function with TRL's reward-callable signature: `fn(prompts, completions, **columns) -> list[float|None]`,
    sync or async, given as `module:function` (the module importable from the working directory)."""
    kind: Literal["python"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

    def load(self, search: tuple[str | os.PathLike, ...] = ()):
        """The function; a ValueError that says why when it cannot be imported or is not callable. The module is
        looked for in the working directory and the `search` folders (the recipe's) as well as on sys.path: the
        `rlaif` command, unlike `python -m`, does not put the working directory there."""
        module, _, name = self.function.partition(":")
        for folder in (os.getcwd(), *map(str, search)):
            if folder not in sys.path:
                sys.path.append(folder)
        try:
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


RewardSourceSpec = Annotated[Union[JudgeSourceSpec, VerifiableSourceSpec, PythonSourceSpec, LambdaSourceSpec],
                             Field(discriminator="kind")]
