"""Bad input, generated: every malformed line, wrong type, odd role, empty text, broken UTF-8, huge or deeply
nested record is refused with file, line and field, counted, and never costs a valid record or a traceback.

The files mix generated valid records (unique ids) with bad lines of every kind, so a reader that loses, reorders
or misattributes anything fails. `rlaif data check` runs as a subprocess on a fixed mix (it is slow to start).
"""
import json
import math
import subprocess
import sys

import yaml
from conftest import SMOKE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlaif.config.recipe import load_recipe
from rlaif.config.rubric import load_rubric
from rlaif.data.nova import parse_lambda_sample, read_jsonl
from rlaif.data.reader import read_jsonl_with
from rlaif.data.tables import read_table
from rlaif.errors import UserError
from rlaif.rewards.lambda_source import check_response

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                       HealthCheck.too_slow, HealthCheck.data_too_large])

# -- valid records ---------------------------------------------------------------------------------------------------
TEXT = st.text(min_size=1, max_size=40).filter(lambda t: t.strip())
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
JSON_VALUE = st.recursive(JSON_LEAF, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                            st.dictionaries(st.text(max_size=8), kids, max_size=3)),
                          max_leaves=12)
CODE_LIKE = st.sampled_from(["{{7*7}}", "${7*7}", "__import__('os').system('true')", "{0.__class__}", "%(x)s",
                             "<script>alert(1)</script>", "`rm -rf /`", "$(touch x)"])


def content(text: str):
    """A message's content as Nova allows it: a string, or a list of text chunks."""
    return st.sampled_from([text, [{"type": "text", "text": text}],
                            [{"type": "text", "text": text[:1]}, {"type": "text", "text": text[1:]}]])


@st.composite
def valid_record(draw, rid: str, sample: bool):
    """A Nova RFT record (or, with `sample`, a reward-Lambda event sample) that the reader must keep."""
    user = draw(st.one_of(TEXT, CODE_LIKE, st.integers(10_000, 200_000).map(lambda n: "long " + "x" * n)))
    msgs = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": draw(content(draw(TEXT)))})
    msgs.append({"role": "user", "content": draw(content(user))})
    rec = {"id": rid, "messages": msgs}
    if sample:
        msgs.append({"role": draw(st.sampled_from(["assistant", "nova_assistant"])),
                     "content": draw(st.one_of(st.just(""), TEXT, CODE_LIKE))})
        # any key but `rubric`, which is a record's own criteria and has a schema of its own
        rec["metadata"] = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k != "rubric"), JSON_VALUE,
                                               max_size=3))
    else:
        if draw(st.booleans()):
            rec["reference_answer"] = draw(st.one_of(TEXT, st.dictionaries(TEXT, JSON_VALUE, min_size=1, max_size=3)))
        extra = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("messages", "id",
                                                                                  "reference_answer", "rubric")),
                                     JSON_VALUE, max_size=3))
        rec.update(extra)
    return rec, user


# -- bad lines: (bytes of the line, the field a problem must name) ---------------------------------------------------
ROLES = ("system", "user", "assistant")
BAD_ROLE = st.one_of(st.text(max_size=30).filter(lambda r: r not in ROLES), st.none(), st.integers(),
                     st.lists(st.just("user"), max_size=2), st.just("USER"), st.just("nova_assistant"))
META = ("metadata",)  # where a Lambda sample keeps extra values


def _dump(obj) -> bytes:
    return json.dumps(obj).encode()


def _splice(obj, placeholder: str, raw: bytes) -> bytes:
    """obj as JSON with the string `placeholder` replaced by raw bytes (text json.dumps would refuse to write)."""
    return _dump(obj).replace(json.dumps(placeholder).encode(), raw)


def _put_extra(obj: dict, sample: bool, key: str, value) -> str:
    """An extra value where extra values go; returns the field path a problem should name."""
    if sample:
        obj["metadata"] = {key: value}
        return f"metadata.{key}"
    obj[key] = value
    return key


