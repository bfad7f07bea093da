"""How rlaif launches a server process, with a stand-in for vLLM (tests/fixtures/fake_vllm.py: binds, lists the
model, answers; no model, starts at once): the API key travels in the environment, never the command line; a
shell's VLLM_DP_* settings stay out; extra_args cannot move the address or the key; a free port taken before the
server binds it is swapped for another, while a restart keeps its port or fails saying so; stop() ends a restart
under way; a hung server is restarted; `rlaif judge serve` refuses a taken port and survives a killed replica.
(The same with real vLLM: tests/faults/test_key_and_binding.py, tests/faults/test_server_faults.py.)"""
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from procs import RLAIF, wait_for, without_tiny_models
from pydantic import ValidationError

from rlaif.common.ports import free_port
from rlaif.config.judge import ServeSpec
from rlaif.config.recipe import load_recipe
from rlaif.errors import UserError
from rlaif.judge import server as server_mod
from rlaif.judge.server import PortTaken, VLLMServer
from rlaif.judge.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[1]
FAKE = str(ROOT / "tests" / "fixtures" / "fake_vllm.py")


def fake(tmp_path, notes=None, **kw):
    return VLLMServer("artifacts/tiny/judge", "judge", python=FAKE, log_path=tmp_path / "server.log",
                      progress=(notes.append if notes is not None else lambda m: None), startup_timeout_s=60, **kw)


