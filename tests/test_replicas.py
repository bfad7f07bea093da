"""What `judge.serve.replicas` launches, without launching it: each replica on its own port, devices and (on a CPU
machine) cores, the tensor-parallel size given once; recipes that ask for the impossible are refused by field.
(Two real replicas, one killed mid-run: tests/faults/test_server_faults.py.)"""
import sys

import pytest
from pydantic import ValidationError

from rlaif.config.judge import JudgeSpec, ServeSpec
from rlaif.judge.server import VLLMServer, cpu_share


def judge(**serve) -> JudgeSpec:
    return JudgeSpec(model="artifacts/tiny/judge", serve=ServeSpec(python=sys.executable, **serve))


def test_each_replica_gets_its_own_port_devices_and_tensor_parallel_flag():
    j = judge(replicas=2, port=8100, devices=["0,1", "2,3"], tensor_parallel_size=2)
    servers = [VLLMServer.for_judge(j, None, replica=i) for i in range(2)]
    assert [s.port for s in servers] == [8100, 8101]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in servers] == ["0,1", "2,3"]
    for s in servers:
        cmd = s.command()
        assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"


def test_one_replica_is_launched_as_before():
    s = VLLMServer.for_judge(judge(), None)
    assert "--tensor-parallel-size" not in s.command() and "CUDA_VISIBLE_DEVICES" not in s.env
    assert s.cpu_bind is None and s.port is None  # vLLM binds its own cores; a free port is picked at start


def test_cpu_replicas_bind_to_different_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert [cpu_share(i, 2) for i in range(2)] == ["0,1", "2,3"]
    assert [cpu_share(i, 3) for i in range(3)] == ["0", "1", "2"]
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert [cpu_share(i, 3) for i in range(3)] == ["0", "1", "0"]  # more replicas than cores: shared in turn
    j = judge(replicas=2, env={"VLLM_CPU_OMP_THREADS_BIND": "0-1|2-3"})
    assert VLLMServer.for_judge(j, None, replica=1).cpu_bind is None  # the user's binding wins


@pytest.mark.parametrize("serve, field", [
    (dict(replicas=2, devices=["0"]), "one CUDA_VISIBLE_DEVICES string per replica"),
    (dict(replicas=1, devices=["0"], tensor_parallel_size=2), "tensor_parallel_size is 2"),
    (dict(tensor_parallel_size=2, extra_args=["--tensor-parallel-size", "2"]), "give the tensor-parallel size once"),
    (dict(replicas=0), "greater than or equal to 1"),
])
def test_impossible_pools_are_refused_with_the_reason(serve, field):
    with pytest.raises(ValidationError) as e:
        ServeSpec(**serve)
    assert field in str(e.value)
