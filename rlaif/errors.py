"""User-facing errors: the CLI prints these as one clear message and exits 1, never a traceback."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (file, recipe, data). The message names the file, line and field."""


def format_validation_error(err, source: str, prefix: str = "") -> str:
    """Turn a pydantic ValidationError into lines of `source: field.path: message`."""
    try:
        items = err.errors()
    except AttributeError:
        return f"{source}: {err}"
    lines = []
    for item in items:
        loc = ".".join(str(p) for p in item.get("loc", ()))
        loc = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        msg = item.get("msg", "invalid")
        if item.get("type") == "extra_forbidden":
            msg = "unknown key (typo?)"
        lines.append(f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}")
    return "\n".join(lines)