def answers(url, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        return httpx.get(url + "/v1/models", headers=headers, timeout=5).status_code
    except httpx.HTTPError:
        return None


def proc_file(pid, name):
    return Path(f"/proc/{pid}/{name}").read_bytes().split(b"\0")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


class Listener:
    """Something that holds a port (another program)."""

    def __init__(self, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past a killed server's TIME_WAIT
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()

    def close(self):
        self.sock.close()


def test_the_api_key_travels_in_the_environment_not_the_command_line(tmp_path):
    """/proc/PID/cmdline is readable by every local user; the key must not be there."""
    with fake(tmp_path, api_key="sekrit-123") as s:
        assert not any(b"sekrit-123" in a for a in proc_file(s.proc.pid, "cmdline"))
        assert b"VLLM_API_KEY=sekrit-123" in proc_file(s.proc.pid, "environ")  # readable by its owner only
        assert answers(s.base_url) == 401 and answers(s.base_url, "sekrit-123") == 200


def test_a_shells_data_parallel_settings_stay_out_of_the_server(tmp_path, monkeypatch):
    """VLLM_DP_RANK, VLLM_DP_SIZE, ... set for another vLLM would make this one wait for peers."""
    monkeypatch.setenv("VLLM_DP_SIZE", "2")
    monkeypatch.setenv("VLLM_DP_RANK", "1")
    with fake(tmp_path) as s:
        assert not any(e.startswith(b"VLLM_DP_") for e in proc_file(s.proc.pid, "environ"))


def test_a_key_in_the_shell_does_not_lock_a_judge_that_asks_for_none(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "a-key-from-the-shell")  # rlaif's clients would not send it
    with fake(tmp_path) as s:
        assert not any(e.startswith(b"VLLM_API_KEY=") for e in proc_file(s.proc.pid, "environ"))
        assert answers(s.base_url) == 200


@pytest.mark.parametrize("args, flag", [(["--host", "0.0.0.0"], "--host"), (["--port=9"], "--port"),
                                        (["--api_key", "k"], "--api-key"), (["--ho", "0.0.0.0"], "--host")])
def test_extra_args_cannot_set_the_address_or_the_key(args, flag):
    """argparse takes the last --host: one in extra_args would put the judge on every interface without a key."""
    with pytest.raises(ValidationError, match=f"extra_args: {flag} is set by rlaif"):
        ServeSpec(extra_args=args)
    with pytest.raises(UserError, match="judge.serve"):
        load_recipe("recipes/smoke.yaml", [f"judge.serve.extra_args={args}"], check_files=False)
    with pytest.raises(UserError, match=f"set {flag}, which rlaif sets itself"):
        VLLMServer("m", "judge", python=sys.executable, extra_args=args)
    ServeSpec(extra_args=["--api-server-count", "1", "--enforce-eager"])  # the others pass


def test_free_ports_are_never_handed_out_twice():
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_a_free_port_taken_before_the_server_binds_it_is_swapped_for_another(tmp_path, monkeypatch):
    taken = Listener(free_port())
    ports = iter([taken.sock.getsockname()[1]])
    monkeypatch.setattr(server_mod, "free_port", lambda host: next(ports, None) or free_port(host))
    notes = []
    try:
        with fake(tmp_path, notes) as s:
            assert s.port != taken.sock.getsockname()[1] and answers(s.base_url) == 200
    finally:
        taken.close()
    assert any("was taken by another program before the judge server bound it" in n for n in notes)


def test_a_restart_keeps_the_port_or_fails_saying_why(tmp_path):
    s = fake(tmp_path)
    with s:
        port, first = s.port, s.proc.pid
        os.killpg(first, signal.SIGKILL)
        s.proc.wait()
        squatter = Listener(port)  # someone takes the port while the server is down
        s.port_wait_s = 1
        try:
            with pytest.raises(PortTaken, match="does not move to another port"):
                s.restart()
        finally:
            squatter.close()
        assert s.port == port
        s.restart()  # free again: back on its port
        assert s.port == port and s.proc.pid != first and answers(s.base_url) == 200


def test_stop_ends_a_restart_under_way_and_what_it_launched(tmp_path):
    s = fake(tmp_path)
    with s:
        sup = Supervisor(s, poll_s=0.05).start()
        s.env["FAKE_VLLM_START_S"] = "600"  # the restarted one never gets ready
        first = s.proc.pid
        os.killpg(first, signal.SIGKILL)
        pidfile = tmp_path / "server.pid"
        wait_for(lambda: int(pidfile.read_text()) != first, 60, "the restart's launch")
        second = int(pidfile.read_text())
        sup.stop()
        assert not sup._thread.is_alive()
        wait_for(lambda: not alive(second), 30, "the restarted process to be ended")
        assert sup.gave_up is None  # stopped, not given up


def test_a_live_server_that_stops_answering_is_restarted(tmp_path):
    hang = tmp_path / "hang"
    notes = []
    s = fake(tmp_path, notes, env={"FAKE_VLLM_HANG": str(hang)})
    s.probe_timeout_s = 0.5
    with s:
        first = s.proc.pid
        ups = []
        with Supervisor(s, poll_s=0.05, probe_s=0.05, probe_failures=3, on_up=lambda: ups.append(1)) as sup:
            hang.touch()  # chat requests hang from now on; /health and /v1/models still answer
            wait_for(lambda: any("failed 3 probes in a row" in n for n in notes), 60, "the liveness restart")
            hang.unlink()  # the restarted engine answers
            wait_for(lambda: ups, 60, "the server back")
        assert sup.restarts == 1 and s.proc.pid != first and not alive(first)


def run_serve(tmp_path, *args):
    return subprocess.Popen(RLAIF + ["judge", "serve", "recipes/smoke.yaml", "--set", f"output_dir={tmp_path}",
                                     *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def stand_in(tmp_path):
    """`--set`s for `rlaif judge serve recipes/smoke.yaml` with the stand-in for vLLM, no models needed."""
    return [a for o in [f"judge.serve.python={FAKE}", *without_tiny_models(tmp_path)] for a in ("--set", o)]


def test_judge_serve_refuses_a_taken_port(tmp_path):
    taken = Listener(free_port())
    port = taken.sock.getsockname()[1]
    p = run_serve(tmp_path, "--port", str(port), *stand_in(tmp_path))
    try:
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        taken.close()
    assert p.returncode == 1, err[-2000:]
    assert f"port {port} is taken" in " ".join(err.split()) and "Traceback" not in err


def serve_survives_a_killed_replica(tmp_path, *args, timeout=120):
    """`rlaif judge serve` with two replicas: SIGKILL one's process group; the other keeps answering, the killed
    one answers again on its own port, and Ctrl-C (SIGINT, exit 130) stops every child process, the restarted
    replica's included."""
    import psutil

    from rlaif.judge.server import served_models

    p = run_serve(tmp_path, "--set", "judge.serve.replicas=2", *args)
    try:
        urls = p.stdout.readline().split()  # printed once every replica answers with the right model
        assert len(urls) == 2 and all(answers(u) == 200 for u in urls), p.stderr.read() if p.poll() else urls
        assert all(served_models(u) == ["judge"] for u in urls)
        pidfile = tmp_path / "judge_server.1.pid"
        killed = int(pidfile.read_text())
        os.killpg(killed, signal.SIGKILL)
        wait_for(lambda: answers(urls[1]) is None, 30, "the killed replica to stop answering")
        assert answers(urls[0]) == 200 and p.poll() is None  # the other serves on
        wait_for(lambda: answers(urls[1]) == 200, timeout, "the killed replica back on its port")
        assert int(pidfile.read_text()) != killed and answers(urls[0]) == 200
        tree = psutil.Process(p.pid).children(recursive=True)  # the servers run as child processes
        assert any(c.pid == int(pidfile.read_text()) for c in tree), [c.pid for c in tree]
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) == 130
        _, err = p.communicate(timeout=10)

        def orphans():
            left = []
            for c in tree:
                try:
                    if c.is_running() and c.status() != psutil.STATUS_ZOMBIE:
                        left.append(c)
                except psutil.NoSuchProcess:  # ended (and reaped) between the two questions
                    pass
            return left
        wait_for(lambda: not orphans(), 10, "every child of `judge serve` to end after Ctrl-C")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert "died (exit code -9); restarting it (1 of at most 3)" in " ".join(err.split())
    assert all(answers(u) is None and served_models(u) is None for u in urls)  # Ctrl-C stopped both


def test_judge_serve_keeps_serving_when_a_replica_is_killed(tmp_path):
    serve_survives_a_killed_replica(tmp_path, *stand_in(tmp_path))


@pytest.mark.integration
def test_judge_serve_with_vllm_keeps_serving_when_a_replica_is_killed(tiny, tmp_path):
    """With vLLM (its engine processes renamed VLLM::EngineCore): also what test_judge_serve_stops_every_child_on_ctrl_c
    checked with one replica (the same code path), without a third vLLM start."""
    serve_survives_a_killed_replica(tmp_path, timeout=600)
