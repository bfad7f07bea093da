"""Deterministic checks: the rules themselves, run before the judge. rlaif's check specs (rlaif/config/checks.py)
call these, and so does the exported Lambda through `StdlibCheck`, which builds a check from its spec's dict.

A check passes or fails one completion and says why. `run_checks` runs a list of them; a failed check in `gate`
mode means the judge is not asked.
"""
from __future__ import annotations

import json
import re


def strip_code_fence(text: str) -> str:
    """Policies often wrap JSON in ```json fences; the check is about the JSON, not the fence."""
    m = re.fullmatch(r"\s*```(?:json)?\s*\n(.*?)\n?```\s*", text, re.DOTALL)
    return m.group(1) if m else text


def json_items(text: str, key: str) -> tuple[list | None, str]:
    """The non-empty list at `key` of a JSON completion (code fences allowed), or None and why not."""
    try:
        obj = json.loads(strip_code_fence(text))
    except json.JSONDecodeError as e:
        return None, f"not JSON: {e.msg}"
    items = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(items, list) or not items:
        return None, f"no non-empty list at '{key}'"
    return items, f"{len(items)} item(s) at '{key}'"


LENGTH_BOUNDS = ("min_chars", "max_chars", "min_words", "max_words", "min_tokens", "max_tokens")


def length_check(text: str, bounds: dict, tokens: int | None = None) -> tuple[bool, str]:
    """Characters, words and (when counted by the caller's tokenizer) tokens against min/max bounds."""
    n, w = len(text), len(text.split())
    counts = {"chars": (n, "characters"), "words": (w, "words"), "tokens": (tokens, "tokens")}
    for key in LENGTH_BOUNDS:
        bound = bounds.get(key)
        if bound is None:
            continue
        side, unit = key.split("_")
        value, label = counts[unit]
        if not (value >= bound if side == "min" else value <= bound):
            return False, f"{value} {label}, bound {bound}"
    return True, f"{n} characters, {w} words" + (f", {tokens} tokens" if tokens is not None else "")


def regex_must(rx: re.Pattern, text: str) -> tuple[bool, str]:
    return (True, "pattern found") if rx.search(text) else (False, f"missing /{rx.pattern}/")


def regex_must_not(rx: re.Pattern, text: str) -> tuple[bool, str]:
    m = rx.search(text)
    return (False, f"forbidden /{rx.pattern}/ matched {m.group(0)[:40]!r}") if m else (True, "not found")


def blocklist_pattern(words: list[str], case_sensitive: bool = False) -> re.Pattern:
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", flags)


def blocklist(rx: re.Pattern, text: str) -> tuple[bool, str]:
    m = rx.search(text)
    return (False, f"blocked word {m.group(0)!r}") if m else (True, "no blocked word")


def json_valid(text: str) -> tuple[bool, str]:
    try:
        json.loads(strip_code_fence(text))
        return True, "valid JSON"
    except json.JSONDecodeError as e:
        return False, f"not JSON: {e.msg} at column {e.colno}"


_SCHEMA_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def schema_errors(obj, schema: dict, where: str = "(root)") -> str | None:
    """The first error of `obj` against the JSON Schema subset a Lambda validates without the jsonschema package
    (type, enum, const, lengths, pattern, bounds, items, required, properties, additionalProperties), or None.
    rlaif itself validates with jsonschema; the export refuses schemas that use more than this subset."""
    types = schema.get("type")
    if types is not None:
        ok = False
        for t in ([types] if isinstance(types, str) else types):
            if t == "integer":
                ok = ok or (isinstance(obj, int) and not isinstance(obj, bool))
            elif t == "number":
                ok = ok or (isinstance(obj, (int, float)) and not isinstance(obj, bool))
            else:
                ok = ok or isinstance(obj, _SCHEMA_TYPES[t])
        if not ok:
            return f"{where}: not of type {types}"
    if "enum" in schema and obj not in schema["enum"]:
        return f"{where}: not one of {schema['enum']}"
    if "const" in schema and obj != schema["const"]:
        return f"{where}: not {schema['const']!r}"
    if isinstance(obj, str):
        if len(obj) < schema.get("minLength", 0) or len(obj) > schema.get("maxLength", float("inf")):
            return f"{where}: length out of bounds"
        if "pattern" in schema and not re.search(schema["pattern"], obj):
            return f"{where}: does not match {schema['pattern']}"
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if obj < schema.get("minimum", float("-inf")) or obj > schema.get("maximum", float("inf")):
            return f"{where}: out of range"
    if isinstance(obj, list):
        if len(obj) < schema.get("minItems", 0) or len(obj) > schema.get("maxItems", float("inf")):
            return f"{where}: wrong number of items"
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(obj):
                err = schema_errors(item, schema["items"], f"{where}/{i}")
                if err:
                    return err
    if isinstance(obj, dict):
        for key in schema.get("required", []):
            if key not in obj:
                return f"{where}: '{key}' is a required property"
        props = schema.get("properties", {})
        for key, value in obj.items():
            if key in props:
                err = schema_errors(value, props[key], f"{where}/{key}")
            elif schema.get("additionalProperties") is False:
                err = f"{where}: additional property '{key}'"
            elif isinstance(schema.get("additionalProperties"), dict):
                err = schema_errors(value, schema["additionalProperties"], f"{where}/{key}")
            else:
                err = None
            if err:
                return err
    return None


STDLIB_KINDS = ("json_valid", "json_schema", "length", "regex_must", "regex_must_not", "blocklist")


class StdlibCheck:
    """A check from its spec as a dict (a recipe's `checks:` entry), with the standard library only: the
    Lambda's form of rlaif's checks. Token bounds and language_match need packages and are refused."""

    def __init__(self, spec: dict):
        self.spec, self.kind = spec, spec["kind"]
        if self.kind not in STDLIB_KINDS:
            raise ValueError(f"check kind {self.kind!r} needs more than the standard library")
        self.label = spec.get("name") or spec["kind"]
        self.mode = spec.get("mode", "gate")
        self.weight = float(spec.get("weight", 1.0))
        if self.kind in ("regex_must", "regex_must_not"):
            self.rx = re.compile(spec["pattern"])
        elif self.kind == "blocklist":
            self.rx = blocklist_pattern(spec["words"], spec.get("case_sensitive", False))

    def run(self, text: str, prompt: str = "") -> tuple[bool, str]:
        if self.kind == "json_valid":
            return json_valid(text)
        if self.kind == "json_schema":
            try:
                obj = json.loads(strip_code_fence(text))
            except json.JSONDecodeError as e:
                return False, f"not JSON: {e.msg}"
            err = schema_errors(obj, self.spec["schema"])
            return (False, err) if err else (True, "matches the schema")
        if self.kind == "length":
            return length_check(text, self.spec)
        if self.kind == "regex_must":
            return regex_must(self.rx, text)
        if self.kind == "regex_must_not":
            return regex_must_not(self.rx, text)
        return blocklist(self.rx, text)


def run_checks(checks: list, text: str, prompt: str = "") -> tuple[bool, dict[str, float], dict[str, str]]:
    """(all gates passed, score per check, detail per check)."""
    gates_ok, scores, details = True, {}, {}
    for c in checks:
        ok, why = c.run(text, prompt)
        scores[c.label] = 1.0 if ok else 0.0
        details[c.label] = why
        if c.mode == "gate" and not ok:
            gates_ok = False
    return gates_ok, scores, details
