"""JSON on the judge client's hot path: the judgment log's lines, the request bodies, the replies and the verdict
cache's keys. Every judged request paid the standard library's encoder three times (four log rows a sample, its
share of a batch body, its cache key) and its decoder once: about a fifth of rlaif's CPU per one-token judgment
(benchmarks/RESULTS.md, issue 27). orjson does the same work in about an eighth of the time.

What it writes is strict JSON (RFC 8259): a NaN or infinite float is written as null, where the standard library
wrote `NaN`, which jq, DuckDB and most JSON readers refuse; numpy scalars and arrays are written as their Python
values (the standard library raised, and the row was lost). What orjson cannot write (an integer past 64 bits, a
string that is not valid UTF-8, a key that is not a string) goes to the standard library, ASCII-escaped where UTF-8
cannot hold it. Reading takes what the standard library takes: `NaN` and `-Infinity`, which a server written in
Python sends for a -inf logprob unless it says otherwise. Without orjson (the GPU check's image has only torch,
transformers, peft and accelerate) the standard library does it all.

Files that people diff and the tiny world's data keep `rlaif.common.jsonl` (the standard library's spacing)."""
from __future__ import annotations

import json
import math
import re

try:
    import orjson
except ImportError:  # pragma: no cover - the trainer environment has it (pyproject.toml)
    orjson = None

_LONG_INT, _LONG_INT_B = re.compile(r"\d{19}"), re.compile(rb"\d{19}")
_STD = {False: json.JSONEncoder(ensure_ascii=False), True: json.JSONEncoder(ensure_ascii=False, sort_keys=True)}
# ASCII with escapes, for a text UTF-8 cannot hold: a lone surrogate (bytes decoded with `surrogateescape`) is what
# orjson refuses most often; written unescaped, the write raised and the line was lost
_ASCII = {False: json.JSONEncoder(), True: json.JSONEncoder(sort_keys=True)}


def _plain(o):
    """What orjson does not know, as the Python value it stands for: a numpy scalar or array (`.tolist()`);
    anything else is refused, and the standard library tries."""
    if type(o).__module__.split(".")[0] == "numpy" and callable(getattr(o, "tolist", None)):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _strict(o):
    """o with NaN and infinities as None, for the standard library's encoder (orjson writes them as null)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    try:
        return _strict(_plain(o))
    except TypeError:
        return o


def _std(obj, sort_keys: bool) -> str:
    obj = _strict(obj)
    text = _STD[sort_keys].encode(obj)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII[sort_keys].encode(obj)
    return text


def dumps(obj, sort_keys: bool = False) -> bytes:
    """obj as compact UTF-8 JSON bytes (keys sorted when asked: a cache key must not depend on dict order)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj, default=_plain, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
        except TypeError:  # orjson.JSONEncodeError is one
            pass
    return _std(obj, sort_keys).encode("utf-8")


def dumps_line(row: dict) -> str:
    """One JSONL line (non-ASCII kept as is), newline included."""
    if orjson is not None:
        try:
            return orjson.dumps(row, default=_plain, option=orjson.OPT_APPEND_NEWLINE).decode("utf-8")
        except TypeError:
            pass
    return _std(row, False) + "\n"


def loads(data: bytes | str, big_ints: bool = True):
    """Parsed JSON; what orjson refuses and the standard library takes (NaN, Infinity) as the latter reads it.

    orjson reads an integer past 64 bits as a float (2**64 as 1.8446744073709552e+19), and a reference answer of 21!
    must stay exact: a text with a run of 19 digits or more goes to the standard library (a float's shortest form
    has at most 17 digits). `big_ints=False` skips that scan, for a server's reply, whose numbers are ids, counts
    and logprobs: on a batch reply full of 17-digit logprobs it cost 7 us a choice, more than orjson's parse."""
    if orjson is not None:
        if not big_ints or (_LONG_INT_B if isinstance(data, (bytes, bytearray)) else _LONG_INT).search(data) is None:
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
    return json.loads(data)
