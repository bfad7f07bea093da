"""Deterministic checks in a recipe: cheap, exact, and run before the judge.

Each check looks at one completion and passes or fails it. A check in `gate` mode decides alone: a failed
gate makes the reward 0 and the judge is never asked (format and safety rules, as the Nova guidance says to run
first). A check in `weight` mode adds its 0/1 score to the judge's reward as a weighted mean. The rules
themselves live in rlaif/portable/checks.py, which the exported Lambda carries too.

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

from rlaif.config.strict import private_value
from rlaif.portable import checks as rules


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
        return rules.json_valid(text)


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
            obj = json.loads(rules.strip_code_fence(text))
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
        tokens = None
        if self.min_tokens is not None or self.max_tokens is not None:
            tokens = len(_tokenizer(self.tokenizer).encode(text, add_special_tokens=False))
        return rules.length_check(text, {k: getattr(self, k) for k in rules.LENGTH_BOUNDS}, tokens)


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
        return rules.regex_must(private_value(self, "_rx"), text)


class RegexMustNot(_Regex):
    kind: Literal["regex_must_not"]

    def run(self, text, prompt=""):
        return rules.regex_must_not(private_value(self, "_rx"), text)


class Blocklist(_Check):
    kind: Literal["blocklist"]
    words: list[str] = Field(min_length=1)
    case_sensitive: bool = False
    _rx: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compile(self):
        self._rx = rules.blocklist_pattern(self.words, self.case_sensitive)
        return self

    def run(self, text, prompt=""):
        return rules.blocklist(private_value(self, "_rx"), text)


Check = Annotated[Union[JsonValid, JsonSchema, Length, LanguageMatch, RegexMust, RegexMustNot, Blocklist],
                  Field(discriminator="kind")]
