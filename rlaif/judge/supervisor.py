"""Keeping a launched server up: restart it, on its port, when it dies or hangs, and tell every judge that uses it."""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class Supervisor:
    """Watches one launched server and restarts it, on its port, when it dies mid-run, or when it is alive but
    stops answering (`probe_failures` failed probes in a row, one each `probe_s`: a real one-token request,
    VLLMServer.probe in rlaif/judge/server.py); a restart for a hang counts as a restart.

    One per server, however many judges use it (two judge sources sharing the recipe's judge, a cascade with the
    same model): each judge `listen`s, and hears `on_down`, `on_up` and `on_give_up`. While the server is down,
    judge calls wait for it (rlaif/judge/pool.py, bounded by judge.max_outage_wait_s, unless other replicas carry
    them; past that they fail and get the recipe's fallback, counted in `judge/fail_rate`); `on_down` and `on_up`
    let a reward hold its failure-rate stop for that time, so a crash and restart costs time, not steps. After
    `max_restarts` restarts, or a restart that fails, `on_give_up` says why. `stop()` ends a restart under way,
    and the process it launched.
    """

    def __init__(self, server, *, on_down=None, on_up=None, on_give_up=None, max_restarts: int = 3,
                 poll_s: float = 1.0, probe_s: float = 30.0, probe_failures: int = 3):
        self.server = server
        self.max_restarts, self.poll_s = max_restarts, poll_s
        self.probe_s, self.probe_failures = probe_s, probe_failures
        self.restarts = 0
        self.gave_up: str | None = None  # why, once it gave up
        self._listeners: list[tuple] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._restarting = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="judge-supervisor")
        if on_down or on_up or on_give_up:
            self.listen(on_down, on_up, on_give_up)

    def listen(self, on_down=None, on_up=None, on_give_up=None) -> None:
        """Hear about this server: `on_down(exit code)`, `on_up()`, `on_give_up(why)` (at once, if it gave up)."""
        with self._lock:
            self._listeners.append((on_down, on_up, on_give_up))
            gave_up = self.gave_up
        if gave_up and on_give_up:
            on_give_up(gave_up)

    def _tell(self, which: int, *args) -> None:
        with self._lock:
            calls = [listener[which] for listener in self._listeners if listener[which]]
        for call in calls:
            try:
                call(*args)
            except Exception:  # one listener's bug must not stop the others hearing, or the restart
                log.exception("a judge server listener failed")

    def _say(self, msg: str) -> None:
        progress = getattr(self.server, "progress", None)
        if progress:
            progress(msg)
        else:
            log.warning(msg)

    def start(self) -> "Supervisor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._restarting.is_set():  # a restart under way: end it, and what it launched (the run is ending)
            self.server.stop()
        self._thread.join(timeout=30)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _give_up(self, why: str) -> None:
        with self._lock:
            self.gave_up = why
        self._tell(2, why)

    def _run(self) -> None:
        failed = 0
        next_probe = time.monotonic() + self.probe_s
        role = getattr(self.server, "role", "judge")
        while not self._stop.wait(self.poll_s):
            code, why = self.server.died(), None
            if code is not None:
                why = f"died (exit code {code})"
            elif self.probe_failures and time.monotonic() >= next_probe:
                failed = 0 if self.server.probe() else failed + 1
                next_probe = time.monotonic() + self.probe_s
                if failed >= self.probe_failures:
                    code, why = "none: alive, not answering", f"is alive but failed {failed} probes in a row"
            if why is None or self._stop.is_set():
                continue
            failed = 0
            url = self.server.base_url
            self._tell(0, code)
            if self.restarts >= self.max_restarts:
                self._give_up(f"the {role} server at {url} {why} after {self.restarts} restart(s)")
                return
            self.restarts += 1
            self._say(f"the {role} server at {url} {why}; restarting it ({self.restarts} of at most "
                      f"{self.max_restarts})")
            self._restarting.set()  # before the look at _stop: stop() either sees this or is seen here
            try:  # from this thread, which lives as long as the run: the restarted server's parent-death signal
                if self._stop.is_set():
                    return
                self.server.restart()
            except Exception as e:  # cannot come back: the run must stop, not train on fallbacks
                if not self._stop.is_set():
                    self._give_up(f"the {role} server at {url} {why} and did not restart: {e}")
                return
            finally:
                self._restarting.clear()
            if self._stop.is_set():
                return
            next_probe = time.monotonic() + self.probe_s
            self._tell(1)
