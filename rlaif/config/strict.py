"""The base of every spec: unknown keys are errors (`judge.modle: unknown key (typo?)`), never silent defaults; and
the fast read of a spec's private attribute, for the ones read per judged sample."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def private_value(model: BaseModel, name: str):
    """A private attribute's value, read from pydantic's dict of them: `model._rx` goes through pydantic's
    `__getattr__`, which raises and catches an AttributeError on the way (about 2 us, paid by every check and
    rubric of every judged sample: benchmarks/RESULTS.md, issue 27)."""
    return model.__pydantic_private__[name]
