"""The smoke recipes on a one-GPU machine (issue 25, finding F9): their judge takes a small GPU share, so the
colocated rollout engine of smoke-vllm (TRL's default 0.3 of the card), and a second judge replica, still pass
vLLM's free-memory check at start. Checked on the command line the judge is launched with, under a CUDA stand-in:
an `nvidia-smi` on PATH that answers as one GPU does (what `has_gpu()` asks)."""
from __future__ import annotations

import os
import sys

import pytest

from rlaif.config.judge import ServeSpec
from rlaif.config.recipe import load_recipe
from rlaif.judge.server import VLLMServer

SMOKE = ["recipes/smoke.yaml", "recipes/smoke-vllm.yaml", "recipes/smoke-mixed.yaml"]
TRL_VLLM_SHARE = 0.3  # GRPOConfig.vllm_gpu_memory_utilization's default: what smoke-vllm's engine asks for


def nvidia_smi(tmp_path, monkeypatch, gpu: bool) -> None:
    """An nvidia-smi first on PATH: one H100 (`-L` lists it), or one that fails as on a machine without a driver."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n" if gpu else "#!/bin/sh\nexit 9\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def judge_command(recipe: str) -> list[str]:
    r = load_recipe(recipe, [f"judge.serve.python={sys.executable}"], check_files=False)
    return VLLMServer.for_judge(r.judge, None).command()


def share(cmd: list[str]) -> float | None:
    return float(cmd[cmd.index("--gpu-memory-utilization") + 1]) if "--gpu-memory-utilization" in cmd else None


@pytest.mark.parametrize("recipe", SMOKE)
def test_on_a_gpu_the_smoke_judge_leaves_room_for_the_rollout_engine(recipe, tmp_path, monkeypatch):
    nvidia_smi(tmp_path, monkeypatch, gpu=True)
    s = share(judge_command(recipe))
    assert s is not None, "the judge would take vLLM's default 0.9 of the GPU"
    # two replicas (the replica tests) and the rollout engine fit one card, with the trainer's 5% besides
    assert 2 * s + TRL_VLLM_SHARE <= 0.95


@pytest.mark.parametrize("recipe", SMOKE)
def test_on_a_cpu_the_smoke_judge_command_is_as_before(recipe, tmp_path, monkeypatch):
    nvidia_smi(tmp_path, monkeypatch, gpu=False)
    assert share(judge_command(recipe)) is None  # the CPU backend sizes its cache by VLLM_CPU_KVCACHE_SPACE


def test_a_recipe_that_gives_the_share_in_extra_args_keeps_it(tmp_path, monkeypatch):
    nvidia_smi(tmp_path, monkeypatch, gpu=True)
    assert share(judge_command("recipes/qwen2.5-1.5b_judge-qwen2.5-7b.yaml")) == 0.45
    with pytest.raises(ValueError, match="give the GPU memory share once"):
        ServeSpec(gpu_memory_utilization=0.1, extra_args=["--gpu-memory-utilization", "0.2"])
