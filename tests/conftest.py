"""Shared fixtures. Integration tests share one real vLLM judge server (the tiny judge) per test session."""
from __future__ import annotations

import json
import os
import signal
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
    # a suite started in the background by a non-interactive shell (`make test &`, some CI runners) inherits SIGINT
    # ignored, and every process it starts would too: the Ctrl-C tests' SIGINT would then do nothing. A handler,
    # unlike "ignored", is not inherited through exec, so the processes the tests start get Python's own.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    """Markers from the fixtures a test uses, so they cannot drift: a test of the real judge server is
    `integration`, a test of the tiny models is `models` (`make test-unit` runs neither), a test in tests/faults is
    `faults` (`make test-faults`)."""
    for item in items:
        if "faults" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.faults)
        names = set(getattr(item, "fixturenames", ()))
        if "judge_url" in names:
            item.add_marker(pytest.mark.integration)
        if names & {"tiny", "smoke_recipe", "judge_url", "short_run"}:
            item.add_marker(pytest.mark.models)


LANE_SECONDS: dict[str, float] = {}
LANE_TESTS: dict[str, int] = {}


def lane_of(keywords) -> str:
    """The lane a test runs in: `make test-unit`, `make test-integration` or `make test-faults`."""
    if "faults" in keywords:
        return "faults"
    return "integration" if "integration" in keywords or "models" in keywords else "unit"


def pytest_runtest_logreport(report):
    lane = lane_of(report.keywords)
    LANE_SECONDS[lane] = LANE_SECONDS.get(lane, 0.0) + report.duration  # setup, call and teardown
    if report.when == "call":
        LANE_TESTS[lane] = LANE_TESTS.get(lane, 0) + 1


def pytest_terminal_summary(terminalreporter):
    """The wall time per lane (tests run one after another, so their durations add up to it)."""
    if LANE_SECONDS:
        terminalreporter.write_sep("=", "wall time per lane")
        for lane in ("unit", "integration", "faults"):
            if lane in LANE_SECONDS:
                terminalreporter.write_line(f"{lane:12s} {LANE_TESTS.get(lane, 0):5d} tests {LANE_SECONDS[lane]:8.1f} s")


@pytest.fixture(scope="session")
def tiny() -> Path:
    """The tiny models and datasets, as shipped in artifacts/tiny (never rebuilt by a test: every machine runs the
    same weights). A stale world fails here, and in tests/test_tiny_world.py, with the command that rebuilds it."""
    from rlaif.tiny.shipped import status
    state, why = status(TINY)
    if state != "current":
        pytest.fail(f"{why}: run `make models` and commit artifacts/tiny", pytrace=False)
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
