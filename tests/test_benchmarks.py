"""The benchmark scripts and the GPU check run and print their result lines (their numbers are not judged here:
speed is measured by running them, see benchmarks/RESULTS.md)."""
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def run(args: list[str], timeout: int = 240) -> str:
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_judge_throughput_quick(judge_url):
    out = run(["benchmarks/judge_throughput.py", "--quick", "--base-url", judge_url, "--modes", "logprob,verdict"])
    for client in ("(a) sequential", "(b) asyncio.gather", "(c) rlaif", "(d) rlaif"):
        assert client in out
    assert "logprob / verdict judgments/s" in out and "prefix-cache hit rate" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("ratio_vs_gather=") and " ratio_vs_sequential=" in last
    assert float(last.split()[0].split("=")[1]) > 0


def test_step_breakdown_quick(judge_url):
    out = run(["benchmarks/step_breakdown.py", "--quick", "--base-url", judge_url])
    assert "| judging (reward functions) |" in out and "| generation (policy rollouts) |" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("step_s=") and "judge_share=" in last


def test_client_overhead_quick(tiny):
    """benchmarks/client_overhead.py against its own instant stub judge (no vLLM server): every table, bodies of the
    minimal client equal to rlaif's, and the last line with three positive numbers (not a speed)."""
    out = run(["benchmarks/client_overhead.py", "--quick"], timeout=600)
    for heading in ("## The stub alone", "## Clients:", "## rlaif's CPU per training step", "## Where (a)'s CPU goes"):
        assert heading in out
    for row in ("| logprob | 1 | short | 256 |", "| logprob | 5 | short | 260 |", "| verdict | 1 | short | 256 |",
                "| 1.5B recipe"):
        assert row in out
    assert "| NO |" not in out  # the minimal client sent rlaif's request bodies
    m = re.fullmatch(r"client_rps=(\d+) ratio_vs_minimal=([\d.]+) ratio_vs_floor=([\d.]+)", out.strip().splitlines()[-1])
    assert m and all(float(x) > 0 for x in m.groups())


# what a GPU machine with only torch, transformers, peft and accelerate lacks: gpu_check must run without them
NOT_ON_GPU_IMAGE = ("trl", "datasets", "vllm", "openai", "pydantic", "jsonschema", "boto3", "starlette", "uvicorn")


def test_gpu_check_tiny_on_cpu(tiny):
    # None in sys.modules makes `import x` fail and find_spec("x") answer None, as on a machine without x
    block = f"import sys; sys.modules.update(dict.fromkeys({NOT_ON_GPU_IMAGE!r}))"
    launch = "import runpy; runpy.run_path('scripts/gpu_check.py', run_name='__main__')"
    out = run(["-c", f"{block}; {launch}", "--tiny", "--device", "cpu",
               "--steps", "2"])
    for row in ("seconds per step", "generated tokens/s", "judgments/s (in-process judge)", "judge tokens/s",
                "judge share", "peak memory", "MFU vs bf16 peak"):
        assert f"| {row}" in out
    assert "gpu_check ok: 2 steps" in out


def test_gpu_check_says_when_there_is_no_gpu():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the message for machines without one cannot show")
    p = subprocess.run([sys.executable, "scripts/gpu_check.py"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "no CUDA device" in p.stderr


def test_rollouts_benchmark_quick(judge_url, tiny):
    """benchmarks/rollouts.py in the trainer environment: the vLLM-in-process row (its timers around TRL's
    construction, generation and weight sync), not failed. The transformers row is the same code without a sync
    (its engine trains in most other tests); the asynchronous row's columns are TRL's metrics, read by
    `async_columns`, which test_vllm_rollouts.py's asynchronous run checks on its own summary (each run costs a
    vLLM start: three took 85-95 s here)."""
    p = subprocess.run([sys.executable, "benchmarks/rollouts.py", "--quick", "--engines", "vllm",
                        "--base-url", judge_url], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    row = next(line for line in p.stdout.splitlines() if line.startswith("| smoke | vllm |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert all(c not in ("-", "") for c in cells[2:9]), row  # every timer measured something, the sync included
    assert "failed:" not in p.stdout
    assert p.stdout.strip().splitlines()[-1] == "runs=1 failed=0"


def test_guard_noise_tiny(tiny, tmp_path):
    out = run(["benchmarks/guard_noise.py", "--models", "tiny", "--prompts", "2", "--json", str(tmp_path / "n.json")])
    assert "| tiny (0.4M) | fp32 | bf16 weights |" in out
    assert "| tiny (0.4M) | bf16 weights | bf16 autocast (zero LoRA) | 0.00e+00 |" in out  # the same kernels on CPU
