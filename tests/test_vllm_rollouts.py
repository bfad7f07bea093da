"""vLLM rollouts (rollouts.engine: vllm): the recipe key, the traps, and the stale-weight guard in real runs.

The runs use the trainer environment (.venv, which holds vLLM as `pip install trl[vllm]` does), the tiny policy
and the session's real judge server. `make smoke-vllm` (in CI) is the end-to-end check with bars.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from rlaif.config.recipe import load_recipe
from rlaif.config.rollouts import RolloutsSpec, grpo_rollout_settings
from rlaif.errors import UserError
from rlaif.train import vllm_rollouts

ROLLOUTS_PY = Path(sys.executable)  # the trainer environment, vLLM included (`make setup`)


# ---- the recipe key -------------------------------------------------------------------------------------------

def test_the_engine_maps_onto_trls_switches():
    assert grpo_rollout_settings(RolloutsSpec(), {}, "r.yaml") == {}
    assert grpo_rollout_settings(RolloutsSpec(engine="vllm"), {}, "r.yaml") == {"use_vllm": True,
                                                                                 "vllm_mode": "colocate"}
    assert grpo_rollout_settings(RolloutsSpec(engine="transformers-paged"), {}, "r.yaml") == \
        {"use_transformers_continuous_batching": True}


def test_a_contradiction_between_the_engine_and_grpo_is_refused():
    with pytest.raises(UserError, match="grpo.use_vllm: True contradicts rollouts.engine: transformers-paged"):
        grpo_rollout_settings(RolloutsSpec(engine="transformers-paged"), {"use_vllm": True}, "r.yaml")
    with pytest.raises(UserError, match="rollouts.async: .* set rollouts.engine: vllm"):
        grpo_rollout_settings(RolloutsSpec.model_validate({"async": {}}), {}, "r.yaml")


def test_recipes_select_their_engine():
    assert load_recipe("recipes/smoke-vllm.yaml", check_files=False).rollouts.engine == "vllm"
    assert load_recipe("recipes/smoke.yaml", check_files=False).rollouts.engine == "transformers"
    # a recipe written for TRL alone (grpo.use_vllm: true) is a vLLM-rollouts recipe
    gpu = load_recipe("recipes/qwen2.5-1.5b_judge-qwen2.5-7b_vllm-rollouts.yaml", check_files=False)
    assert gpu.rollouts.engine == "vllm"
    with pytest.raises(UserError, match="contradicts rollouts.engine"):
        load_recipe("recipes/qwen2.5-1.5b_judge-qwen2.5-7b_vllm-rollouts.yaml",
                    ["rollouts.engine=transformers"], check_files=False)


def test_smoke_vllm_differs_from_the_smoke_only_in_name_and_rollouts():
    a = load_recipe("recipes/smoke.yaml", check_files=False).model_dump(by_alias=True)
    b = load_recipe("recipes/smoke-vllm.yaml", check_files=False).model_dump(by_alias=True)
    assert {k for k in a if a[k] != b[k]} == {"name", "rollouts"}


# ---- the traps ------------------------------------------------------------------------------------------------

def test_the_engine_gets_the_training_dtype_and_eager_mode_on_cpu():
    assert vllm_rollouts.engine_kwargs(RolloutsSpec(), "float32", cuda=False) == \
        {"dtype": "float32", "enforce_eager": True}
    assert vllm_rollouts.engine_kwargs(RolloutsSpec(), "bfloat16", cuda=True) == \
        {"dtype": "bfloat16", "enforce_eager": False}  # CUDA graphs stay on where they pay
    spec = RolloutsSpec(vllm_dtype="bfloat16", vllm_enforce_eager=False)
    assert vllm_rollouts.engine_kwargs(spec, "float32", cuda=False) == {"dtype": "bfloat16", "enforce_eager": False}


def test_building_the_engine_leaves_rngs_threads_and_ld_preload_as_they_were(monkeypatch):
    """What vLLM's engine does to the process (reseed, a no-op torch.set_num_threads, LD_PRELOAD) is undone."""
    import numpy as np
    import torch

    monkeypatch.setenv("LD_PRELOAD", "")
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = random.random(), np.random.rand(), torch.rand(1).item()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    set_num_threads = torch.set_num_threads
    with vllm_rollouts._global_state_kept():
        random.seed(0), np.random.seed(0), torch.manual_seed(0)
        torch.set_num_threads = lambda n: None
        os.environ["LD_PRELOAD"] = "/x/libtcmalloc.so:/y/libgomp.so"
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert torch.set_num_threads is set_num_threads
    assert os.environ["LD_PRELOAD"] == ""


