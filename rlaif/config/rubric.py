"""Rubrics are data: named criteria, each a plain-language question the judge answers.

A rubric comes from a built-in name (`rlaif/config/rubrics/NAME.yaml`), a YAML file, or inline in a recipe.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from rlaif.config.strict import private_value
from rlaif.config.yaml import path_exists, read_yaml
from rlaif.errors import UserError, format_validation_error
from rlaif.portable import formula
from rlaif.portable.aggregate import aggregate_scores

BUILTIN_DIR = Path(__file__).parent / "rubrics"


class Criterion(BaseModel):
    """One question. pass_fail scores are P(pass) in [0, 1]; scale answers 1-5 become (s - 1) / 4."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$", description="identifier used in metrics and logs")
    question: str = Field(min_length=1, description="the plain-language question the judge answers")
    kind: Literal["pass_fail", "scale"] = "pass_fail"
    levels: dict[int, str] | None = None  # scale only: what each of 1..5 means
    weight: float = Field(default=1.0, gt=0)
    essential: bool = False  # with aggregation "gate": failing it zeroes the reward
    uses_reference: bool = False  # show the judge the sample's reference answer for this criterion

    @model_validator(mode="after")
    def _levels(self):
        if self.kind == "scale":
            if not self.levels or sorted(self.levels) != [1, 2, 3, 4, 5]:
                raise ValueError(f"criterion '{self.name}': a scale criterion needs levels 1, 2, 3, 4 and 5, "
                                 "each with a description")
        elif self.levels:
            raise ValueError(f"criterion '{self.name}': levels are only for kind: scale")
        return self


class Labels(BaseModel):
    """The words the judge answers with. In logprob mode each must start with its own first token."""

    model_config = ConfigDict(extra="forbid")
    pass_: str = Field(default="PASS", alias="pass", min_length=1)
    fail: str = Field(default="FAIL", min_length=1)

    @model_validator(mode="after")
    def _distinct(self):
        if self.pass_[0] == self.fail[0]:
            raise ValueError("the pass and fail labels must start with different characters")
        return self


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1)
    description: str = ""
    criteria: list[Criterion] = Field(min_length=1)
    labels: Labels = Labels()
    # weighted_mean: sum(w * s) / sum(w). gate: 0 if any essential criterion scores below 0.5, else the
    # weighted mean of the others. formula: your expression over criterion names (rlaif/portable/formula.py).
    aggregation: Literal["weighted_mean", "gate", "formula"] = "weighted_mean"
    formula: str | None = None
    # The completion is JSON and this key holds a list (e.g. "comments"): each item is judged on its own and
    # each criterion's score is the mean over items (the contract-review case study). A completion that is not
    # such JSON scores 0 without the judge.
    per_item: str | None = None
    _formula_tree: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _aggregation(self):
        if self.aggregation == "formula":
            if not self.formula:
                raise ValueError("aggregation: formula needs a 'formula'")
            try:
                self._formula_tree = formula.parse(self.formula, {c.name for c in self.criteria})
            except formula.FormulaError as e:
                raise ValueError(str(e)) from None
        elif self.formula:
            raise ValueError("'formula' is only used with aggregation: formula")
        if self.aggregation == "gate" and not any(c.essential for c in self.criteria):
            raise ValueError("aggregation: gate needs at least one criterion with essential: true")
        return self

    @field_validator("criteria")
    @classmethod
    def _unique(cls, v):
        names = [c.name for c in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"criterion names must be unique; repeated: {', '.join(dup)}")
        return v

    def aggregate(self, scores: dict[str, float]) -> float:
        """One reward in [0, 1] from per-criterion scores in [0, 1]."""
        return aggregate_scores(scores, [(c.name, c.weight, c.essential) for c in self.criteria],
                                self.aggregation, private_value(self, "_formula_tree"))


class RecordRubric(BaseModel):
    """A record's own criteria (its `rubric` key; `metadata.rubric` in a reward-Lambda event), judged after the
    recipe's shared ones as the instance-specific rubrics of "Rubrics as Rewards" and checklist rewards are: the
    same fields as a rubric file's criteria. They join the reward as a weighted mean beside the shared rubric's
    aggregate (an essential one that fails zeroes the reward under aggregation: gate)."""
    model_config = ConfigDict(extra="forbid")

    criteria: list[Criterion] = Field(min_length=1)

    @field_validator("criteria")
    @classmethod
    def _unique(cls, v):
        names = [c.name for c in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"criterion names must be unique; repeated: {', '.join(dup)}")
        return v


def record_rubric_problems(value) -> list[str]:
    """`field: message` problems of a record's `rubric` (prefixed `rubric.`), none when it is valid."""
    try:
        RecordRubric.model_validate(value)
        return []
    except Exception as e:  # pydantic.ValidationError
        return [ln.removeprefix(": ") for ln in format_validation_error(e, "", prefix="rubric").splitlines()]


def builtin_rubrics() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_rubric(spec: str | dict, where: str = "rubric") -> Rubric:
    """A rubric from a built-in name, a YAML path, or an inline mapping; errors name the file and field."""
    if isinstance(spec, dict):
        source, data = where, spec
    elif not isinstance(spec, str):
        raise UserError(f"{where}: a rubric is a built-in name, a YAML file or a mapping, not {type(spec).__name__}")
    else:
        path = Path(spec)
        if spec in builtin_rubrics():
            path = BUILTIN_DIR / f"{spec}.yaml"
        if not path_exists(path) or path.is_dir():
            shown = spec if len(spec) <= 200 else spec[:200] + "..."
            raise UserError(f"{where}: rubric {shown!r} is neither a file nor a built-in rubric "
                            f"(built-in: {', '.join(builtin_rubrics())})")
        source = str(path)
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise UserError(f"{source}: a rubric must be a mapping with 'name' and 'criteria'")
    try:
        return Rubric.model_validate(data)
    except Exception as e:  # pydantic.ValidationError
        raise UserError(format_validation_error(e, source)) from None
