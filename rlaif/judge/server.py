"""The vLLM judge server's lifecycle: start on a free loopback port, wait for the right model, always stop.

`VLLMServer` launches vLLM's OpenAI-compatible server from the judge environment (`.venv-judge`) in its own
process group, waits until `/v1/models` lists the expected served model name (another server may answer on a
port), sends one real request (vLLM's CPU backend answers /health before its first request can still crash
it), and on exit stops the whole process group: on normal exit, on error, on Ctrl-C, and, through the parent-
death signal, even if the trainer itself is killed.
"""
from __future__ import annotations

import atexit
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from rlaif.common.dist import master_addr
from rlaif.errors import JudgeServerError, UserError
from rlaif.judge import reaper
from rlaif.judge.urls import api_url, reachable_host

if TYPE_CHECKING:
    from rlaif.config.judge import JudgeSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1


def judge_python(explicit: str | None = None) -> str:
    """The Python of the judge environment: the recipe's, $RLAIF_JUDGE_PYTHON, or the repo's .venv-judge."""
    for cand in (explicit, os.environ.get("RLAIF_JUDGE_PYTHON"), str(REPO_ROOT / ".venv-judge" / "bin" / "python")):
        if cand and Path(cand).exists():
            return cand
    raise UserError("no judge environment: run `make setup` (it builds .venv-judge with vLLM), or set "
                    "judge.serve.python / $RLAIF_JUDGE_PYTHON to a Python that has vllm")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        # as servers bind (uvicorn sets it): connections of a killed server in TIME_WAIT do not hold the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def served_models(base_url: str, api_key: str | None = None, timeout: float = 2.0) -> list[str] | None:
    """Model ids listed at base_url/v1/models, or None when nothing (or nothing OpenAI-like) answers."""
    try:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        r = httpx.get(api_url(base_url) + "/models", timeout=timeout, headers=headers)
        if r.status_code != 200:
            return None
        return [m.get("id") for m in r.json().get("data", [])]
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def served_context(base_url: str, api_key: str | None = None, timeout: float = 2.0) -> int | None:
    """The context length (`max_model_len`) the server at base_url reports for its model, or None."""
    try:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        r = httpx.get(api_url(base_url) + "/models", timeout=timeout, headers=headers)
        lens = [m.get("max_model_len") for m in r.json().get("data", [])] if r.status_code == 200 else []
        return min((n for n in lens if isinstance(n, int)), default=None)
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def _child_setup(nice: int):
    def setup():  # runs in the child between fork and exec
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass
        if nice:
            os.nice(nice)
    return setup