def test_without_vllm_the_recipe_says_which_environment_to_use(monkeypatch):
    """An environment without vLLM (a user's own, say): the run stops before anything starts, naming the one that
    has it and the launch lines that use it."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else find_spec(name, *a))
    with pytest.raises(UserError, match=r"make setup.*\.venv/bin/accelerate launch"):
        vllm_rollouts.require_vllm(RolloutsSpec(engine="vllm"))
    vllm_rollouts.require_vllm(RolloutsSpec())  # transformers rollouts need nothing more


def test_the_guard_checks_after_syncs_from_step_1_and_stops_on_a_gap(monkeypatch):
    """The guard's schedule and decision, with the engine and the trainer's logprobs given: no check at step 0 (a
    zero LoRA adapter agrees with a sync that did nothing), then every check_every steps; above the bound it asks
    the run to stop, and each gap goes into TRL's metrics. With sleep mode the KV cache is woken first."""
    from collections import defaultdict
    from types import SimpleNamespace

    gaps = {1: 0.0, 3: 0.01, 5: 0.3}
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=0), model=None,
                              _metrics={"train": defaultdict(list)})
    woken = []
    llm = SimpleNamespace(wake_up=lambda tags: woken.append(tuple(tags)))
    synced = []
    trainer.vllm_generation = SimpleNamespace(llm=llm, enable_sleep_mode=True,
                                              sync_weights=lambda: synced.append(trainer.state.global_step))
    monkeypatch.setattr(vllm_rollouts, "engine_logprobs", lambda llm, ids: [0.0, 0.0])
    monkeypatch.setattr(vllm_rollouts, "trainer_logprobs",
                        lambda model, ids: [gaps[trainer.state.global_step]] * 2)
    guard = vllm_rollouts.make_guard(RolloutsSpec(engine="vllm", check_every=2, max_logprob_gap=0.05), [1, 2, 3])
    guard.attach(trainer)
    for step in range(6):
        trainer.state.global_step = step
        trainer.vllm_generation.sync_weights()
    assert synced == list(range(6))  # TRL's sync still runs, every time
    assert [c["step"] for c in guard.checks] == [1, 3, 5] and woken == [("kv_cache",)] * 3
    assert trainer._metrics["train"]["rollouts/logprob_gap"] == [0.0, 0.01, 0.3]
    assert guard.should_stop and "after the weight sync at step 5" in guard.stop_reason
    assert guard.summary()["logprob_gap_max"] == 0.3


