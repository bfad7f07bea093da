"""Rubrics are data: named criteria, each a plain-language question the judge answers.

A rubric comes from a built-in name (`rlaif/rubrics/NAME.yaml`), a YAML file, or inline in a recipe.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rlaif.errors import UserError, format_validation_error

BUILTIN_DIR = Path(__file__).parent / "rubrics"


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$", description="identifier used in metrics and logs")
    question: str = Field(min_length=1, description="the plain-language question the judge answers")
    kind: Literal["pass_fail"] = "pass_fail"
    weight: float = Field(default=1.0, gt=0)


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

    @field_validator("criteria")
    @classmethod
    def _unique(cls, v):
        names = [c.name for c in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"criterion names must be unique; repeated: {', '.join(dup)}")
        return v

    def aggregate(self, scores: dict[str, float]) -> float:
        """Weighted mean of per-criterion scores in [0, 1]."""
        total = sum(c.weight for c in self.criteria)
        return sum(c.weight * scores[c.name] for c in self.criteria) / total


def builtin_rubrics() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_rubric(spec: str | dict, where: str = "rubric") -> Rubric:
    """A rubric from a built-in name, a YAML path, or an inline mapping; errors name the file and field."""
    if isinstance(spec, dict):
        source, data = where, spec
    else:
        path = Path(spec)
        if not path.suffix and (BUILTIN_DIR / f"{spec}.yaml").exists():
            path = BUILTIN_DIR / f"{spec}.yaml"
        if not path.exists():
            raise UserError(f"{where}: rubric '{spec}' is neither a file nor a built-in rubric "
                            f"(built-in: {', '.join(builtin_rubrics())})")
        source = str(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise UserError(f"{source}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise UserError(f"{source}: a rubric must be a mapping with 'name' and 'criteria'")
    try:
        return Rubric.model_validate(data)
    except Exception as e:  # pydantic.ValidationError
        raise UserError(format_validation_error(e, source)) from None