@st.composite
def bad_line(draw, base: dict, sample: bool):
    obj = json.loads(json.dumps(base))  # a copy
    kind = draw(st.sampled_from(["role", "no_role", "empty", "content_type", "messages_type", "id_type", "nan",
                                 "surrogate", "deep", "huge_int", "truncated", "utf8", "not_object", "long",
                                 "structure", "metadata_type", "reference"]))
    first = obj["messages"][0]
    if kind == "role":
        first["role"] = draw(BAD_ROLE)
        return _dump(obj), "messages[0].role"
    if kind == "no_role":
        del first["role"]
        return _dump(obj), "messages[0].role"
    if kind == "empty":
        first["content"] = draw(st.sampled_from(["", " ", "\t\n", "\u3000", [{"type": "text", "text": ""}]]))
        return _dump(obj), "messages[0].content"
    if kind == "content_type":
        first["content"] = draw(st.one_of(st.integers(), st.none(), st.dictionaries(TEXT, TEXT, max_size=2),
                                          st.just([{"type": "image", "url": "x"}]), st.just([1, 2])))
        return _dump(obj), "messages[0].content"
    if kind == "messages_type":
        obj["messages"] = draw(st.one_of(TEXT, st.integers(), st.just([]), st.just({}), st.none()))
        return _dump(obj), "messages"
    if kind == "id_type":
        obj["id"] = draw(st.one_of(st.floats(), st.booleans(), st.lists(st.integers(), max_size=2),
                                   st.dictionaries(TEXT, TEXT, max_size=1)))
        if sample and draw(st.booleans()):
            del obj["id"]
        return json.dumps(obj).encode(), "id"
    if kind == "nan":
        where = _put_extra(obj, sample, "score", draw(st.sampled_from([math.nan, math.inf, -math.inf])))
        return json.dumps(obj).encode(), where  # json.dumps writes NaN/Infinity, which JSON does not have
    if kind == "surrogate":
        first["content"] = "hi " + chr(draw(st.integers(0xD800, 0xDFFF)))
        return json.dumps(obj, ensure_ascii=True).encode(), "messages[0].content"  # written as a \\udXXX escape
    if kind == "deep":
        depth = draw(st.integers(65, 5000))
        where = _put_extra(obj, sample, "nest", "@@DEEP@@")
        return _splice(obj, "@@DEEP@@", b"[" * depth + b"]" * depth), where
    if kind == "huge_int":
        obj["id"] = "@@INT@@"
        return _splice(obj, "@@INT@@", b"9" * draw(st.integers(1001, 6000))), "id"
    if kind == "truncated":
        text = _dump(obj)
        return text[:draw(st.integers(1, len(text) - 1))], "(line)"
    if kind == "utf8":
        first["content"] = "@@BAD@@"
        raw = draw(st.sampled_from([b"\xff", b"\xc3(", b"\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80"]))
        return _splice(obj, "@@BAD@@", b'"ok ' + raw + b' ok"'), "(line)"
    if kind == "not_object":
        return draw(st.sampled_from([b"[1, 2]", b'"a string"', b"42", b"null", b"true", b"[]"])), "(record)"
    if kind == "long":
        first["content"] = "y" * draw(st.integers(100_000, 1_000_000))
        first["role"] = "robot"
        return _dump(obj), "messages[0].role"
    if kind == "structure":  # a prompt ending with the answer, or a sample without one
        if sample:
            obj["messages"] = obj["messages"][:-1]
        else:
            obj["messages"].append({"role": "assistant", "content": "an answer"})
        return _dump(obj), "messages"
    if kind == "metadata_type" and sample:
        obj["metadata"] = draw(st.one_of(st.lists(st.integers(), max_size=2), TEXT, st.integers()))
        return _dump(obj), "metadata"
    obj["reference_answer"] = draw(st.sampled_from(["", {}])) if not sample else None
    if sample:  # a sample's reference is free-form; its id is not
        obj.pop("id")
        return _dump(obj), "id"
    return _dump(obj), "reference_answer"


