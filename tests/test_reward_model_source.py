"""`rewards: [{kind: reward_model, ...}]`: a reward model trained by `rlaif rm train` as a reward source, in this
process (backend: transformers) and behind vLLM's pooling runner (backend: vllm), mixed with other sources."""
from __future__ import annotations

import asyncio
import contextlib
import json
import math

import pytest
from prefs_world import preference_rows, train_tiny_rm

from rlaif.common.ports import free_port
from rlaif.config.recipe import load_recipe
from rlaif.data.samples import Sample
from rlaif.factory import Endpoints, compose, make_sources
from rlaif.judge.judgment_log import JudgmentLog
from rlaif.judge.rm_client import PoolingClient
from rlaif.rewards.reward_model_source import RewardModelSource, normalise


@pytest.fixture(scope="module")
def tiny_rm(tiny, tmp_path_factory):
    return train_tiny_rm(tmp_path_factory.mktemp("rm"))


def samples(n: int = 12) -> tuple[list[Sample], list[bool]]:
    """Half the answers say please (the truth rule), half do not, alternating."""
    rows = preference_rows(n // 2, seed=7)
    out, says = [], []
    for i, r in enumerate(rows):
        for key in ("chosen", "rejected"):
            out.append(Sample(id=f"{r['id']}#{key}", prompt=r["prompt"], response=r[key][0]["content"],
                              metadata={"topic": "cat"}))
            says.append(key == "chosen")
    return out, says


def test_normalise_sigmoid_none_zscore():
    assert normalise([0.0, None, 2.0], "sigmoid") == [0.5, None, pytest.approx(1 / (1 + math.exp(-2)))]
    assert normalise([1.0, None, 3.0], "none") == [1.0, None, 3.0]
    assert normalise([1.0, None, 3.0], "zscore") == [-1.0, None, 1.0]
    assert normalise([2.0, 2.0], "zscore") == [0.0, 0.0]  # no spread: centred, not divided by 0


def test_in_process_reward_model_mixes_with_a_rule_and_logs_like_every_source(tiny_rm, tmp_path):
    recipe = load_recipe("recipes/smoke.yaml", [
        f"rewards=[{{kind: reward_model, name: rm, model: '{tiny_rm}', backend: transformers}}, "
        "{kind: verifiable, name: topic, check: reference_contained, field: topic}]"])
    log = JudgmentLog(tmp_path / "judgments.jsonl")
    with contextlib.ExitStack() as stack:
        sources = make_sources(recipe, Endpoints(recipe, tmp_path, None, stack), log, self_test=False)
        rm = sources[0]
        assert isinstance(rm, RewardModelSource)
        batch, says = samples()
        scored = asyncio.run(rm.score(batch, step=3))
        combined = asyncio.run(compose(recipe, sources).score(batch, step=3))
        log.close()
    good = [r for r, s in zip(scored.rewards, says) if s]
    bad = [r for r, s in zip(scored.rewards, says) if not s]
    assert all(0 < r < 1 for r in scored.rewards)
    assert sum(g > b for g, b in zip(good, bad)) >= 5  # it prefers the answer that says please
    assert scored.metrics["rm/fail_rate"] == 0 and "rm/raw_mean" in scored.metrics
    assert len(scored.columns["rm_raw"]) == len(batch)
    assert len(combined.rewards) == len(batch) and all(r is not None for r in combined.rewards)
    rows = [json.loads(x) for x in (tmp_path / "judgments.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["criterion"].startswith("reward_model:")]
    assert len(mine) == 2 * len(batch) and {r["step"] for r in mine} == {3} and mine[0]["source"] == "rm"
    assert rm.summary()["samples"] == 2 * len(batch) and rm.summary()["failed"] == 0


def score_once(src, batch):
    """One batch through a reward source, as a training step scores it, its clients closed after."""
    async def go():
        try:
            return await src.score(batch, step=0)
        finally:
            await src.aclose()
    return asyncio.run(go())


def test_an_unreachable_pooling_server_fails_the_batch_counted_and_left_out(tiny_rm):
    """Nothing listens at the URL (never answered, so not waited for): every sample is None, counted, and the
    failure window stops the run once it has seen enough."""
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    client = PoolingClient([url], "rm", str(tiny_rm), max_retries=1, timeout_s=5, backoff_base_s=0.01)
    src = RewardModelSource(client, name="rm", model=str(tiny_rm), max_fail_rate=0.2)
    batch, _ = samples(40)
    scored = score_once(src, batch)
    assert scored.rewards == [None] * 40 and scored.metrics["rm/fail_rate"] == 1.0
    assert src.summary()["failed"] == 40 and client.requests == 2  # one request for the batch, one retry
    assert src.summary()["fallbacks"] == 0  # left out: no value stood in for them
    assert src.failures.stop_reason and "reward model" in src.failures.stop_reason


def test_a_missing_reward_model_folder_is_named(tiny, tmp_path):
    from rlaif.errors import UserError
    recipe = load_recipe("recipes/smoke.yaml", ["rewards=[{kind: reward_model, model: runs/nothing-rm}]"])
    with contextlib.ExitStack() as stack, pytest.raises(UserError, match="model folder not found: runs/nothing-rm"):
        make_sources(recipe, Endpoints(recipe, tmp_path, None, stack), JudgmentLog(None), self_test=False)


def test_the_reward_model_key_comes_from_the_environment_and_is_never_shown(monkeypatch, tmp_path):
    from rlaif.config.rewards import RewardModelSourceSpec
    from rlaif.errors import UserError
    from rlaif.judge.server import VLLMServer

    monkeypatch.setenv("RLAIF_RM_API_KEY", "s3cret-rm")
    spec = RewardModelSourceSpec(kind="reward_model", model=str(tmp_path / "rm"))
    assert spec.api_key == "s3cret-rm" and "s3cret-rm" not in repr(spec) and "s3cret-rm" not in str(spec)
    monkeypatch.delenv("RLAIF_RM_API_KEY")
    assert RewardModelSourceSpec(kind="reward_model", model="rm").api_key is None
    # bound beyond loopback with no key: the message names the reward model's settings, not the judge's
    with pytest.raises(UserError) as e:
        VLLMServer("rm", "rm", host="0.0.0.0", role="reward model", python="python")
    assert "reward model" in str(e.value) and "RLAIF_RM_API_KEY" in str(e.value) and "judge" not in str(e.value)
