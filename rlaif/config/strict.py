"""The base of every spec: unknown keys are errors (`judge.modle: unknown key (typo?)`), never silent defaults."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
