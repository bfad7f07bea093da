"""The field names of TRL's GRPOConfig, for checking a recipe's `grpo:` block, without importing TRL.

`from trl import GRPOConfig` imports torch, transformers and peft: 5 s on an idle 2-core box, 13 s on a busy one, paid
by every command that only loads a recipe (`rlaif label`, `reward score`, `nova job-config`, `data check`). The
dataclass's fields are the annotated names in the class bodies of GRPOConfig and its bases, so they are read from
the installed sources with `ast`, along the class chain TRL has today. Where the chain is not what this expects (a
TRL or transformers release that moved a class), it falls back to importing GRPOConfig: slower, never wrong.
tests/test_recipe.py compares the two on the installed versions.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
from pathlib import Path

# (package, file in it, class, its one base class, or None for the root): GRPOConfig(_BaseConfig(TrainingArguments))
CLASS_CHAIN = (("trl", "trainer/grpo_config.py", "GRPOConfig", "_BaseConfig"),
               ("trl", "trainer/base_config.py", "_BaseConfig", "TrainingArguments"),
               ("transformers", "training_args.py", "TrainingArguments", None))


@functools.cache
def grpo_config_fields() -> frozenset[str]:
    return fields_from_source(CLASS_CHAIN) or fields_from_import()


def fields_from_import() -> frozenset[str]:
    from trl import GRPOConfig
    return frozenset(f.name for f in dataclasses.fields(GRPOConfig))


def fields_from_source(chain) -> frozenset[str] | None:
    """The dataclass fields along `chain`, or None where a file, class or base is not the one expected, or where a
    class body declares fields in a way a flat reading would get wrong (a field inside an `if` or `try`, a KW_ONLY
    marker, a name that is a field in one class and a ClassVar in another)."""
    names: set[str] = set()
    class_vars: set[str] = set()
    for package, rel, cls, base in chain:
        body = _class_body(package, rel, cls, base)
        if body is None:
            return None
        for node in body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                annotation = ast.unparse(node.annotation)
                if "KW_ONLY" in annotation:
                    return None
                if "ClassVar" in annotation or "InitVar" in annotation:
                    class_vars.add(node.target.id)  # not dataclass fields
                else:
                    names.add(node.target.id)
            elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    isinstance(inner, ast.AnnAssign) for inner in ast.walk(node)):
                return None  # a conditional field: only the import knows whether it exists
    return None if names & class_vars else frozenset(names)


def _class_body(package: str, rel: str, cls: str, base: str | None) -> list[ast.stmt] | None:
    try:
        spec = importlib.util.find_spec(package)  # finds the package without running its __init__
        root = Path(next(iter(spec.submodule_search_locations)))
        tree = ast.parse((root / rel).read_text(encoding="utf-8"))
    except (ImportError, AttributeError, TypeError, StopIteration, OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            bases = [ast.unparse(b) for b in node.bases]
            is_dataclass = any(ast.unparse(d).split("(")[0].endswith("dataclass") for d in node.decorator_list)
            if bases != ([base] if base else []) or not is_dataclass:
                return None
            return node.body
    return None
