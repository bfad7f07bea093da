"""Judge-server faults with real processes: the server killed mid-run, its port taken by another server."""
import json
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from procs import RLAIF, lines, wait_for

pytestmark = pytest.mark.integration


def test_a_judge_server_killed_mid_run_is_restarted_and_training_waits_for_it(tiny, tmp_path):
    import psutil
    out = tmp_path / "run"
    err = tmp_path / "stderr.txt"
    cmd = RLAIF + ["train", "recipes/smoke.yaml", "--set", f"output_dir={out}", "--set", "grpo.max_steps=120",
                   "--set", "grpo.logging_steps=1", "--set", "grpo.save_strategy=no",
                   "--set", "grpo.per_device_train_batch_size=16", "--set", "judge.on_failure=neutral",
                   "--set", "eval.every_steps=null"]
    with err.open("w") as ef:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=ef, start_new_session=True)
    try:
        pidfile = out / "judge_server.pid"
        wait_for(lambda: pidfile.exists() and len(lines(out / "judgments.jsonl")) >= 3 * 16, 600, "3 judged steps")
        first = int(pidfile.read_text())
        os.killpg(first, signal.SIGKILL)  # the server and its engine, as an OOM killer or a crash would
        assert p.wait(timeout=900) == 0, err.read_text()[-3000:]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    text = err.read_text()
    assert "the judge server died" in text and "restarting it (1 of at most 3)" in text
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 120 and summary["stopped_early"] is None
    assert summary["judge"]["server_restarts"] == 1
    # the outage cost time, not steps: requests waited for the restart instead of falling back
    assert summary["judge"]["outage_wait_s"] > 5  # a restart takes tens of seconds here
    assert summary["judge"]["fallbacks"] <= 0.01 * summary["judge"]["calls"], summary["judge"]
    logs = [h for h in summary["log_history"] if "judge/fail_rate" in h]
    assert len(logs) == 120 and max(h["judge/fail_rate"] for h in logs) < 0.5  # no step on fallbacks alone
    second = int(pidfile.read_text())
    assert second != first
    time.sleep(1)
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE
    rows = [json.loads(ln) for ln in lines(out / "judgments.jsonl")]  # whole lines, every one
    assert len(rows) >= 120 * 16


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
