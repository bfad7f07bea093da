"""Shared fixtures. Integration tests share one real vLLM judge server (the tiny judge) per test session."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "artifacts" / "tiny"
SMOKE = ROOT / "recipes" / "smoke.yaml"
sys.path.insert(0, str(ROOT / "tests" / "faults"))  # faultproxy and the fault helpers, for every test file


def pytest_configure(config):
    os.chdir(ROOT)  # recipes use paths relative to the repository root


def pytest_collection_modifyitems(config, items):
    """Markers from the fixtures a test uses, so they cannot drift: a test of the real judge server is
    `integration`, a test of the tiny models is `models` (`make test-unit` runs neither)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "judge_url" in names:
            item.add_marker(pytest.mark.integration)
        if names & {"tiny", "smoke_recipe", "judge_url", "short_run"}:
            item.add_marker(pytest.mark.models)


@pytest.fixture(scope="session")
def tiny() -> Path:
    """The tiny models and datasets (built once, then cached by fingerprint)."""
    from rlaif.tiny.build import build
    build(TINY, log=lambda m: print(m, file=sys.stderr))
    return TINY


@pytest.fixture(scope="session")
def smoke_recipe(tiny):
    from rlaif.config.recipe import load_recipe
    return load_recipe(SMOKE)


@pytest.fixture(scope="session")
def judge_url(tiny, smoke_recipe, tmp_path_factory):
    """A real vLLM server serving the tiny judge on a free loopback port, for the whole test session."""
    from rlaif.judge.server import VLLMServer

    if os.environ.get("RLAIF_TEST_JUDGE_URL"):  # a developer's running `rlaif judge serve recipes/smoke.yaml`
        yield os.environ["RLAIF_TEST_JUDGE_URL"]
        return
    log = tmp_path_factory.mktemp("judge") / "judge_server.log"
    server = VLLMServer.for_judge(smoke_recipe.judge, log)
    server.start()
    yield server.base_url
    server.stop()


RLAIF = [sys.executable, "-m", "rlaif.cli"]


def train(judge_url, out, steps, *extra):
    cmd = RLAIF + ["train", "recipes/smoke.yaml", "--set", f"judge.base_url={judge_url}", "--set", f"output_dir={out}",
                   "--set", f"grpo.max_steps={steps}", "--set", "grpo.save_steps=2", "--set", "grpo.logging_steps=1",
                   "--set", "grpo.per_device_train_batch_size=16", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "train_summary.json").read_text()), r


@pytest.fixture(scope="session")
def short_run(judge_url, tiny, tmp_path_factory):
    """One short GRPO + LoRA run for the session: 4 steps, validation (with the regex's second opinion) every 2
    steps on 4 held-out prompts, metrics to TensorBoard too. test_train_integration later resumes it to 6."""
    out = tmp_path_factory.mktemp("run") / "short"
    summary, r = train(judge_url, out, 4, "--set", "eval.every_steps=2", "--set", "eval.val_prompts=4",
                       "--set", "grpo.report_to=tensorboard")
    judgments = (out / "judgments.jsonl").read_text().splitlines()
    return out, summary, judgments, r.stderr
