"""Judge-server supervisors with stand-in servers (died(), probe(), restart(), base_url): one supervisor per
launched server however many judges use it, a live server that stops answering restarted like a dead one, a restart
cap, and `rlaif judge serve` keeping its other replicas serving while one restarts. (Real vLLM servers killed
mid-run: tests/faults/test_server_faults.py; a real `rlaif judge serve` with a replica SIGKILLed there too.)"""
import contextlib
import threading
import time
from argparse import Namespace

from procs import wait_for, without_tiny_models

from rlaif import factory
from rlaif.cli import judge as judge_cli
from rlaif.config.recipe import load_recipe
from rlaif.judge.judgment_log import JudgmentLog
from rlaif.judge.supervisor import Supervisor


class StubServer:
    """A launched server as the Supervisor sees it. `kill()` makes it die; `hang` makes its probes fail;
    `restart_fails` makes restarts raise."""

    def __init__(self, url):
        self.base_url, self.role, self.start_s = url, "judge", 1.0
        self.code = None
        self.hang = False
        self.restart_fails = False
        self.restarts = self.probes = self.stops = 0
        self.notes = []

    def died(self):
        return self.code

    def kill(self):
        self.code = -9

    def probe(self):
        self.probes += 1
        return not self.hang

    def restart(self):
        self.restarts += 1
        if self.restart_fails:
            raise RuntimeError("the port stayed taken")
        self.code, self.hang = None, False
        return self.base_url

    def stop(self):
        self.stops += 1

    def progress(self, msg):
        self.notes.append(msg)


class Events:
    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()

    def listener(self, who):
        def add(kind):
            return lambda *a: self.add((who, kind) + a)
        return dict(on_down=add("down"), on_up=add("up"), on_give_up=add("give_up"))

    def add(self, e):
        with self.lock:
            self.seen.append(e)

    def kinds(self, who):
        with self.lock:
            return [e[1] for e in self.seen if e[0] == who]


def test_a_live_server_that_fails_three_probes_is_restarted_once():
    server, events = StubServer("http://127.0.0.1:1"), Events()
    with Supervisor(server, poll_s=0.02, probe_s=0.02, probe_failures=3, **events.listener("j")) as sup:
        wait_for(lambda: server.probes >= 2, 30, "probes of a healthy server")
        assert server.restarts == 0
        server.hang = True
        wait_for(lambda: events.kinds("j") == ["down", "up"], 30, "down, then up")
        assert server.restarts == 1 and sup.restarts == 1  # counted as a restart
        assert server.probes >= 5  # three failed in a row before the restart
        assert any("failed 3 probes in a row; restarting it (1 of at most 3)" in n for n in server.notes)


def test_a_server_that_keeps_dying_is_given_up_after_max_restarts():
    server, events = StubServer("http://127.0.0.1:1"), Events()
    with Supervisor(server, poll_s=0.02, max_restarts=2, **events.listener("j")) as sup:
        for n in (1, 2):
            server.kill()
            wait_for(lambda: events.kinds("j").count("up") == n, 30, f"restart {n}")
        server.kill()
        wait_for(lambda: "give_up" in events.kinds("j"), 30, "the give-up")
    assert events.kinds("j") == ["down", "up", "down", "up", "down", "give_up"]
    assert server.restarts == 2 and "after 2 restart(s)" in sup.gave_up


def test_a_failed_restart_gives_up_with_the_reason():
    server, events = StubServer("http://127.0.0.1:1"), Events()
    server.restart_fails = True
    with Supervisor(server, poll_s=0.02, **events.listener("j")) as sup:
        server.kill()
        wait_for(lambda: sup.gave_up is not None, 30, "the give-up")
    assert "did not restart: the port stayed taken" in sup.gave_up
    assert events.kinds("j") == ["down", "give_up"]


def test_two_judge_sources_sharing_a_launched_server_get_one_supervisor(monkeypatch, tmp_path):
    """The README's `polite` and `again` sources share the recipe's launched judge: one supervisor restarts it
    once, and both judges hear that it went down and came back."""
    stub = StubServer("http://127.0.0.1:9")
    monkeypatch.setattr(factory, "launch_replicas", lambda recipe, run_dir: [stub])
    monkeypatch.setattr(Supervisor, "__init__", _fast(Supervisor.__init__))
    recipe = load_recipe("recipes/smoke.yaml", ["rewards=[{kind: judge, name: polite}, {kind: judge, name: again}]",
                                                f"output_dir={tmp_path}", *without_tiny_models(tmp_path)])
    with contextlib.ExitStack() as stack:
        endpoints = factory.Endpoints(recipe, tmp_path, None, stack)
        log = JudgmentLog(tmp_path / "j.jsonl")
        stack.callback(log.close)
        sources = factory.make_sources(recipe, endpoints, log, self_test=False)
        judges = [s.judge for s in sources]
        for j in judges:
            stack.callback(j.close)
        assert sum(t.name == "judge-supervisor" and t.is_alive() for t in threading.enumerate()) == 1
        stub.kill()
        wait_for(lambda: all(j.totals["server_restarts"] == 1 for j in judges), 30, "both judges to hear it")
        assert stub.restarts == 1  # one restart, not one per judge
        ep = endpoints.get(recipe)
        assert len(ep.supervisors) == 1 and ep.servers == (stub,)
        assert all(not j.backend.pool.replicas[stub.base_url].down for j in judges)  # both pools put it back
    assert not any(t.name == "judge-supervisor" and t.is_alive() for t in threading.enumerate())


def _fast(init):
    def fast(self, server, **kw):
        init(self, server, **{**kw, "poll_s": 0.02})
    return fast


def serve_args(tmp_path):
    return Namespace(recipe="recipes/smoke.yaml", port=None,
                     overrides=["judge.serve.replicas=2", f"output_dir={tmp_path}", *without_tiny_models(tmp_path)])


def test_judge_serve_restarts_a_dead_replica_and_the_others_keep_serving(monkeypatch, capsys, tmp_path):
    stubs = [StubServer("http://127.0.0.1:8100"), StubServer("http://127.0.0.1:8101")]
    monkeypatch.setattr(judge_cli, "launch_replicas", lambda recipe, run_dir, **kw: stubs)
    monkeypatch.setattr(Supervisor, "__init__", _fast(Supervisor.__init__))
    result = []
    serving = threading.Thread(target=lambda: result.append(judge_cli.cmd_serve(serve_args(tmp_path))), daemon=True)
    serving.start()
    wait_for(lambda: "http://127.0.0.1:8100 http://127.0.0.1:8101" in capsys.readouterr().out, 30, "the URLs")
    stubs[1].kill()
    wait_for(lambda: stubs[1].restarts == 1 and stubs[1].died() is None, 30, "the killed replica's restart")
    assert stubs[1].base_url == "http://127.0.0.1:8101"  # on its own port
    assert stubs[0].restarts == 0 and stubs[0].stops == 0 and serving.is_alive()
    stubs[1].restart_fails = True  # it cannot come back: the other goes on serving
    stubs[1].kill()
    wait_for(lambda: "http://127.0.0.1:8101" in capsys.readouterr().err, 30, "the give-up, said")
    time.sleep(0.2)
    assert serving.is_alive() and stubs[0].stops == 0
    stubs[0].restart_fails = True  # the last one gives up too: the command ends, non-zero
    stubs[0].kill()
    serving.join(timeout=30)
    assert result == [1] and all(s.stops == 1 for s in stubs)
