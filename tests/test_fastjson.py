"""The judge client's JSON (rlaif/common/fastjson.py): the judgment log writes every row it is given as strict JSON,
and what orjson refuses still gets written, read or keyed, as the standard library would."""
import json

import numpy as np
import pytest

from rlaif.common import fastjson
from rlaif.judge.judgment_log import JudgmentLog


def _strict_rows(path):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(params=["orjson", "standard library"])
def encoder(request, monkeypatch):
    """Both ways the module writes: with orjson (the trainer environment) and without it (the GPU check's image)."""
    if request.param == "standard library":
        monkeypatch.setattr(fastjson, "orjson", None)
    return request.param


def test_a_judgment_row_with_numpy_values_is_written_not_lost(tmp_path, encoder):
    log = JudgmentLog(tmp_path / "j.jsonl")
    log.write([{"score": np.float32(0.5), "step": np.int64(3), "ok": np.bool_(True), "v": np.arange(2)}])
    log.close()
    assert _strict_rows(tmp_path / "j.jsonl") == [{"score": 0.5, "step": 3, "ok": True, "v": [0, 1]}]


def test_judgment_log_lines_are_strict_json_with_nan_and_infinity_as_null(tmp_path, encoder):
    log = JudgmentLog(tmp_path / "j.jsonl")
    log.write([{"score": float("nan"), "reward": float("-inf"), "parts": [float("inf"), 1.0]}, {"score": 0.25}])
    log.close()
    assert _strict_rows(tmp_path / "j.jsonl") == [{"score": None, "reward": None, "parts": [None, 1.0]},
                                                  {"score": 0.25}]


def test_a_row_orjson_refuses_is_written_by_the_standard_library(tmp_path, encoder):
    """An integer past 64 bits, a lone surrogate (bytes decoded with surrogateescape), a key that is not a string:
    each row is written whole and reads back as it was."""
    rows = [{"big": 2 ** 70}, {"text": "caf\u00e9 \udcff"}, {1: "int key"}, {"text": "\u6570 kept as is"}]
    log = JudgmentLog(tmp_path / "j.jsonl")
    log.write(rows)
    log.close()
    assert _strict_rows(tmp_path / "j.jsonl") == [{"big": 2 ** 70}, {"text": "caf\u00e9 \udcff"}, {"1": "int key"},
                                                  {"text": "\u6570 kept as is"}]
    assert "\u6570" in (tmp_path / "j.jsonl").read_text(encoding="utf-8")  # non-ASCII as is where it can be


def test_bodies_and_keys_read_back_and_keys_ignore_dict_order(encoder):
    body = {"model": "judge", "prompt": [[1, 2, 3], [4]], "max_tokens": 1, "extra": {"b": 1, "a": "\u00e9"}}
    assert json.loads(fastjson.dumps(body)) == body
    reordered = {"extra": {"a": "\u00e9", "b": 1}, "max_tokens": 1, "prompt": [[1, 2, 3], [4]], "model": "judge"}
    assert fastjson.dumps(body, sort_keys=True) == fastjson.dumps(reordered, sort_keys=True)
    assert fastjson.dumps(body, sort_keys=True) != fastjson.dumps(dict(body, max_tokens=2), sort_keys=True)


def test_replies_with_what_only_the_standard_library_reads_are_read(encoder):
    reply = b'{"choices": [{"logprobs": {"top_logprobs": [{"Yes": -0.1, "No": -Infinity, "x": NaN}]}}]}'
    tops = fastjson.loads(reply)["choices"][0]["logprobs"]["top_logprobs"][0]
    assert tops["Yes"] == -0.1 and tops["No"] == float("-inf") and tops["x"] != tops["x"]
    assert fastjson.loads('{"a": [1, "\u00e9"]}') == {"a": [1, "\u00e9"]}


def test_integers_past_64_bits_are_read_exactly_not_as_floats(encoder):
    """orjson reads an integer past 64 bits as a float (2**64 as 1.8446744073709552e+19); a reference answer of 21!
    or a big id in a record's metadata must reach the judge and the rules as written."""
    from rlaif.rewards.source import record_metadata
    for n in (2 ** 64, 2 ** 70, -(2 ** 63) - 1, 51090942171709440000, 2 ** 64 - 1, -(2 ** 63)):
        assert fastjson.loads(str(n)) == n and type(fastjson.loads(str(n))) is int, n
        assert fastjson.loads(f'{{"a": [{n}]}}'.encode()) == {"a": [n]}
    meta = record_metadata({"metadata": '{"id": 123456789012345678901234}', "nova_reference": "51090942171709440000"})
    assert meta == {"id": 123456789012345678901234, "reference_answer": 51090942171709440000}
    assert fastjson.loads("[0.30000000000000004, 1e-05, -2.3129999999999997]") == [0.30000000000000004, 1e-05,
                                                                                   -2.3129999999999997]


def test_a_reply_read_without_the_big_integer_scan_is_read_as_orjson_reads_it(encoder):
    """`big_ints=False` (a server's reply: ids, counts, logprobs) reads the same as the exact path for what a reply
    holds, NaN and -Infinity included."""
    reply = (b'{"id": "cmpl-1", "created": 1765090000, "choices": [{"index": 3, "logprobs": {"top_logprobs": '
             b'[{"token_id:151643": -0.10500000000000001, "x": -Infinity}]}}]}')
    assert fastjson.loads(reply, big_ints=False) == fastjson.loads(reply) == json.loads(reply)