@st.composite
def mixed_file(draw, sample: bool):
    """Lines of a file: (bytes, expected) where expected is a valid record's (id, user text) or a bad line's field."""
    lines = []
    n_valid = 0
    for _ in range(draw(st.integers(1, 12))):
        rid = f"ok-{n_valid}"
        rec, user = draw(valid_record(rid, sample))
        if draw(st.booleans()):
            n_valid += 1
            lines.append((json.dumps(rec, ensure_ascii=draw(st.booleans())).encode(), ("ok", rid, user)))
        else:
            lines.append(draw(bad_line(rec, sample)) + ("bad",))
        if draw(st.integers(0, 5)) == 0:
            lines.append((draw(st.sampled_from([b"", b"   ", b"\t", b"\r"])), ("blank",)))
    return lines


def write_lines(path, lines) -> dict:
    """Write the lines; return {line number: what it holds}."""
    path.write_bytes(b"\n".join(raw for raw, *_ in lines) + b"\n")
    return {n: rest for n, (raw, *rest) in enumerate(lines, start=1)}


def check_reader(path, lines, res):
    numbered = {n: rest for n, (raw, *rest) in enumerate(lines, start=1)}
    valid = [(n, rest[0]) for n, rest in numbered.items() if rest[0][0] == "ok"]
    bad = {n: rest[0] for n, rest in numbered.items() if len(rest) == 2}
    # none lost, none invented, in order, with their text intact
    assert [r["id"] for r in res.records] == [v[1] for _, v in valid]
    for rec, (_, (_, _, user)) in zip(res.records, valid):
        assert rec["prompt"][-1]["content"] == user  # the last prompt turn (a sample's response is kept apart)
    # every bad line has a problem naming this file, that line and the expected field; nothing else has one
    assert {p.line for p in res.problems} == set(bad)
    for p in res.problems:
        assert p.path == str(path) and str(p).startswith(f"{path}:{p.line}: ")
    for n, want in bad.items():
        fields = [p.field for p in res.problems if p.line == n]
        assert any(f == want or f.startswith(want + ".") or f.startswith(want + "[") or
                   (want.startswith(("metadata.nest", "nest")) and f == "(line)") for f in fields), (n, want, fields)
    assert res.lines == sum(1 for raw, *_ in lines if raw.strip())


@settings(max_examples=60, **SETTINGS)
@given(lines=mixed_file(sample=False))
def test_dataset_reader_keeps_every_valid_record_and_names_every_bad_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("d") / "data.jsonl"
    write_lines(path, lines)
    check_reader(path, lines, read_jsonl(path))


@settings(max_examples=50, **SETTINGS)
@given(lines=mixed_file(sample=True))
def test_lambda_event_reader_keeps_every_valid_sample_and_names_every_bad_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("e") / "event.jsonl"
    write_lines(path, lines)
    check_reader(path, lines, read_jsonl_with(path, parse_lambda_sample))


def test_valid_records_carry_code_like_text_verbatim(tmp_path):
    """Dataset text that looks like a template or code is data: carried as written, never evaluated."""
    marker = tmp_path / "evaluated"
    texts = ["{{7*7}}", "${7*7}", f"__import__('pathlib').Path({str(marker)!r}).touch()", "{0.__class__.__mro__}",
             "%(secret)s", "$(touch x)", "`id`", "{% for x in y %}{{x}}{% endfor %}"]
    path = tmp_path / "code.jsonl"
    path.write_text("\n".join(json.dumps({"id": str(i), "messages": [{"role": "user", "content": t}],
                                          "reference_answer": t, "note": t}) for i, t in enumerate(texts)) + "\n")
    res = read_jsonl(path)
    assert not res.problems
    assert [r["prompt"][0]["content"] for r in res.records] == texts
    assert [r["reference_answer"] for r in res.records] == texts
    assert [json.loads(r["metadata"])["note"] for r in res.records] == texts
    assert not marker.exists()