def test_engine_environment_is_set_for_the_construction_only(monkeypatch):
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    with vllm_rollouts._env_set({"MASTER_PORT": "12345", "VLLM_CPU_KVCACHE_SPACE": "1"}):
        assert os.environ["MASTER_PORT"] == "12345" and os.environ["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "MASTER_PORT" not in os.environ and os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_async_metrics_sum_counters_and_keep_the_worst_staleness():
    from rlaif.train.async_grpo import async_metrics

    logs = [{"loss": 1, "sample/dropped_stale_total": 3.0, "sample/staleness_max": 1.0, "perf/rollout_wait_s": 2.0},
            {"loss": 1, "sample/dropped_stale_total": 5.0, "sample/staleness_max": 0.0, "perf/rollout_wait_s": 4.0},
            {"train_runtime": 9.0}]
    m = async_metrics(logs)
    assert m["sample/dropped_stale_total"] == 8.0 and m["sample/staleness_max"] == 1.0
    assert m["perf/rollout_wait_s"] == 3.0


def test_a_vllm_rollout_recipe_without_vllm_says_which_env_before_starting_anything(tiny, tmp_path):
    """`rlaif train` in an environment without vLLM (stood in for by hiding it from the import system)."""
    t0 = time.monotonic()
    hide_vllm = ("import sys; sys.modules['vllm'] = None; from rlaif.cli.main import main; "
                 f"sys.exit(main(['train', 'recipes/smoke-vllm.yaml', '--set', 'output_dir={tmp_path}']))")
    r = subprocess.run([sys.executable, "-c", hide_vllm], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "make setup" in r.stderr and "Traceback" not in r.stderr
    assert "judge server" not in r.stderr and time.monotonic() - t0 < 60  # no judge was started for nothing


# ---- real runs with vLLM rollouts ---------------------------------------------------------------

def run_in_rollouts_env(args: list[str], out, judge_url: str, steps: int, *sets: str, timeout: int = 600):
    """A training run in the trainer environment, in its own session; returns (result, processes of that session still
    alive after it ended)."""
    import psutil

    cmd = [str(ROLLOUTS_PY), *args, "recipes/smoke-vllm.yaml", "--set", f"judge.base_url={judge_url}",
           "--set", "judge.serve.launch=false", "--set", "judge.canaries=null", "--set", f"output_dir={out}",
           "--set", f"grpo.max_steps={steps}", "--set", "grpo.logging_steps=1", "--set", "eval.every_steps=null",
           *[x for s in sets for x in ("--set", s)]]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, 9)
    # multiprocessing's resource tracker (TRL's rollout worker is spawned) exits when its pipe closes, a moment
    # after the run: anything of the run's session still there after 10 s has outlived it
    deadline = time.monotonic() + 10
    while True:
        left = []
        for q in psutil.process_iter(["pid", "name"]):
            try:
                if os.getsid(q.pid) == p.pid:
                    left.append(q.info["name"])
            except (ProcessLookupError, psutil.Error):
                pass
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr), left


