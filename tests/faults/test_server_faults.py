"""Judge-server faults with real processes: the server killed mid-run, its port taken by another server."""
import json
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from procs import lines, wait_for

pytestmark = pytest.mark.integration


def _starts_and_posts(log):
    """(line numbers of each start-up of a vLLM server's log, of each judge batch it served): the log is appended
    to across restarts. Batches go to /v1/completions (token prompts) or /v1/chat/completions/batch; the start-up
    probe's single chat request is not one."""
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    return ([i for i, ln in enumerate(text) if "Application startup complete" in ln],
            [i for i, ln in enumerate(text) if ('"POST /v1/completions ' in ln or '/chat/completions/batch ' in ln)
             and " 200" in ln])


def test_two_processes_two_judge_replicas_and_one_killed_mid_run_costs_no_step(tiny, tmp_path):
    """Two training processes (torchrun), `judge.serve.replicas: 2` launched by the main one. Both replicas serve;
    one is SIGKILLed mid-run; the other carries every request of both processes while the main process's
    supervisor restarts it (the other process finds it refused, then back through a probe's one-token request);
    it serves again.
    Then SIGTERM: one checkpoint, both processes at the same step."""
    from test_multiprocess import kill_tree, run_cmd
    out = tmp_path / "run"
    err = tmp_path / "stderr.txt"
    with err.open("w") as ef:
        p = subprocess.Popen(run_cmd(out, 2000, "--set", "judge.serve.replicas=2"), stdout=subprocess.DEVNULL,
                             stderr=ef, start_new_session=True)
    logs = [out / "judge_server.log", out / "judge_server.1.log"]
    timeline = {}
    try:
        wait_for(lambda: len(lines(out / "judgments.rank1.jsonl")) >= 4 * 32, 900, "4 judged steps in both")
        assert all(_starts_and_posts(log)[1] for log in logs), "both replicas serve requests"
        killed = int((out / "judge_server.1.pid").read_text())
        t0 = time.monotonic()
        os.killpg(killed, signal.SIGKILL)  # the replica and its engine
        judged_at_kill = len(lines(out / "judgments.jsonl"))
        wait_for(lambda: len(_starts_and_posts(logs[1])[0]) == 2, 600, "the killed replica's restart")
        timeline["back_s"] = time.monotonic() - t0
        judged_while_down = len(lines(out / "judgments.jsonl")) - judged_at_kill
        restarted_at = _starts_and_posts(logs[1])[0][-1]
        wait_for(lambda: any(i > restarted_at for i in _starts_and_posts(logs[1])[1]), 300,
                 "the restarted replica to serve again")
        timeline["serving_again_s"] = time.monotonic() - t0
        p.send_signal(signal.SIGTERM)  # enough: torchrun passes it on, both stop cleanly at the step's end
        p.wait(timeout=300)
    finally:
        if p.poll() is None:
            kill_tree(p.pid)
    text = " ".join(err.read_text().split())  # the console wraps long lines
    assert "died (exit code -9); restarting it (1 of at most 3)" in text
    assert judged_while_down > 0  # the other replica carried the run while this one restarted
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["stopped_early"] == "SIGTERM" and summary["world_size"] == 2, text[-3000:]
    assert [x["steps"] for x in summary["processes"]] == [summary["steps"]] * 2
    judge = summary["judge"]  # summed over both processes
    assert judge["server_restarts"] == 1
    assert judge["outage_wait_s"] == 0  # one replica was up all along: nothing waited, in either process
    assert judge["fallbacks"] == 0 and judge["failures"] == 0, judge  # no judgment lost: no step lost
    replicas = [judge["replicas"][u] for u in sorted(judge["replicas"])]
    assert len(replicas) == 2 and all(r["calls"] > 0 for r in replicas)
    assert sorted(r["downs"] > 0 for r in replicas) == [False, True]  # the killed one, taken out
    steps = [h["step"] for h in summary["log_history"] if "judge/fail_rate" in h]
    assert steps == list(range(1, summary["steps"] + 1))  # every step logged, once, on judge rewards
    assert (out / f"checkpoint-{summary['steps']}" / ".rlaif-complete").exists()
    print(f"replica kill timeline (2 processes): back after {timeline['back_s']:.1f}s, serving again after "
          f"{timeline['serving_again_s']:.1f}s; {judged_while_down} judgments of the main process meanwhile; steps "
          f"{summary['steps']}, s/step {summary['s_per_step']}; calls per replica {[r['calls'] for r in replicas]}, "
          f"taken out {[r['downs'] for r in replicas]} times")


class NotOurJudge:
    """Another OpenAI-compatible server sitting on the port the recipe asks for."""

    def __init__(self):
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = json.dumps({"object": "list", "data": [{"id": "someone-elses-model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_taken_port_is_detected_by_the_served_name_and_another_is_used(tiny, tmp_path):
    from rlaif.config.recipe import load_recipe
    from rlaif.judge.server import VLLMServer, served_models
    other = NotOurJudge()
    notes = []
    try:
        r = load_recipe("recipes/smoke.yaml", [f"judge.serve.port={other.port}"])
        server = VLLMServer.for_judge(r.judge, tmp_path / "judge.log", progress=notes.append)
        with server:
            assert server.port != other.port
            assert served_models(server.base_url) == ["judge"]
            assert served_models(f"http://127.0.0.1:{other.port}") == ["someone-elses-model"]  # left alone
    finally:
        other.close()
    assert any(f"port {other.port} is taken by a server serving ['someone-elses-model']; using a free port" in n
               for n in notes)