# -- `rlaif data check` on a fixed mix: exit 1, file:line: field for each bad line, the refused count, no traceback -
def test_data_check_names_every_bad_line_and_counts_them(tmp_path):
    good = lambda i: {"id": f"ok-{i}", "messages": [{"role": "user", "content": f"question {i}"}]}  # noqa: E731
    bad = [
        (b'{"id": "x", "messages": [', "(line)"),
        (_splice(good(90) | {"messages": [{"role": "user", "content": "@@B@@"}]}, "@@B@@", b'"\xff"'), "(line)"),
        (json.dumps(good(91) | {"messages": [{"role": "robot", "content": "hi"}]}).encode(), "messages[0].role"),
        (json.dumps(good(92) | {"messages": [{"content": "hi"}]}).encode(), "messages[0].role"),
        (json.dumps(good(93) | {"messages": [{"role": "user", "content": " "}]}).encode(), "messages[0].content"),
        (json.dumps(good(94) | {"messages": [{"role": "user", "content": 7}]}).encode(), "messages[0].content"),
        (json.dumps(good(95) | {"id": 1.5}).encode(), "id"),
        (json.dumps(good(96) | {"score": math.nan}).encode(), "score"),
        (_splice(good(97) | {"meta": "@@D@@"}, "@@D@@", b"[" * 3000 + b"]" * 3000), "(line)"),
        (_splice(good(98) | {"meta": "@@D@@"}, "@@D@@", b"[" * 100 + b"]" * 100), "meta"),
        (json.dumps(good(99) | {"messages": [{"role": "user", "content": "a\ud800"}]}).encode(),
         "messages[0].content"),
        (b"[1, 2]", "(record)"),
        (json.dumps(good(100) | {"messages": [{"role": "robot", "content": "z" * 300_000}]}).encode(),
         "messages[0].role"),
    ]
    lines = []
    for i, (raw, fld) in enumerate(bad):
        lines.append((json.dumps(good(i)).encode(), None))
        lines.append((raw, fld))
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(raw for raw, _ in lines) + b"\n")
    p = subprocess.run([sys.executable, "-m", "rlaif.cli", "data", "check", str(path), "--local"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert "Traceback" not in p.stdout + p.stderr
    for n, (_, fld) in enumerate(lines, start=1):
        if fld is not None:
            assert f"{path}:{n}: {fld}" in p.stderr, (n, fld, p.stderr[-3000:])
    assert f"{len(bad)} valid record(s), {len(bad)} refused, {len(lines)} non-empty line(s)" in p.stdout


# -- tables ----------------------------------------------------------------------------------------------------------
ROW = st.fixed_dictionaries({
    "question": st.one_of(TEXT, st.sampled_from(["", "  ", None])),
    "answer": st.one_of(TEXT, st.sampled_from(["", None])),
    "score": st.one_of(st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf])),
})


@settings(max_examples=12, **SETTINGS)
@given(rows=st.lists(ROW, min_size=1, max_size=8))
def test_parquet_rows_are_kept_or_refused_by_row_and_column(tmp_path_factory, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("t") / "table.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("question", pa.string()), ("answer", pa.string()),
                                                               ("score", pa.float64())])), path)
    res = read_table(path, {"prompt": "question", "reference_answer": "answer"})
    ok = [n for n, r in enumerate(rows, start=1)
          if r["question"] and r["question"].strip() and r["answer"] != "" and math.isfinite(r["score"])]
    assert [rec.pop("_line") for rec in res.records] == ok
    assert [rec["prompt"][0]["content"] for rec in res.records] == [rows[n - 1]["question"] for n in ok]
    assert {p.line for p in res.problems} == set(range(1, len(rows) + 1)) - set(ok)
    for p in res.problems:
        assert p.path == str(path)
        assert p.field in ("messages", "messages[0].content", "reference_answer", "score")


def test_a_table_column_json_cannot_carry_is_refused_by_name(tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "dates.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt_text": "hi", "when": datetime.datetime(2026, 1, 1)}]), path)
    res = read_table(path, {"prompt": "prompt_text"})
    assert not res.records
    assert [str(p) for p in res.problems] == [f"{path}:1: when: a datetime is not a JSON value (store it as a string)"]