class VLLMServer:
    def __init__(self, model: str, served_model_name: str, *, host: str = "127.0.0.1", port: int | None = None,
                 python: str | None = None, dtype: str = "auto", max_model_len: int | None = None,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 log_path: Path | None = None, startup_timeout_s: float = 600.0, api_key: str | None = None,
                 nice: int = 0, progress=None, role: str = "judge"):
        self.role = role  # what the server is for, in its messages: the judge, or a policy (`rlaif serve`)
        if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
            raise UserError(f"judge.serve.host {host!r} would expose the judge beyond this machine; "
                            "set judge.api_key to do that deliberately")
        self.model, self.name, self.host, self.port = model, served_model_name, host, port
        self.python = judge_python(python)
        self.dtype, self.max_model_len = dtype, max_model_len
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.api_key = api_key
        self.nice = nice
        self.progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.proc: subprocess.Popen | None = None
        self.start_s: float | None = None
        self._t0 = 0.0  # when launch() started the process
        # the CPUs its engine binds its threads to, on a machine without a GPU (see cpu_share); None: vLLM's choice
        self.cpu_bind: str | None = None

    @classmethod
    def for_judge(cls, judge: JudgeSpec, log_path: Path | None, port: int | None = None,
                  progress=None, replica: int = 0) -> VLLMServer:
        """The server a recipe's `judge:` block describes; its `replica`-th when it asks for several (next port,
        own devices)."""
        s = judge.serve
        env = dict(s.env)
        if s.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = s.devices[replica]
        extra = list(s.extra_args) + (["--tensor-parallel-size", str(s.tensor_parallel_size)]
                                      if s.tensor_parallel_size > 1 else [])
        if s.gpu_memory_utilization is not None and has_gpu():
            extra += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
        port = port or (s.port + replica if s.port else None)
        server = cls(judge.model, judge.name, host=s.host, port=port, python=s.python, dtype=s.dtype,
                     max_model_len=s.max_model_len, extra_args=extra, env=env, log_path=log_path,
                     startup_timeout_s=s.startup_timeout_s, api_key=judge.api_key, nice=s.nice, progress=progress)
        if s.replicas > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in env:
            server.cpu_bind = cpu_share(replica, s.replicas)
        return server

    @functools.cached_property
    def url_host(self) -> str:
        """The host in the server's URL: a server bound to every interface (0.0.0.0) is given to clients, the ranks
        of other nodes among them, at this machine's routable address, since 0.0.0.0 would mean their own."""
        return reachable_host(self.host, master_addr())

    @property
    def base_url(self) -> str:
        host = f"[{self.url_host}]" if ":" in self.url_host else self.url_host  # an IPv6 address in a URL
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        # `vllm serve` is broken in vllm-cpu 0.32 (it looks up the "vllm" distribution); the module entry point
        # takes the same flags on every build.
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--served-model-name", self.name, "--host", self.host, "--port", str(self.port),
               "--dtype", self.dtype]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        return cmd + self.extra_args

    def _pick_port(self) -> None:
        if self.port:
            if port_is_free(self.host, self.port):
                return
            ids = served_models(f"http://{self.host}:{self.port}", self.api_key)
            what = f"a server serving {ids}" if ids is not None else "another program"
            self.progress(f"port {self.port} is taken by {what}; using a free port instead")
        self.port = free_port(self.host)

    def start(self) -> str:
        self.launch()
        return self.wait_until_ready()

    def launch(self) -> None:
        """Start the server process, not waiting for it. Call it from a thread that lives as long as the server
        should: the parent-death signal (PR_SET_PDEATHSIG) fires when the *thread* that forked the child ends,
        not the process (a server started from a short-lived thread gets SIGTERM when that thread ends)."""
        self._pick_port()
        env = os.environ.copy()
        if not has_gpu():
            env.update({"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "INFO"})
            if self.cpu_bind:
                env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_bind
        if Path(self.model).exists():
            env.setdefault("HF_HUB_OFFLINE", "1")  # a local judge never needs the hub
        env.update(self.env)
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_f = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        t0 = time.perf_counter()
        self.progress(f"starting the vLLM {self.role} server for {self.model} on {self.base_url} "
                      f"(log: {self.log_path or 'discarded'})")
        self.proc = subprocess.Popen(self.command(), stdout=log_f, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=_child_setup(self.nice))
        if log_f is not subprocess.DEVNULL:
            log_f.close()  # the child holds its own copy
        reaper.spawn(os.getpid(), self.proc.pid)  # the engine ends with this process, however it ends
        if self.log_path:  # who to look for (and, in the fault tests, whom to kill)
            self.log_path.with_suffix(".pid").write_text(f"{self.proc.pid}\n")
        atexit.register(self.stop)
        self._t0 = t0

    def wait_until_ready(self) -> str:
        """Wait until the launched server serves the expected model and answers; stop it if it does not."""
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.start_s = time.perf_counter() - self._t0
        self.progress(f"{self.role} server ready in {self.start_s:.1f}s at {self.base_url} (model '{self.name}')")
        return self.base_url

    def _log_tail(self, n: int = 25) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last_note = time.monotonic()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise JudgeServerError(f"the vLLM {self.role} server exited with code {self.proc.returncode} while "
                                       f"starting. Last lines of {self.log_path}:\n{self._log_tail()}")
            ids = served_models(self.base_url, self.api_key)
            if ids is not None:
                if self.name not in ids:
                    raise JudgeServerError(f"{self.base_url} serves {ids}, not '{self.name}'")
                if self._probe():
                    return
            if time.monotonic() - last_note > 15:
                self.progress(f"  ...waiting for the {self.role} server ({time.monotonic() - deadline + self.startup_timeout_s:.0f}s)")
                last_note = time.monotonic()
            time.sleep(1.0)
        raise JudgeServerError(f"the {self.role} server did not become ready within {self.startup_timeout_s:.0f}s. "
                               f"Last lines of {self.log_path}:\n{self._log_tail()}")

    def _probe(self) -> bool:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.name, "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 1,
                "temperature": 0.0}
        try:
            r = httpx.post(api_url(self.base_url) + "/chat/completions", json=body, timeout=60, headers=headers)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # the engine and worker processes share the server's process group: none may outlive it
        _signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def died(self) -> int | None:
        """The exit code if the server ended without being stopped, else None."""
        proc = self.proc
        return None if proc is None else proc.poll()

    def restart(self) -> str:
        """Start again after a crash, on the same port when it is free (clients keep their URL)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _signal_group(proc.pid, signal.SIGKILL)  # what is left of the old engine
            atexit.unregister(self.stop)
        deadline = time.monotonic() + 30
        while not port_is_free(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.start()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def cpu_share(replica: int, replicas: int) -> str:
    """The CPUs the `replica`-th of several CPU judge servers binds its engine's threads to. Left to itself, every
    vllm-cpu engine binds to the same first cores: two replicas then share one core, and a busy one (its worker
    spins at 100%) starves the other; a replica restarting beside a busy one took over 10 minutes here instead of
    under one. Each gets its own slice of this process's CPUs (shared round-robin when there are fewer CPUs than
    replicas)."""
    cpus = sorted(os.sched_getaffinity(0))
    per = max(1, len(cpus) // replicas)
    start = (replica * per) % len(cpus)
    return ",".join(str(c) for c in cpus[start:start + per])


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0


class Supervisor:
    """Watches a launched judge server and restarts it when it dies mid-run.

    While it is down, judge calls wait for it (rlaif/judge/pool.py, bounded by judge.max_outage_wait_s, unless other replicas carry them; past
    that they fail and get the recipe's fallback, counted in `judge/fail_rate`); `on_down` and `on_up` let the
    reward hold its failure-rate stop for that time, so a crash and restart costs time, not steps. After `max_restarts` restarts, or a restart that fails, `on_give_up` says why.
    """

    def __init__(self, server: VLLMServer, *, on_down=None, on_up=None, on_give_up=None, max_restarts: int = 3,
                 poll_s: float = 1.0):
        self.server = server
        self.on_down, self.on_up, self.on_give_up = on_down, on_up, on_give_up
        self.max_restarts, self.poll_s = max_restarts, poll_s
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="judge-supervisor")

    def start(self) -> "Supervisor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            code = self.server.died()
            if code is None:
                continue
            if self._stop.is_set():
                return
            if self.on_down:
                self.on_down(code)
            if self.restarts >= self.max_restarts:
                if self.on_give_up:
                    self.on_give_up(f"the judge server at {self.server.base_url} died (exit code {code}) after "
                                    f"{self.restarts} restart(s)")
                return
            self.restarts += 1
            self.server.progress(f"the judge server at {self.server.base_url} died (exit code {code}); restarting it "
                                 f"({self.restarts} of at most {self.max_restarts})")
            try:  # from this thread, which lives as long as the run: the restarted server's parent-death signal
                self.server.restart()
            except Exception as e:  # cannot come back: the run must stop, not train on fallbacks
                if self.on_give_up:
                    self.on_give_up(f"the judge server at {self.server.base_url} died (exit code {code}) and did not "
                                    f"restart: {e}")
                return
            if self.on_up:
                self.on_up()
