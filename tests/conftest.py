"""Shared fixtures. Integration tests share one real vLLM judge server (the tiny judge) per test session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "artifacts" / "tiny"
SMOKE = ROOT / "recipes" / "smoke.yaml"
sys.path.insert(0, str(ROOT / "tests" / "faults"))  # faultproxy and the fault helpers, for every test file


def pytest_configure(config):
    os.chdir(ROOT)  # recipes use paths relative to the repository root


@pytest.fixture(scope="session")
def tiny() -> Path:
    """The tiny models and datasets (built once, then cached by fingerprint)."""
    from rlaif.tiny.build import build
    build(TINY, log=lambda m: print(m, file=sys.stderr))
    return TINY


@pytest.fixture(scope="session")
def smoke_recipe(tiny):
    from rlaif.recipe import load_recipe
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