@settings(max_examples=10, **SETTINGS)
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)),
       suffix=st.sampled_from([".parquet", ".json", ".csv"]))
def test_a_broken_table_file_is_a_user_error_naming_it(tmp_path_factory, raw, suffix):
    path = tmp_path_factory.mktemp("b") / f"broken{suffix}"
    path.write_bytes(raw)
    try:
        res = read_table(path, {"prompt": "q"})
    except UserError as e:
        assert str(path) in str(e)
    else:  # a file that happens to parse: all its rows were still accounted for
        assert len(res.records) + len({p.line for p in res.problems}) == res.lines


# -- recipes ---------------------------------------------------------------------------------------------------------
SMOKE_DATA = yaml.safe_load(SMOKE.read_text())
HUGE = "HUGE_INT_SENTINEL"  # written into YAML files as a 5000-digit integer (too long for Python's int())


def dump_yaml(data, allow_unicode=True) -> bytes:
    return yaml.safe_dump(data, allow_unicode=allow_unicode).replace(HUGE, "9" * 5000).encode()
ODD = st.one_of(JSON_LEAF, st.sampled_from([math.nan, math.inf, HUGE, "a\x00b", "x" * 5000, "", [], {},
                                            "../../../etc/passwd", "!!python/object/apply:os.system"]),
                st.lists(JSON_LEAF, max_size=3), st.dictionaries(st.text(max_size=6), JSON_LEAF, max_size=3))


def _paths(d, prefix=()):
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


SMOKE_PATHS = list(_paths(SMOKE_DATA)) + [("rubric",), ("grpo", "not_a_field"), ("judge", "modle"), ("nova",),
                                           ("nova", "hyperparameters"), ("nova", "hyperparameters", "batchSize"),
                                           ("reward",), ("checks",), ("eval", "truth_regex"), ("extra_key",)]


@st.composite
def recipe_text(draw) -> bytes:
    """A recipe's bytes: the smoke recipe with random values put at random keys, or random YAML, or broken bytes."""
    how = draw(st.sampled_from(["mutate", "mutate", "mutate", "random", "text", "deep", "bytes", "tag"]))
    if how == "mutate":
        data = json.loads(json.dumps(SMOKE_DATA))
        for _ in range(draw(st.integers(1, 3))):
            keys = draw(st.sampled_from(SMOKE_PATHS))
            cur = data
            for k in keys[:-1]:
                cur = cur.setdefault(k, {}) if isinstance(cur, dict) else {}
            if isinstance(cur, dict):
                if draw(st.integers(0, 4)) == 0:
                    cur.pop(keys[-1], None)
                else:
                    cur[keys[-1]] = draw(ODD)
        return dump_yaml(data, allow_unicode=draw(st.booleans()))
    if how == "random":
        return dump_yaml(draw(JSON_VALUE))
    if how == "text":
        return draw(st.text(max_size=200)).encode()
    if how == "deep":
        n = draw(st.integers(50, 5000))
        return b"name: x\ngrpo: " + b"[" * n + b"]" * n + b"\n"
    if how == "tag":
        return draw(st.sampled_from([b"name: !!python/object/apply:os.system ['true']\n",
                                     b"!!python/object/new:dict {}\n", b"a: !!binary 'x'\n", b"a: !custom 1\n"]))
    return draw(st.binary(max_size=100)) + b"\xff"


