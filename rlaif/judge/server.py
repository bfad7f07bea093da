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
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from rlaif.common.dist import master_addr
from rlaif.common.ports import free_port, port_is_free
from rlaif.config.judge import reserved_flags
from rlaif.errors import JudgeServerError, UserError
from rlaif.judge import reaper
from rlaif.judge.urls import api_url, reachable_host, server_root

if TYPE_CHECKING:
    from rlaif.config.judge import JudgeSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1


class PortTaken(JudgeServerError):
    """The server's port is taken: before the launch, or by another program between the launch and its bind."""


def judge_python(explicit: str | None = None) -> str:
    """The Python of the judge environment: the recipe's, $RLAIF_JUDGE_PYTHON, or the repo's .venv-judge."""
    for cand in (explicit, os.environ.get("RLAIF_JUDGE_PYTHON"), str(REPO_ROOT / ".venv-judge" / "bin" / "python")):
        if cand and Path(cand).exists():
            return cand
    raise UserError("no judge environment: run `make setup` (it builds .venv-judge with vLLM), or set "
                    "judge.serve.python / $RLAIF_JUDGE_PYTHON to a Python that has vllm")


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


# where a server's host and key are set, by its role (what the refusal of a host with no key names)
KEY_SETTINGS = {"judge": ("judge.serve.host", "judge.api_key (or RLAIF_JUDGE_API_KEY)"),
                "reward model": ("the reward model's serve.host", "its api_key (or RLAIF_RM_API_KEY)")}


