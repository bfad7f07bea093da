"""Environment variables set for a scope, and as they were after it.

Code rlaif runs in its own process but does not own (a reward Lambda's boto3) reads its settings from
`os.environ`; setting them for good would send the rest of the process (and what it starts) to the same place.
Scopes may overlap across threads (Lambda calls run in several at once): the variables are set while any holder
is inside, and restored when the last one leaves.
"""
from __future__ import annotations

import contextlib
import os
import threading

_lock = threading.Lock()
_held: dict[str, list] = {}  # variable -> [holders, the value before the first holder (None: unset)]


@contextlib.contextmanager
def scoped_env(values: dict[str, str], defaults: dict[str, str] | None = None):
    """`values` set, and `defaults` where the variable has no value of its own, for the duration."""
    with _lock:
        mine = dict(values) | {k: v for k, v in (defaults or {}).items()
                               if k not in values and (k in _held or k not in os.environ)}
        for k, v in mine.items():
            if k not in _held:
                _held[k] = [0, os.environ.get(k)]
            _held[k][0] += 1
            os.environ[k] = v
    try:
        yield
    finally:
        with _lock:
            for k in mine:
                _held[k][0] -= 1
                if _held[k][0] == 0:
                    _, before = _held.pop(k)
                    if before is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = before
