"""`python3 scripts/gpu_check.py --first-day` at tiny size on the CPU, with only what the GPU image has (torch,
transformers, peft, accelerate, pyyaml): every section prints and lands in the JSON, the memory section loads the
weights as rlaif does (bf16 base, fp32 LoRA) and as TRL alone does (fp32), and the rollouts table follows. The GPU
numbers come from running it on a GPU (benchmarks/RESULTS.md)."""
import json

import pytest
from test_gpu_rollouts import run_gpu_check

pytestmark = pytest.mark.integration  # a subprocess that builds and times models: not the unit lane


def test_first_day_tiny_on_cpu_with_only_the_gpu_images_packages(tmp_path):
    out_json = tmp_path / "first-day.json"
    p = run_gpu_check(["--first-day", "--tiny", "--device", "cpu", "--rollout-models", "0.5b", "--rollout-batches",
                       "8", "--rollout-reps", "1", "--rollout-options", "generate,cb", "--steps", "1", "--json",
                       str(out_json)], timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    out = p.stdout
    assert "## rlaif gpu_check --first-day" in out and "| torch_cuda |" in out and "| nvidia_smi |" in out
    assert "### bf16 vs fp32: log-probability gap of the policy forward" in out
    assert "### GRPO optimisation micro-step: peak memory with the recipes' dtypes" in out
    assert "## rlaif gpu_check --rollouts" in out
    assert out.strip().splitlines()[-1].startswith("gpu_check first-day ok: ")

    res = json.loads(out_json.read_text())
    assert {"versions", "noise", "memory", "rollouts"} <= set(res)
    assert res["versions"]["cuda_available"] is False and res["versions"]["nvidia_smi"] == "not found"
    for shape in ("0.5b", "1.5b"):
        pairs = res["noise"][shape]["pairs"]
        assert set(pairs) == {"fp32 | bf16 weights", "bf16 sdpa | bf16 eager", "bf16 weights | trainer (rlaif)",
                              "bf16 weights | trainer (TRL alone)"}
        assert pairs["fp32 | bf16 weights"]["mean_gap_median"] > 0  # bf16 rounds
        # rlaif's trainer at the first sync (bf16 base, zero fp32 adapter, bf16 autocast) is the bf16 forward
        assert pairs["bf16 weights | trainer (rlaif)"]["max_token_gap"] == 0.0
    mem = res["memory"]
    assert set(mem) == {"1.5b rlaif", "1.5b TRL alone", "7b rlaif", "7b TRL alone"}
    assert mem["1.5b rlaif"]["weights"] == "bfloat16" and mem["1.5b rlaif"]["lora"] == ["float32"]
    assert mem["1.5b TRL alone"]["weights"] == "float32"
    f = mem["7b rlaif"]["formula_gb"]
    assert f["total"] > 0 and f["weights"] * 2 == pytest.approx(mem["7b TRL alone"]["formula_gb"]["weights"])
    rollouts = json.loads((tmp_path / "first-day.rollouts.json").read_text())
    assert res["rollouts"]["rc"] == 0 and [r["option"] for r in rollouts["rows"]] == ["generate", "cb"]