def test_vllm_rollouts_train_and_the_guard_sees_engine_and_trainer_agree(judge_url, tiny, tmp_path):
    out = tmp_path / "vllm"
    r, left = run_in_rollouts_env(["-m", "rlaif.cli", "train"], out, judge_url, 4,
                                  "rollouts.check_every=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not left, f"processes of the run outlived it: {left}"
    s = json.loads((out / "train_summary.json").read_text())
    assert s["steps"] == 4 and s["judge"]["failures"] == 0
    guard = s["rollouts"]["stale_weight_guard"]
    assert s["rollouts"]["engine"] == "vllm"
    assert guard["checks"] == 2 and not guard["stopped"]  # after the syncs of steps 1 and 3 (not 0: LoRA B = 0)
    assert guard["logprob_gap_max"] < 1e-4  # fp32 engine, fp32 trainer, the same weights: rounding only
    logged = [h for h in s["log_history"] if "rollouts/logprob_gap" in h]
    assert logged and all("sampling/sampling_logp_difference/mean" in h for h in logged)
    assert "vLLM rollout engine ready" in r.stderr and "(float32, eager)" in r.stderr
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_a_lost_weight_sync_stops_the_run_with_a_checkpoint(judge_url, tiny, tmp_path):
    """TRL's sync into the engine does nothing (tests/fixtures/train_with_lost_sync.py): the rollouts come from
    the weights the engine started with while the trainer's move. The guard stops the run, saying why."""
    out = tmp_path / "lost"
    r, left = run_in_rollouts_env(["tests/fixtures/train_with_lost_sync.py"], out, judge_url, 40,
                                  "rollouts.check_every=2", "grpo.save_steps=100")
    assert r.returncode == 1, r.stderr[-3000:]
    assert not left, f"processes of the run outlived it: {left}"
    assert "Traceback" not in r.stderr
    assert "the rollout engine's weights are stale" in r.stderr and "continue with --resume" in r.stderr
    s = json.loads((out / "train_summary.json").read_text())
    assert s["rollouts"]["stale_weight_guard"]["stopped"]
    assert s["rollouts"]["stale_weight_guard"]["logprob_gap_last"] > 0.05
    assert s["steps"] < 40 and s["stopped_early"].startswith("the rollout engine's weights are stale")
    assert (out / f"checkpoint-{s['steps']}").is_dir()  # the stop saved where it stopped


def test_two_vllm_rollout_runs_started_together_do_not_race_for_a_port(judge_url, tiny, tmp_path):
    """TRL's colocated engine takes MASTER_PORT 29500 when it looks free: two runs started together collided
    (EADDRINUSE). Each run now gets a free port of its own."""
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(2) as ex:
        runs = [ex.submit(run_in_rollouts_env, ["-m", "rlaif.cli", "train"], tmp_path / f"r{i}", judge_url, 1)
                for i in range(2)]
        results = [f.result() for f in runs]
    for r, left in results:
        assert r.returncode == 0, r.stderr[-3000:]
        assert not left


# ---- TRL's asynchronous trainer (rollouts.async) ----------------------------------------------------------------

def test_async_grpo_trains_on_the_judge_reward_from_its_rollout_worker(judge_url, tiny, tmp_path):
    """Generation (a vLLM server taking the trainer's adapters), judging (rlaif's reward, rebuilt in TRL's rollout
    worker) and optimisation overlap; rollouts at most one adapter version old."""
    out = tmp_path / "async"
    r, left = run_in_rollouts_env(["-m", "rlaif.cli", "train"], out, judge_url, 6,
                                  "rollouts.async={max_staleness: 1}", "grpo.save_steps=3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not left, f"processes of the run outlived it (policy server, rollout worker): {left}"
    s = json.loads((out / "train_summary.json").read_text())
    assert s["steps"] == 6 and s["adapter"]
    a = s["rollouts"]["async"]
    assert a["policy_server_start_s"] > 0 and a["rollout/generated_tok_s"] > 0 and a["perf/rollout_wait_s"] >= 0
    # every completion the trainer used was judged (and those dropped as stale too), none failed; the totals that
    # crossed over from the rollout worker are the judgment log's, but for groups still being scored at the stop
    judged = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(judged) >= 6 * 32 and {j["criterion"] for j in judged} == {"says_please"}
    assert len(judged) - 32 <= s["judge"]["calls"] <= len(judged) and s["judge"]["failures"] == 0
    assert all(isinstance(j["step"], int) for j in judged)  # the rollout batch each was scored in
    assert (out / "checkpoint-6").is_dir() and (out / "adapter" / "adapter_model.safetensors").exists()
    assert any("reward" in h for h in s["log_history"])


@pytest.mark.integration
def test_an_async_reward_that_cannot_reach_its_judge_stops_the_run(tiny, tmp_path):
    """The reward runs in TRL's rollout worker, where the trainer cannot see it fail: its stop reason crosses over
    through the run directory, and the run stops with the reason, a checkpoint and no process left."""
    from rlaif.judge.server import free_port

    out = tmp_path / "dead-judge"
    r, left = run_in_rollouts_env(["-m", "rlaif.cli", "train"], out, f"http://127.0.0.1:{free_port()}", 20,
                                  "rollouts.async={max_staleness: 1}", "judge.max_retries=0", "judge.timeout_s=2")
    assert r.returncode == 1, r.stderr[-3000:]
    assert not left, f"processes of the run outlived it: {left}"
    assert "the reward could not be built in TRL's rollout worker" in r.stderr and "--resume" in r.stderr
    assert "Traceback" not in r.stderr
    s = json.loads((out / "train_summary.json").read_text())
    assert s["steps"] < 20 and s["stopped_early"].startswith("the reward could not be built")
