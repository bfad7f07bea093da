"""Several nodes, checked before anything starts: a judge the run would launch where the other nodes cannot reach
it is refused with the way to run it instead, a judge given GPUs the training processes use is refused by name,
and a judge that binds a routable address is given to the ranks at an address they can reach. The GPUs of a node
come from `nvidia-smi -L`, here a stand-in on PATH that lists eight. (Two torchrun "nodes" on this machine:
tests/faults/test_nodes_integration.py.)"""
import os
import socket
import stat
import subprocess
import sys

import pytest

from rlaif.config.recipe import load_recipe
from rlaif.errors import UserError
from rlaif import factory
from rlaif.config.rewards import RewardModelSourceSpec
from rlaif.factory import judge_endpoint, reward_model_endpoint
from rlaif.judge.server import VLLMServer

SMOKE = "recipes/smoke.yaml"
DIST = ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "CUDA_VISIBLE_DEVICES")


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    for k in DIST:
        monkeypatch.delenv(k, raising=False)


def nodes(monkeypatch, world: int, local: int, rank: int = 0):
    """This process as torchrun starts it on one of several nodes."""
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    monkeypatch.setenv("RANK", str(rank))


def recipe(*sets):
    # a judge environment that exists without vLLM: were anything launched, it would be this Python, not a server
    return load_recipe(SMOKE, [f"judge.serve.python={sys.executable}", *sets], check_files=False)


@pytest.fixture
def eight_gpus(tmp_path, monkeypatch):
    """A stand-in `nvidia-smi` on PATH that lists eight GPUs, as on an 8-GPU node."""
    lines = "\\n".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i}{i}{i}{i}-test)" for i in range(8))
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text(f"#!/bin/sh\nprintf '{lines}\\n'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("rank", [0, 1, 8])
def test_a_judge_the_run_would_launch_across_nodes_is_refused_in_every_process(monkeypatch, tmp_path, rank):
    nodes(monkeypatch, world=16, local=8, rank=rank)
    with pytest.raises(UserError) as e:
        with judge_endpoint(recipe(), tmp_path):
            pass
    msg = str(e.value)
    assert "several nodes" in msg and "judge.base_url" in msg  # what to give instead
    assert "rlaif judge serve recipes/smoke.yaml --set judge.serve.host=" in msg  # the judge node's launch line
    assert "RLAIF_JUDGE_API_KEY" in msg
    assert not list(tmp_path.iterdir())  # nothing started: no server log, no pid file


def test_a_judge_bound_beyond_loopback_without_a_key_is_refused_across_nodes(monkeypatch):
    nodes(monkeypatch, world=2, local=1)
    with pytest.raises(UserError, match="judge.base_url"):
        factory.check_launch(recipe("judge.serve.host=0.0.0.0"))


def test_one_node_launches_as_before(monkeypatch):
    nodes(monkeypatch, world=8, local=8)
    factory.check_launch(recipe())  # several processes on one node reach 127.0.0.1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    nodes(monkeypatch, world=1, local=1)
    factory.check_launch(recipe())


def test_a_routable_judge_with_a_key_is_given_to_the_ranks_at_a_routable_address(monkeypatch):
    nodes(monkeypatch, world=2, local=1)
    monkeypatch.setenv("MASTER_ADDR", "198.51.100.7")  # another node's address (no packet is sent to it)
    r = recipe("judge.serve.host=0.0.0.0", "judge.api_key=k3y")
    factory.check_launch(r)  # allowed: bound beyond loopback, with a key
    url = VLLMServer.for_judge(r.judge, None, port=8100).base_url
    host = url.removeprefix("http://").rpartition(":")[0]
    assert url.endswith(":8100") and host not in ("0.0.0.0", "127.0.0.1", "localhost", "::", "")
    with socket.socket() as s:  # an address of this host, the one its route to MASTER_ADDR leaves from
        s.bind((host, 0))


def test_a_judge_bound_to_one_address_is_reached_there():
    s = VLLMServer("artifacts/tiny/judge", "judge", host="192.0.2.10", port=8100, api_key="k", python=sys.executable)
    assert s.base_url == "http://192.0.2.10:8100"
    assert VLLMServer("artifacts/tiny/judge", "judge", port=8100, python=sys.executable).base_url == \
        "http://127.0.0.1:8100"


def test_judge_devices_the_single_training_process_uses_are_refused_by_name(eight_gpus, tmp_path):
    # one process and no CUDA_VISIBLE_DEVICES: the policy is placed over every GPU of the node (device_map auto)
    r = recipe('judge.serve.devices=["0,1"]', "judge.serve.tensor_parallel_size=2")
    run_dir = tmp_path / "run"
    with pytest.raises(UserError) as e:
        with judge_endpoint(r, run_dir):
            pass
    msg = str(e.value)
    assert "judge.serve.devices[0] '0,1'" in msg and "GPU 0, 1" in msg and "all 8 GPUs" in msg
    assert not run_dir.exists()


@pytest.mark.parametrize("env, world, devices, overlap", [
    # accelerate's gpu_ids 2-7 for six processes: the judge on 0-1 is clear of them (the 8-GPU recipe)
    ({"CUDA_VISIBLE_DEVICES": "2,3,4,5,6,7"}, 6, ["0,1"], None),
    # multi_node_2x8.yaml / multi_gpu.yaml (gpu_ids: all): process i takes GPU i
    ({}, 8, ["0,1"], "GPU 0, 1"),
    ({}, 6, ["6,7"], None),
    ({}, 3, ["2", "3"], "GPU 2"),
    ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, 1, ["2"], "GPU 2"),
    ({"CUDA_VISIBLE_DEVICES": "GPU-1111-test"}, 1, ["1"], "GPU 1"),  # given by UUID
])
def test_judge_devices_are_checked_against_the_training_processes_gpus(eight_gpus, monkeypatch, env, world,
                                                                        devices, overlap):
    nodes(monkeypatch, world=world, local=world)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    tp = len(devices[0].split(","))
    r = recipe(f"judge.serve.devices={devices}".replace("'", '"'), f"judge.serve.replicas={len(devices)}",
               f"judge.serve.tensor_parallel_size={tp}")
    if overlap is None:
        factory.check_judge_devices(r)
        return
    with pytest.raises(UserError) as e:
        factory.check_judge_devices(r)
    assert "judge.serve.devices" in str(e.value) and overlap in str(e.value)


