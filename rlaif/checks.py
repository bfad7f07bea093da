"""Deterministic checks: cheap, exact, and run before the judge.

Each check looks at one completion and passes or fails it. A check in `gate` mode decides alone: a failed
gate makes the reward 0 and the judge is never asked (format and safety rules, as the Nova guidance says to run
first). A check in `weight` mode adds its 0/1 score to the judge's reward as a weighted mean.

    checks:
      - {kind: json_valid}
      - {kind: json_schema, schema: {type: object, required: [comments]}}
      - {kind: length, max_chars: 2000}         # or min/max_words, min/max_tokens (policy tokenizer)
      - {kind: language_match}                  # the response is in the prompt's language
      - {kind: regex_must_not, pattern: '(?i)as an ai language model', mode: weight, weight: 0.5}
      - {kind: blocklist, words: [idiot, stupid]}
"""
from __future__ import annotations

import functools
import json
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None  # default: the kind; used in metrics and logs
    mode: Literal["gate", "weight"] = "gate"
    weight: float = Field(1.0, gt=0)

    @property
    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined]

    def run(self, text: str, prompt: str = "") -> tuple[bool, str]:
        raise NotImplementedError


class JsonValid(_Check):
    kind: Literal["json_valid"]

    def run(self, text, prompt=""):
        try:
            json.loads(_strip_code_fence(text))
            return True, "valid JSON"
        except json.JSONDecodeError as e:
            return False, f"not JSON: {e.msg} at column {e.colno}"


class JsonSchema(_Check):
    kind: Literal["json_schema"]
    schema_: dict = Field(alias="schema")

    @model_validator(mode="after")
    def _valid_schema(self):
        import jsonschema
        try:
            jsonschema.validators.validator_for(self.schema_).check_schema(self.schema_)
        except jsonschema.SchemaError as e:
            raise ValueError(f"schema is not a valid JSON Schema: {e.message}") from None
        return self

    def run(self, text, prompt=""):
        import jsonschema
        try:
            obj = json.loads(_strip_code_fence(text))
        except json.JSONDecodeError as e:
            return False, f"not JSON: {e.msg}"
        errors = sorted(jsonschema.validators.validator_for(self.schema_)(self.schema_).iter_errors(obj),
                        key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.path) or "(root)"
            return False, f"{where}: {e.message}"
        return True, "matches the schema"


class Length(_Check):
    kind: Literal["length"]
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=0)
    min_words: int | None = Field(None, ge=0)
    max_words: int | None = Field(None, ge=0)
    min_tokens: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)
    tokenizer: str | None = None  # for token bounds; the recipe fills in the policy's when left out

    def run(self, text, prompt=""):
        n, w = len(text), len(text.split())
        t = None
        if self.min_tokens is not None or self.max_tokens is not None:
            t = len(_tokenizer(self.tokenizer).encode(text, add_special_tokens=False))
        for bound, value, unit, ok in ((self.min_chars, n, "characters", lambda b, v: v >= b),
                                       (self.max_chars, n, "characters", lambda b, v: v <= b),
                                       (self.min_words, w, "words", lambda b, v: v >= b),
                                       (self.max_words, w, "words", lambda b, v: v <= b),
                                       (self.min_tokens, t, "tokens", lambda b, v: v >= b),
                                       (self.max_tokens, t, "tokens", lambda b, v: v <= b)):
            if bound is not None and not ok(bound, value):
                return False, f"{value} {unit}, bound {bound}"
        return True, f"{n} characters, {w} words" + (f", {t} tokens" if t is not None else "")


@functools.lru_cache(maxsize=4)
def _tokenizer(name: str | None):
    if not name:
        raise ValueError("a length check with token bounds needs a tokenizer")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(name)


class LanguageMatch(_Check):
    """The response is in the prompt's language (py3langid, a maintained fork of langid.py).

    Short texts say little about their language: when either side is shorter than `min_chars`, the check
    passes and says so, rather than fail a terse but correct answer."""
    kind: Literal["language_match"]
    min_chars: int = Field(20, ge=1)

    def run(self, text, prompt=""):
        if len(text.strip()) < self.min_chars or len(prompt.strip()) < self.min_chars:
            return True, "too short to tell the language"
        import py3langid
        want, got = py3langid.classify(prompt)[0], py3langid.classify(text)[0]
        return (True, f"both {got}") if want == got else (False, f"prompt in {want}, response in {got}")


class _Regex(_Check):
    pattern: str
    _rx: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compiles(self):
        try:
            self._rx = re.compile(self.pattern)
        except re.error as e:
            raise ValueError(f"pattern does not compile: {e}") from None
        return self


class RegexMust(_Regex):
    kind: Literal["regex_must"]

    def run(self, text, prompt=""):
        return (True, "pattern found") if self._rx.search(text) else (False, f"missing /{self.pattern}/")


class RegexMustNot(_Regex):
    kind: Literal["regex_must_not"]

    def run(self, text, prompt=""):
        m = self._rx.search(text)
        return (False, f"forbidden /{self.pattern}/ matched {m.group(0)[:40]!r}") if m else (True, "not found")


class Blocklist(_Check):
    kind: Literal["blocklist"]
    words: list[str] = Field(min_length=1)
    case_sensitive: bool = False
    _rx: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compile(self):
        flags = 0 if self.case_sensitive else re.IGNORECASE
        self._rx = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in self.words) + r")\b", flags)
        return self

    def run(self, text, prompt=""):
        m = self._rx.search(text)
        return (False, f"blocked word {m.group(0)!r}") if m else (True, "no blocked word")


Check = Annotated[Union[JsonValid, JsonSchema, Length, LanguageMatch, RegexMust, RegexMustNot, Blocklist],
                  Field(discriminator="kind")]


def _strip_code_fence(text: str) -> str:
    """Policies often wrap JSON in ```json fences; the check is about the JSON, not the fence."""
    m = re.fullmatch(r"\s*```(?:json)?\s*\n(.*?)\n?```\s*", text, re.DOTALL)
    return m.group(1) if m else text


def run_checks(checks: list[Any], text: str, prompt: str = "") -> tuple[bool, dict[str, float], dict[str, str]]:
    """(all gates passed, score per check, detail per check)."""
    gates_ok, scores, details = True, {}, {}
    for c in checks:
        ok, why = c.run(text, prompt)
        scores[c.label] = 1.0 if ok else 0.0
        details[c.label] = why
        if c.mode == "gate" and not ok:
            gates_ok = False
    return gates_ok, scores, details


def combine(judge_reward: float, checks: list[Any], scores: dict[str, float], judge_weight: float = 1.0) -> float:
    """The judge's reward and the weight-mode checks' scores as one weighted mean."""
    weighted = [(c.weight, scores[c.label]) for c in checks if c.mode == "weight"]
    total = judge_weight + sum(w for w, _ in weighted)
    return (judge_weight * judge_reward + sum(w * s for w, s in weighted)) / total