@settings(max_examples=120, **SETTINGS)
@given(raw=recipe_text())
def test_a_bad_recipe_is_only_ever_a_user_error_naming_the_file(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("r") / "recipe.yaml"
    path.write_bytes(raw)
    try:
        load_recipe(path, check_files=False)
    except UserError as e:
        assert str(path) in str(e)


# -- rubrics ---------------------------------------------------------------------------------------------------------
BASE_RUBRIC = {"name": "r", "criteria": [{"name": "a", "question": "Is it a?"}, {"name": "b", "question": "b?",
                                                                                  "kind": "scale",
                                                                                  "levels": {i: str(i) for i in
                                                                                             range(1, 6)}}]}
RUBRIC_KEYS = ["name", "description", "criteria", "labels", "aggregation", "formula", "per_item", "unknown"]
CRIT_KEYS = ["name", "question", "kind", "levels", "weight", "essential", "uses_reference", "unknown"]
FORMULAS = st.one_of(st.text(max_size=40), st.sampled_from([
    "__import__('os').system('true')", "a.__class__", "(lambda: 1)()", "[x for x in (a, b)]", "a if b else 1",
    "open('x')", "min(a, b) * (0.5 + 0.5 * b)", "a ** 1000 ** 1000", "(" * 300 + "a" + ")" * 300,
    "+".join(["a"] * 5000), "a\x00", "exp(exp(exp(a)))"]))


@st.composite
def rubric_data(draw):
    data = json.loads(json.dumps(BASE_RUBRIC))
    for _ in range(draw(st.integers(1, 3))):
        crits = [c for c in data["criteria"] if isinstance(c, dict)] if isinstance(data["criteria"], list) else []
        target = data if not crits or draw(st.booleans()) else draw(st.sampled_from(crits))
        key = draw(st.sampled_from(RUBRIC_KEYS if target is data else CRIT_KEYS))
        target[key] = draw(FORMULAS if key == "formula" else ODD)
    if "formula" in data and draw(st.booleans()):
        data["aggregation"] = "formula"
    return data


@settings(max_examples=150, **SETTINGS)
@given(data=rubric_data(), as_file=st.booleans())
def test_a_bad_rubric_is_only_ever_a_user_error(tmp_path_factory, data, as_file):
    spec = data
    if as_file:
        spec = tmp_path_factory.mktemp("rb") / "rubric.yaml"
        spec.write_bytes(dump_yaml(data))
        spec = str(spec)
    try:
        rb = load_rubric(spec)
    except UserError as e:
        assert (spec if as_file else "rubric") in str(e)
    else:  # what loads can be used: any scores in [0, 1] aggregate to a reward in [0, 1] without raising
        reward = rb.aggregate({c.name: 0.5 for c in rb.criteria})
        assert 0.0 <= reward <= 1.0


@settings(max_examples=30, **SETTINGS)
@given(spec=st.one_of(st.text(max_size=300), st.sampled_from(["a\x00b", "x" * 5000, "../../etc", "says_please/.."])))
def test_a_rubric_name_that_is_no_file_is_a_user_error(spec):
    try:
        load_rubric(spec)
    except UserError as e:
        assert "rubric" in str(e)


# -- a reward Lambda's answer ----------------------------------------------------------------------------------------
NUMBER = st.one_of(st.integers(), st.floats(), st.just(10**400), st.booleans(), st.none(), st.text(max_size=5))
ENTRY = st.one_of(
    JSON_VALUE,
    st.fixed_dictionaries({"id": st.sampled_from(["s0", "s1", "s2", 3, None, ["s0"]]),
                           "aggregate_reward_score": NUMBER},
                          optional={"metrics_list": st.one_of(
                              JSON_VALUE, st.lists(st.fixed_dictionaries({"name": st.one_of(TEXT, st.integers()),
                                                                          "value": NUMBER}), max_size=3))}),
)


@settings(max_examples=300, **SETTINGS)
@given(out=st.one_of(JSON_VALUE, st.lists(ENTRY, max_size=6), st.just(10**400)))
def test_a_lambdas_answer_is_checked_and_never_raises(out):
    batch = [{"id": f"s{i}"} for i in range(3)]
    good, problems = check_response(out, batch)
    for entry in good.values():
        assert math.isfinite(entry["score"])
        assert all(math.isfinite(m["value"]) for m in entry["metrics"])
    missing = [s["id"] for s in batch if s["id"] not in good]
    if missing:  # every sample without a usable answer is counted
        assert any(f"no valid result for {len(missing)} sample(s)" in p or "not a list of results" in p
                   for p in problems)
    assert all(len(p) < 400 for p in problems)