def test_without_gpus_the_devices_are_not_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: a CPU machine, the trainers use no GPU
    factory.check_judge_devices(recipe('judge.serve.devices=["0"]'))


def reward_model(tmp_path, **serve) -> RewardModelSourceSpec:
    # a reward model the run would launch; were anything launched, it would be this Python, not a server
    return RewardModelSourceSpec(kind="reward_model", model=str(tmp_path / "rm"),
                                 serve={"python": sys.executable, "startup_timeout_s": 10} | serve)


@pytest.mark.parametrize("rank", [0, 1, 8])
def test_a_reward_model_the_run_would_launch_across_nodes_is_refused_in_every_process(monkeypatch, tmp_path, rank):
    nodes(monkeypatch, world=16, local=8, rank=rank)
    run_dir = tmp_path / "run"
    with pytest.raises(UserError) as e:
        with reward_model_endpoint(reward_model(tmp_path), run_dir):
            pass
    msg = str(e.value)
    assert msg.startswith("rewards: reward_model: ") and "several nodes" in msg and "base_url" in msg
    assert "--runner pooling" in msg and "RLAIF_RM_API_KEY" in msg  # the server's launch line, its key
    assert not run_dir.exists()  # nothing started: no server log, no pid file
    with pytest.raises(UserError, match="with no key"):
        factory.check_reward_model_launch(reward_model(tmp_path, host="0.0.0.0"))
    factory.check_reward_model_launch(reward_model(tmp_path, host="0.0.0.0").model_copy(update={"api_key": "k"}))


def test_reward_model_devices_the_training_processes_use_are_refused_by_name(eight_gpus, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(UserError) as e:
        with reward_model_endpoint(reward_model(tmp_path, devices=["3"]), run_dir):
            pass
    msg = str(e.value)
    assert "rewards: reward_model: serve.devices[0] '3'" in msg and "GPU 3" in msg and "all 8 GPUs" in msg
    assert not run_dir.exists()


# -- one run directory for every node ----------------------------------------------------------------------------
# two processes as torchrun starts them on two nodes of one process each (gloo, on this machine); each node's
# working directory is its own folder, as another machine's disk would be, and output_dir is `run` in it
AGREE = """
import sys
from pathlib import Path
from accelerate import PartialState
PartialState(cpu=True)  # the process group as GRPOConfig sets it up before run_training's checks (gloo)
from rlaif.errors import UserError
from rlaif.train.checkpoints import check_shared_run_dir, resume_checkpoint
step = sys.argv[1]
try:
    if step in ("shared", "both"):
        check_shared_run_dir(Path("run"))
    print("OK", resume_checkpoint(Path("run")) if step in ("resume", "both") else "")
except UserError as e:
    print("REFUSED", e)
import torch.distributed as dist
dist.barrier()  # leave together: a gloo group torn down under a peer still in it aborts the process
dist.destroy_process_group()
"""


def two_nodes(homes, step):
    from rlaif.judge.server import free_port
    port = free_port()
    procs = []
    for rank, home in enumerate(homes):
        (home / "run").mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in DIST} | {
            "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1", "RANK": str(rank), "LOCAL_RANK": "0",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONPATH": os.getcwd()}
        procs.append(subprocess.Popen([sys.executable, "-c", AGREE, step], env=env, cwd=home, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, f"exit code {p.returncode}:\n{err[-3000:]}"
    return [o[0].strip() for o in outs]


def checkpoint(home, step):
    ck = home / "run" / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text("{}")
    (ck / ".rlaif-complete").write_text("")


def test_nodes_with_an_output_dir_each_are_refused_in_every_process(tmp_path):
    said = two_nodes([tmp_path / "node0", tmp_path / "node1"], "shared")
    assert all(s.startswith("REFUSED output_dir run:") for s in said), said
    assert all("rank 1 do not see what rank 0 writes there" in s for s in said)


def test_nodes_sharing_the_output_dir_resume_from_the_checkpoint_rank_0_chose(tmp_path):
    checkpoint(tmp_path, 2)
    checkpoint(tmp_path, 4)
    (tmp_path / "run" / "checkpoint-6").mkdir()  # cut short: not complete
    assert two_nodes([tmp_path, tmp_path], "both") == ["OK run/checkpoint-4"] * 2


def test_a_checkpoint_one_node_does_not_see_is_one_error_in_every_process(tmp_path):
    checkpoint(tmp_path / "node0", 4)
    said = two_nodes([tmp_path / "node0", tmp_path / "node1"], "resume")
    assert all(s.startswith("REFUSED --resume: run/checkpoint-4") and "rank 1" in s for s in said), said
