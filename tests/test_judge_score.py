"""`rlaif judge score` on a file of mixed good, empty and malformed Nova Lambda-event samples."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def sample(i, text, **extra):
    return {"id": i, "messages": [{"role": "user", "content": "write a short note about the cat"},
                                  {"role": "assistant", "content": text}], **extra}


def labelled(n: int) -> list[dict]:
    """Held-out labelled samples (the tiny judge's build asserts >= 95% accuracy over 2000 of them): a single
    answer of a model trained at build time differs from one CPU to another, its accuracy over many does not."""
    rows = [json.loads(ln) for ln in open("artifacts/tiny/data/judge_audit.jsonl")][:n]
    return [{"id": r["id"], "messages": r["messages"], "metadata": {"gold": r["labels"]["says_please"]}} for r in rows]


def test_score_writes_one_lambda_response_per_valid_sample(judge_url, tmp_path):
    gold = labelled(40)
    lines = [
        json.dumps(sample("good-1", " please sit on the mat", metadata={"reference_answer": "x", "domain": "d"})),
        json.dumps(sample("good-2", [{"type": "text", "text": "the dog "}, {"type": "text", "text": "ran fast"}],
                          reference_answer={"k": 1})),
        json.dumps({"id": "nova", "messages": [{"role": "user", "content": "hi"},
                                               {"role": "nova_assistant", "content": "please"}]}),
        json.dumps(sample("empty", "")),
        "{broken json",
        json.dumps({"id": "no-assistant", "messages": [{"role": "user", "content": "hi"}]}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}),
        json.dumps(sample("bad-role", "x") | {"messages": [{"role": "judge", "content": "PASS"}]}),
    ] + [json.dumps(g) for g in gold]
    inp = tmp_path / "samples.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    out = tmp_path / "verdicts.jsonl"
    cmd = [sys.executable, "-m", "rlaif.cli", "judge", "score", "recipes/smoke.yaml", "--input", str(inp),
           "--output", str(out), "--set", f"judge.base_url={judge_url}", "--set", f"output_dir={tmp_path / 'run'}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = {d["id"]: d for d in map(json.loads, out.read_text().splitlines())}
    assert list(got) == ["good-1", "good-2", "nova", "empty"] + [g["id"] for g in gold]
    for d in got.values():
        assert 0.0 <= d["aggregate_reward_score"] <= 1.0
        assert all(m["type"] in ("Reward", "Metric") for m in d["metrics_list"])
        assert d["rationale"]
    for sid in ["good-1", "good-2", "nova"] + [g["id"] for g in gold]:  # judged: the criterion, no failure
        metrics = {m["name"]: m for m in got[sid]["metrics_list"]}
        assert metrics["says_please"]["type"] == "Reward" and metrics["judge_failed"]["value"] == 0.0
        assert metrics["says_please"]["value"] == pytest.approx(got[sid]["aggregate_reward_score"], abs=1e-6)
    agree = sum((got[g["id"]]["aggregate_reward_score"] > 0.5) == g["metadata"]["gold"] for g in gold)
    assert agree >= 0.85 * len(gold)
    assert got["empty"]["aggregate_reward_score"] == 0.0
    assert {"name": "empty_response", "value": 1.0, "type": "Metric"} in got["empty"]["metrics_list"]
    for n in (5, 6, 7, 8):
        assert f"{inp}:{n}:" in r.stderr
    assert "must end with the assistant turn" in r.stderr and "id: required" in r.stderr
    assert "Traceback" not in r.stderr

    strict = subprocess.run(cmd + ["--strict"], capture_output=True, text=True, timeout=300)
    assert strict.returncode == 1
