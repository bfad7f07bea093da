"""Failures rlaif explains in one message. The command line prints any `RlaifError` as `error: ...` and exits 1,
never with a traceback; everything else is a bug and keeps its traceback."""
from __future__ import annotations


class RlaifError(Exception):
    """A failure with a message that says what went wrong and what to do."""


class UserError(RlaifError):
    """Bad input from the user (file, recipe, data). The message names the file, line and field."""


class Preempted(RlaifError):
    """The run stopped cleanly on a signal (its checkpoint saved); the command exits with `exit_code`
    (143 for SIGTERM, 130 for SIGINT) and the message, which says how to resume."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StoppedAtOnce(KeyboardInterrupt):
    """A second signal, or a checkpoint that overran its grace period: the run stops where it is (as Ctrl-C
    would, so no `except Exception` keeps it going), exits with `exit_code` (the signal's, 143 or 130) and prints
    the message, which says how to resume from the last complete checkpoint."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class JudgeUnavailable(RlaifError, RuntimeError):
    """The judge cannot be used at all (down, or ignoring the output constraint)."""


class JudgeServerError(RlaifError, RuntimeError):
    """The judge server rlaif launched did not start, or serves another model."""


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
        msg = item.get("msg", "invalid").removeprefix("Value error, ")  # pydantic's wording for our own checks
        if item.get("type") == "extra_forbidden":
            msg = "unknown key (typo?)"
        lines.append(f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}")
    return "\n".join(lines)