class VLLMServer:
    def __init__(self, model: str, served_model_name: str, *, host: str = "127.0.0.1", port: int | None = None,
                 python: str | None = None, dtype: str = "auto", max_model_len: int | None = None,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 log_path: Path | None = None, startup_timeout_s: float = 600.0, api_key: str | None = None,
                 nice: int = 0, progress=None, role: str = "judge", fixed_port: bool = False,
                 probe: tuple[str, dict] | None = None):
        self.role = role  # what the server is for, in its messages: the judge, or a policy (`rlaif serve`)
        # (path at the server's root, body) of the request that says it can serve: default a one-token chat
        # completion; a pooling server (a reward model) has no chat endpoint and is asked to score instead
        self.probe_request = probe
        if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
            settings = KEY_SETTINGS.get(role, (f"the {role}'s serve.host", f"the {role}'s key"))
            raise UserError(f"{settings[0]} {host!r} would expose the {role} beyond this machine; "
                            f"set {settings[1]} to do that deliberately")
        if taken := reserved_flags(list(extra_args or [])):
            raise UserError(f"the {role} server's extra arguments set {taken[0]}, which rlaif sets itself")
        self.model, self.name, self.host, self.port = model, served_model_name, host, port
        # a port others were told (`rlaif judge serve --port`): a taken one is refused, never swapped for another
        self.fixed_port = fixed_port
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
        self.picked_port = False  # whether this launch's port came from free_port (taken meanwhile: pick again)
        self._log_from = 0  # where this launch's lines begin in the log
        self.probe_timeout_s = 60.0
        self.port_wait_s = 30.0  # a restart waits this long for the dead server's port to be free
        self._tokens: float | None = None  # the engine's token counters at the last probe (probe())
        self._proc_lock = threading.Lock()  # who owns self.proc: a launch, or stop()
        self._restart_lock = threading.Lock()  # one restart at a time
        self._stopping = threading.Event()  # stop() was called: a start or restart under way gives up

    @classmethod
    def for_judge(cls, judge: JudgeSpec, log_path: Path | None, port: int | None = None,
                  progress=None, replica: int = 0, fixed_port: bool = False) -> VLLMServer:
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
                     startup_timeout_s=s.startup_timeout_s, api_key=judge.api_key, nice=s.nice, progress=progress,
                     fixed_port=fixed_port and port is not None)
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
        # takes the same flags on every build. No API key here: the command line of every process is readable by
        # every local user (/proc/PID/cmdline); it goes in the environment (environment()).
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--served-model-name", self.name, "--host", self.host, "--port", str(self.port),
               "--dtype", self.dtype]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        """The server's environment: this process's, less the data-parallel settings a shell may carry for
        another vLLM (VLLM_DP_RANK, VLLM_DP_SIZE, ... would make this one wait for peers that never come), with
        the CPU defaults, the recipe's `env`, and the API key as VLLM_API_KEY."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_DP_")}
        if not has_gpu():
            env.update({"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "INFO"})
            if self.cpu_bind:
                env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_bind
        if Path(self.model).exists():
            env.setdefault("HF_HUB_OFFLINE", "1")  # a local judge never needs the hub
        env.update(self.env)
        env.pop("VLLM_API_KEY", None)  # only the judge's own key opens it (none: no key asked)
        if self.api_key:
            env["VLLM_API_KEY"] = self.api_key
        return env

    def _pick_port(self, keep: bool = False) -> None:
        """The port to launch on: the one asked for when it is free; when it is taken, a free one, unless the
        port must be kept (a restart: every client knows the server's URL; `fixed_port`: others were told it)."""
        self.picked_port = False
        if self.port:
            if port_is_free(self.host, self.port):
                return
            ids = served_models(f"http://{self.host}:{self.port}", self.api_key)
            what = f"a server serving {ids}" if ids is not None else "another program"
            if keep or self.fixed_port:
                raise PortTaken(f"port {self.port} is taken by {what}; the {self.role} server must be at "
                                f"{self.base_url} (its clients know it there), so it does not move to another port")
            self.progress(f"port {self.port} is taken by {what}; using a free port instead")
        self.port = free_port(self.host)
        self.picked_port = True

    def start(self) -> str:
        return start_servers([self])[0]

    def launch(self, keep_port: bool = False) -> None:
        """Start the server process, not waiting for it. Call it from a thread that lives as long as the server
        should: the parent-death signal (PR_SET_PDEATHSIG) fires when the *thread* that forked the child ends,
        not the process (a server started from a short-lived thread gets SIGTERM when that thread ends)."""
        self._pick_port(keep_port)
        env = self.environment()
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # the log is appended to across restarts: this launch's lines start here
        self._log_from = self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0
        t0 = time.perf_counter()
        self.progress(f"starting the vLLM {self.role} server for {self.model} on {self.base_url} "
                      f"(log: {self.log_path or 'discarded'})")
        with self._proc_lock:  # stop() either sees this process, or this launch sees stop()
            if self._stopping.is_set():
                raise JudgeServerError(f"the {self.role} server at {self.base_url} was stopped while starting")
            log_f = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
            try:
                proc = self.proc = subprocess.Popen(self.command(), stdout=log_f, stderr=subprocess.STDOUT, env=env,
                                                    start_new_session=True, preexec_fn=_child_setup(self.nice))
            finally:
                if log_f is not subprocess.DEVNULL:
                    log_f.close()  # the child holds its own copy
        reaper.spawn(os.getpid(), proc.pid)  # the engine ends with this process, however it ends
        if self.log_path:  # who to look for (and, in the fault tests, whom to kill)
            self.log_path.with_suffix(".pid").write_text(f"{proc.pid}\n")
        atexit.register(self.stop)
        self._t0 = t0

    def wait_until_ready(self) -> str:
        """Wait until the launched server serves the expected model and answers; end it if it does not."""
        try:
            self._wait_ready()
        except BaseException:
            self._end(self._take_proc())
            raise
        self.start_s = time.perf_counter() - self._t0
        self._tokens = None
        self.progress(f"{self.role} server ready in {self.start_s:.1f}s at {self.base_url} (model '{self.name}')")
        return self.base_url

    def _log_tail(self, n: int = 25) -> str:
        """The last lines this launch wrote to the server's log."""
        if not self.log_path or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(self._log_from)
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last_note = time.monotonic()
        while time.monotonic() < deadline:
            proc = self.proc
            if self._stopping.is_set() or proc is None:  # stop() from another thread: give up the start
                raise JudgeServerError(f"the {self.role} server at {self.base_url} was stopped while starting")
            if proc.poll() is not None:
                tail = self._log_tail()
                if "Address already in use" in tail or (not self.log_path and not port_is_free(self.host, self.port)):
                    raise PortTaken(f"the {self.role} server could not bind {self.base_url}: another program took "
                                    f"the port first. Last lines of {self.log_path}:\n{tail}")
                raise JudgeServerError(f"the vLLM {self.role} server exited with code {proc.returncode} while "
                                       f"starting. Last lines of {self.log_path}:\n{tail}")
            ids = served_models(self.base_url, self.api_key)
            if ids is not None:
                if self.name not in ids:
                    raise JudgeServerError(f"{self.base_url} serves {ids}, not '{self.name}'")
                if self._answers():
                    return
            if time.monotonic() - last_note > 15:
                self.progress(f"  ...waiting for the {self.role} server ({time.monotonic() - deadline + self.startup_timeout_s:.0f}s)")
                last_note = time.monotonic()
            self._stopping.wait(1.0)
        raise JudgeServerError(f"the {self.role} server did not become ready within {self.startup_timeout_s:.0f}s. "
                               f"Last lines of {self.log_path}:\n{self._log_tail()}")

    def _answers(self) -> bool:
        """One real one-token request: vLLM's CPU backend answers /health while its first request can still crash
        it, and a stuck engine behind a live API server answers /health too."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.name, "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 1,
                "temperature": 0.0}
        where = api_url(self.base_url) + "/chat/completions"
        if self.probe_request is not None:
            where, body = server_root(self.base_url) + self.probe_request[0], self.probe_request[1]
        try:
            r = httpx.post(where, json=body, timeout=self.probe_timeout_s, headers=headers)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def probe(self) -> bool:
        """Whether the running server is alive in the sense that matters (the Supervisor asks every so often): it
        answers a one-token request, or, busy with a long queue ahead of that request, its engine has worked
        through tokens since the last probe (vLLM's /metrics counters)."""
        if self._answers():
            self._tokens = self._engine_tokens()
            return True
        before, self._tokens = self._tokens, self._engine_tokens()
        return before is not None and self._tokens is not None and self._tokens > before

    def _engine_tokens(self) -> float | None:
        """Prompt and generated tokens the engine processed so far (summed over engines), or None."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            r = httpx.get(server_root(self.base_url) + "/metrics", timeout=10, headers=headers)
        except httpx.HTTPError:
            return None
        found = _TOKENS.findall(r.text) if r.status_code == 200 else []
        return sum(float(v) for v in found) if found else None

    def _take_proc(self) -> subprocess.Popen | None:
        with self._proc_lock:
            proc, self.proc = self.proc, None
        return proc

    def _end(self, proc: subprocess.Popen | None, timeout: float = 20.0) -> None:
        """End a server process and its whole group (the engine and worker processes share it)."""
        if proc is None:
            return
        atexit.unregister(self.stop)
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            _signal_group(proc.pid, signal.SIGCONT)  # a stopped server (Ctrl-Z, a debugger) acts on it only when
            # continued; otherwise it would cost the whole timeout before the SIGKILL below
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(proc.pid, signal.SIGKILL)  # none may outlive it
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server for good: a start or restart under way in another thread gives up within a second, and
        the process it launched is ended here or by it."""
        self._stopping.set()
        self._end(self._take_proc(), timeout)

    def died(self) -> int | None:
        """The exit code if the server ended without being stopped, else None."""
        proc = self.proc
        return None if proc is None else proc.poll()

    def restart(self) -> str:
        """Start again after a crash or a hang (what is left of the old process group is killed first), on the
        same port: every client, pool and other process knows the server by its URL. When the port is still
        taken `port_wait_s` later, the restart fails and says so (the Supervisor gives up); it never moves the server."""
        with self._restart_lock:
            old = self._take_proc()
            if old is not None:
                _signal_group(old.pid, signal.SIGKILL)
                atexit.unregister(self.stop)
                try:
                    old.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            deadline = time.monotonic() + self.port_wait_s
            while not port_is_free(self.host, self.port) and time.monotonic() < deadline:
                if self._stopping.wait(0.5):
                    break  # launch() says so
            self.launch(keep_port=True)
            return self.wait_until_ready()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


_TOKENS = re.compile(r"^vllm:(?:prompt|generation)_tokens_total(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", re.M)


def start_servers(servers: list[VLLMServer], attempts: int = 3) -> list[str]:
    """Start servers together and return their URLs once all are ready; if one fails, stop them all and raise its
    error. Launched from this thread (a server's parent-death signal is tied to the thread that forks it) and
    waited for together (a start-up is mostly waiting on its own engine). A server whose free port another
    program took before the server bound it is launched again on another free port (up to `attempts` times)."""
    pending, tries = list(servers), 1
    for s in servers:
        s._stopping.clear()  # a server stopped before may start again
    try:
        while True:
            for s in pending:
                s.launch()
            if len(pending) == 1:
                errors = [_error_of(pending[0].wait_until_ready)]
            else:
                with ThreadPoolExecutor(len(pending)) as ex:
                    errors = [f.exception() for f in [ex.submit(s.wait_until_ready) for s in pending]]
            again = [s for s, e in zip(pending, errors) if isinstance(e, PortTaken) and s.picked_port]
            if (err := next((e for s, e in zip(pending, errors) if e is not None and s not in again), None)):
                raise err
            if again and tries == attempts:
                raise errors[pending.index(again[0])]
            if not again:
                return [s.base_url for s in servers]
            for s in again:
                s.progress(f"port {s.port} was taken by another program before the {s.role} server bound it; "
                           "starting it on another free port")
                s.port = None
            pending, tries = again, tries + 1
    except BaseException:
        for s in servers:
            s.stop()
        raise


def _error_of(fn) -> BaseException | None:
    try:
        fn()
    except Exception as e:
        return e
    return None


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
