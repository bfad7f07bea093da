"""The one YAML dialect of recipes and rubric files: YAML 1.2 booleans, safe loading, errors that name the file.

YAML 1.1 (PyYAML's default) reads `no`, `yes`, `on` and `off` as booleans, so `save_strategy: no` would become
False and a rubric question "No" would stop being text; here only true/false are booleans.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from rlaif.errors import UserError


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with only true/false as booleans: `save_strategy: no` stays the string "no" (YAML 1.1 says False)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))

YAMLError = yaml.YAMLError


def yaml_load(text: str):
    return yaml.load(text, Loader=_Yaml12Loader)


def read_yaml(path: Path):
    """A YAML file's data; an unreadable, non-UTF-8, malformed or absurdly nested file is a UserError naming it.
    The loader is a safe one: a `!!python/...` tag is a YAML error, never a constructor call."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 at byte {e.start}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return yaml_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise UserError(f"{path}: not valid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as e:  # a scalar PyYAML resolves but cannot build: 2026-13-45, 5000 digits
        raise UserError(f"{path}: not valid YAML: {str(e)[:200]}") from None


def path_exists(path, expand_user: bool = False) -> bool:
    """Path.exists that says False for a name no file can have (a NUL byte, a name too long, `~nobody`) instead
    of raising. `~` is expanded only where the reader expands it too (model folders), so that `~` is never
    found as a file that opening then cannot read."""
    try:
        p = Path(path)
        return (p.expanduser() if expand_user else p).exists()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: expanduser of an unknown user
        return False
