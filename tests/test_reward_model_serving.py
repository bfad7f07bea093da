"""A reward model trained by `rlaif rm train`, served by a real vLLM pooling server on 127.0.0.1: it scores as
transformers does, a short GRPO run trains against it, and a server killed mid-run costs no sample. One server
serves the module, launched and supervised as a recipe's source launches it (a vLLM start is the slow part here);
the kill test comes last and leaves it restarted."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest
from prefs_world import train_tiny_rm
from procs import wait_for
from test_reward_model_source import samples, score_once

from rlaif.config.recipe import load_recipe
from rlaif.factory import Endpoints, make_sources
from rlaif.judge.judgment_log import JudgmentLog
from rlaif.judge.reward_model import LocalRewardModel
from rlaif.judge.rm_client import PoolingClient

pytestmark = pytest.mark.integration
RLAIF = [sys.executable, "-m", "rlaif.cli"]
CPU_SERVE = "{extra_args: [--enforce-eager, --block-size, '32'], dtype: float32}"


@pytest.fixture(scope="module")
def tiny_rm(tiny, tmp_path_factory):
    return train_tiny_rm(tmp_path_factory.mktemp("rm"))


@pytest.fixture(scope="module")
def launched(tiny_rm, tmp_path_factory):
    """The reward model's source as a recipe builds it: its pooling server (vLLM `--runner pooling`) launched and
    supervised, stopped when the module ends. Yields (source, run dir, the server's URL)."""
    run_dir = tmp_path_factory.mktemp("rm_server")
    recipe = load_recipe("recipes/smoke.yaml", [
        f"rewards=[{{kind: reward_model, name: rm, model: '{tiny_rm}', serve: {CPU_SERVE}}}]"])
    with contextlib.ExitStack() as stack:
        (src,) = make_sources(recipe, Endpoints(recipe, run_dir, None, stack), JudgmentLog(None), self_test=False)
        (url,) = src.backend.urls
        yield src, run_dir, url


@pytest.fixture(scope="module")
def pooling_url(launched):
    return launched[2]


def test_vllm_pooling_scores_as_transformers(tiny_rm, pooling_url):
    batch, _ = samples(24)
    prompts, responses = [s.prompt for s in batch], [s.response for s in batch]
    local = LocalRewardModel(str(tiny_rm), device="cpu", dtype="float32").score(prompts, responses)
    client = PoolingClient([pooling_url], "rm", str(tiny_rm), batch_size=10)

    async def go():
        try:
            return await client.score(prompts, responses)
        finally:
            await client.aclose()
    served, error = asyncio.run(go())
    assert error is None and client.requests == 3  # 24 conversations, 10 a request
    # measured here: at most 3.3e-6 apart (fp32 on both sides, the same token ids)
    assert max(abs(a - b) for a, b in zip(local, served)) < 1e-4


def test_grpo_trains_against_the_served_reward_model(tiny_rm, pooling_url, tmp_path):
    out = tmp_path / "run"
    rewards = f"[{{kind: reward_model, name: rm, model: '{tiny_rm}', base_url: '{pooling_url}'}}]"
    r = subprocess.run(RLAIF + ["train", "recipes/smoke.yaml", "--set", f"rewards={rewards}",
                                "--set", f"output_dir={out}", "--set", "grpo.max_steps=10",
                                "--set", "grpo.logging_steps=1", "--set", "grpo.per_device_train_batch_size=16",
                                "--set", "grpo.save_strategy=no", "--set", "eval.every_steps=null"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "starting the vLLM judge server" not in r.stderr  # no judge: the reward model is the whole reward
    s = json.loads((out / "train_summary.json").read_text())
    logged = [h for h in s["log_history"] if "rewards/rm/mean" in h]
    assert len(logged) == 10 and all(0 < h["rewards/rm/mean"] < 1 for h in logged)
    assert all(h.get("rm/fail_rate") == 0 for h in logged)
    rows = [json.loads(x) for x in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(rows) == 10 * 16 and {r["source"] for r in rows} == {"rm"}


def test_a_killed_pooling_server_is_restarted_and_costs_no_sample(launched):
    """The source's server (supervised, like the judge's), killed before a batch: the batch waits for the restart in
    the pool and is scored whole. (Last in the module: the server it leaves is the restarted one.)"""
    src, run_dir, _ = launched
    batch, _ = samples(16)
    before = score_once(src, batch)
    os.killpg(int((run_dir / "rm_server.pid").read_text()), signal.SIGKILL)
    after = score_once(src, batch)
    # the supervisor counts the restart when its restart() returns, and the pool may have put the server back (a
    # real request answered) a moment before that: CI run 4 of stop 32 read the summary in between (restarts 0)
    wait_for(lambda: src.summary()["server_restarts"] > 0, 60, "the supervisor to count the restart", poll_s=0.1)
    summary = src.summary()
    assert None not in before.rewards and None not in after.rewards
    assert after.rewards == pytest.approx(before.rewards, abs=1e-4)
    assert summary["failed"] == 0 and summary["server_restarts"] == 1 and summary["outage_wait_s"] > 0
    assert src.failures.stop_reason is None
