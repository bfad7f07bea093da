"""`scripts/gpu_check.py --rollouts` at tiny size on the CPU: every way of generating rollouts without vLLM gets a
row (tokens/s, or the error it met), plain generate always works, the JSON has the numbers and the GRPO step with the
fastest option runs. Speed is not judged here (a busy 2-core CPU); the GPU numbers come from running the script.

The static-cache options compile with torch.compile's `eager` backend here: it takes the same code path (dynamo,
the static cache, the compiled call inside generate) in seconds rather than inductor's half a minute on 2 cores."""
import json
import subprocess
import sys

import pytest

# a subprocess of a minute or more that builds and times seven generation paths: the integration lane, not the unit one
pytestmark = pytest.mark.integration

# a GPU machine has only torch, transformers, peft and accelerate: --rollouts must run without these
NOT_ON_GPU_IMAGE = ("trl", "datasets", "vllm", "openai", "pydantic", "jsonschema", "boto3", "starlette", "uvicorn")
OPTIONS = ("generate", "static", "static+merge", "cb-graphs+merge", "generate+merge", "cb", "cb+merge")


def run_gpu_check(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    """scripts/gpu_check.py with the packages a GPU image lacks made unimportable."""
    block = f"import sys; sys.modules.update(dict.fromkeys({NOT_ON_GPU_IMAGE!r}))"
    launch = "import runpy; runpy.run_path('scripts/gpu_check.py', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", f"{block}; {launch}", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_rollout_options_tiny_on_cpu(tmp_path):
    out_json = tmp_path / "rollouts.json"
    p = run_gpu_check(["--tiny", "--device", "cpu", "--rollouts", "--rollout-models", "0.5b", "--rollout-batches",
                       "8,4", "--rollout-followup", "1", "--rollout-reps", "1", "--steps", "1", "--compile-backend",
                       "eager", "--json", str(out_json)], timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    out = p.stdout

    # the table: a row per option, each with its tokens/s or its error
    assert "| policy | seqs | option | warm-up s | s/call (median) | generated tok/s | vs generate |" in out
    for o in OPTIONS:
        assert f"| 0.5b | 8 | {o} |" in out, o
    assert "merge+unmerge round trip (0.5b)" in out
    assert "GRPO step at 8 x 8 with " in out
    assert out.strip().splitlines()[-1].startswith("gpu_check rollouts ok: ")

    res = json.loads(out_json.read_text())
    for k in ("mode", "device", "dtype", "prompt_len", "new_tokens", "batches", "options", "rows", "merge_drift",
              "step_estimate"):
        assert k in res, k
    assert res["mode"] == "rollouts" and res["options"] == list(OPTIONS)
    first = {r["option"]: r for r in res["rows"] if r["batch"] == 8}
    assert set(first) == set(OPTIONS)
    for o, r in first.items():
        if r["status"] in ("ok", "suspect"):
            assert r["tokens_per_s"] > 0 and r["call_s"] > 0 and r["warmup_s"] >= 0, o
            assert r["shape"] == [8, res["new_tokens"]] and "greedy" in r, o
        else:
            assert r["status"] in ("error", "skipped") and isinstance(r["error"], str) and r["error"], o
    # the options are what the script is for: at least one besides plain generate runs here (the CPU runs them all but
    # the CUDA-graph one), so a script that errors on every option cannot pass
    ran = [o for o, r in first.items() if o != "generate" and r["status"] in ("ok", "suspect")]
    assert len(ran) >= 1, {o: r.get("error") for o, r in first.items()}
    # plain generate is the baseline: it always works, its outputs are whole and it agrees with itself greedily
    g = first["generate"]
    assert g["status"] == "ok" and g["lengths_ok"] and g["speedup"] == 1.0
    assert g["greedy_rows_identical"] == 8
    # the second batch size runs generate and the fastest other option only
    second = [r["option"] for r in res["rows"] if r["batch"] == 4]
    assert second[0] == "generate" and len(second) == 2
    st = res["step_estimate"]
    assert st["option"] in OPTIONS and st["step_s"] > 0 and st["gen_s"] > 0 and st["judge_s"] > 0
    assert st["plain_generate_step_s_projected"] > 0 and "goal" in st
