"""Trainer faults with real processes: SIGKILL after a checkpoint, Ctrl-C, the disk filling during a checkpoint."""
import json
import os
import signal
import subprocess
import time

import pytest
from procs import RLAIF, lines, listening_port, session, unread_bytes_at, wait_for

pytestmark = pytest.mark.integration


def train_cmd(out, steps, *extra):
    return RLAIF + ["train", "recipes/smoke.yaml", "--set", f"output_dir={out}", "--set", f"grpo.max_steps={steps}",
                    "--set", "grpo.save_steps=2", "--set", "grpo.logging_steps=1",
                    "--set", "grpo.per_device_train_batch_size=16", "--set", "eval.every_steps=null", *extra]


def assert_whole_lines_and_tables(out):
    """Append-only files after a crash: every line parses, every completions table reads."""
    import pandas as pd
    rows = [json.loads(ln) for ln in lines(out / "judgments.jsonl")]
    for f in (out / "completions").glob("*.parquet"):
        assert len(pd.read_parquet(f)) > 0
    return rows


def gone(pid):
    import psutil
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def latest_complete_checkpoint(out):
    done = [int(c.name.split("-")[1]) for c in out.glob("checkpoint-*") if (c / ".rlaif-complete").exists()]
    return max(done, default=None)


def test_sigkill_after_a_checkpoint_then_resume_loses_no_step(tiny, judge_url, tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen(train_cmd(out, 8), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        # the trainer launched its own judge server; kill the trainer alone once checkpoint-4 is complete
        wait_for(lambda: (out / "checkpoint-4" / ".rlaif-complete").exists(), 600, "checkpoint-4")
        server = int((out / "judge_server.pid").read_text())
        judge_session = os.getsid(server)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    wait_for(lambda: gone(server), 60, "the judge server to die with its trainer")  # no orphaned server
    wait_for(lambda: not session(judge_session), 30, "the judge's engine processes to go too")
    # A fast machine may have finished checkpoint-6 between the poll and the kill: resume must pick the latest
    # complete one, whichever it is.
    last = latest_complete_checkpoint(out)
    assert last is not None and 4 <= last < 8, f"the kill landed after the run's end (checkpoint-{last})"
    before = assert_whole_lines_and_tables(out)
    assert {r["step"] for r in before} >= set(range(last))

    r = subprocess.run(train_cmd(out, 8, "--resume", "--set", f"judge.base_url={judge_url}"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 8 and summary["resumed_from"].endswith(f"checkpoint-{last}")
    logged = sorted(h["step"] for h in summary["log_history"] if "reward" in h)
    assert logged == list(range(1, 9))  # every step, the ones before the kill from the checkpoint
    after = assert_whole_lines_and_tables(out)
    assert after[:len(before)] == before  # append-only: nothing written before the kill was touched
    assert {r["step"] for r in after[len(before):]} == set(range(last, 8))  # the steps after it, judged again


def test_sigterm_saves_a_checkpoint_at_the_step_boundary_and_resume_finishes(tiny, judge_url, tmp_path):
    """What a preemptible machine, SLURM or Kubernetes does: SIGTERM, then a grace period. (20 steps: on a fast
    machine the signal must still land mid-run.)"""
    steps = 20
    out = tmp_path / "run"
    no_saves = ["--set", "grpo.save_steps=100", "--set", f"judge.base_url={judge_url}"]
    log = tmp_path / "stderr.txt"
    with log.open("w") as f:  # a file, not a pipe nobody reads until the end
        p = subprocess.Popen(train_cmd(out, steps, *no_saves), stdout=subprocess.DEVNULL, stderr=f,
                             start_new_session=True)
    try:
        wait_for(lambda: len(lines(out / "judgments.jsonl")) >= 2 * 16, 600, "two judged steps")
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=300)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    err = log.read_text()
    assert p.returncode == 143, err[-3000:]
    assert "preempted (SIGTERM): stopped cleanly at step" in err and "Traceback" not in err
    last = latest_complete_checkpoint(out)  # the only checkpoint: the one the signal asked for
    assert last is not None and 2 <= last < steps and f"checkpoint-{last} is complete" in err, err[-2000:]
    assert "rlaif train recipes/smoke.yaml" in err and "--resume" in err  # the command that continues
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == last and summary["stopped_early"] == "SIGTERM" and summary["adapter"] is None
    before = assert_whole_lines_and_tables(out)

    r = subprocess.run(train_cmd(out, steps, "--resume", *no_saves), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == steps and summary["resumed_from"].endswith(f"checkpoint-{last}")
    logged = sorted(h["step"] for h in summary["log_history"] if "reward" in h)
    assert logged == list(range(1, steps + 1))  # every step once: none lost, none trained twice
    after = assert_whole_lines_and_tables(out)
    assert {r["step"] for r in after[len(before):]} == set(range(last, steps))


def test_sigkill_to_the_trainer_and_its_children_leaves_no_judge_process(tiny, tmp_path):
    """As an OOM killer or `kill -9` of a process and its children would: the API server dies at once, without
    stopping its engine; the reaper ends the rest of the judge's session."""
    import psutil
    out = tmp_path / "run"
    p = subprocess.Popen(train_cmd(out, 200, "--set", "grpo.save_strategy=no"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: len(lines(out / "judgments.jsonl")) >= 16, 600, "a judged step")
        judge_session = os.getsid(int((out / "judge_server.pid").read_text()))
        members = session(judge_session)
        assert any(m.info["name"].startswith("VLLM::") for m in members), [m.info["name"] for m in members]
        for proc in [psutil.Process(p.pid)] + psutil.Process(p.pid).children(recursive=False):
            proc.kill()
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    wait_for(lambda: not session(judge_session), 30, "every judge process to go, engine included")


def test_ctrl_c_twice_stops_at_once_with_every_child(tiny, tmp_path):
    import psutil
    out = tmp_path / "run"
    judge_group = None
    p = subprocess.Popen(train_cmd(out, 200, "--set", "grpo.save_strategy=no"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: len(lines(out / "judgments.jsonl")) >= 32, 600, "two judged steps")
        tree = psutil.Process(p.pid).children(recursive=True)
        assert tree  # the judge server and its engine
        # a judge that stops answering (stopped, not dead: its port still takes connections) holds the step open,
        # so the step cannot end between the two signals however fast this machine is (a step here takes ~0.3 s);
        # once the trainer has sent it a request it has not read, the step is waiting for it (before that, the
        # step under way may still end: its judging was done)
        judge_group = int((out / "judge_server.pid").read_text())
        port = listening_port(judge_group)
        os.killpg(judge_group, signal.SIGSTOP)
        wait_for(lambda: unread_bytes_at(port) > 0, 120, "a judge request the stopped judge holds")
        p.send_signal(signal.SIGINT)  # the first asks for a checkpoint at the step's end ...
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)  # ... the second will not wait for it
        _, err = p.communicate(timeout=120)
        assert p.returncode == 130, err[-2000:]
        assert "interrupted: SIGINT a second time: stopped at once" in " ".join(err.split()) and "Traceback" not in err
        assert "--resume" in err  # from the last complete checkpoint
        time.sleep(1)
        alive = [c for c in tree if not gone(c.pid)]
        assert not alive, f"orphans: {[c.cmdline()[:3] for c in alive]}"  # the run ended its stopped judge
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        if judge_group is not None:  # whatever failed above: a stopped judge would hold a pending SIGTERM forever
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.killpg(judge_group, sig)
                except ProcessLookupError:
                    pass
    assert_whole_lines_and_tables(out)


@pytest.fixture()
def small_disk(tmp_path):
    """A 1.4 MB filesystem (tmpfs): room for one tiny checkpoint (~0.9 MB) and the logs, not for two."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1400k", "tmpfs", str(mnt)], capture_output=True, text=True)
    assert r.returncode == 0, f"this test mounts a small tmpfs and needs root (CI runs as root): {r.stderr}"
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_a_full_disk_during_a_checkpoint_is_a_clear_error_and_the_last_one_still_loads(tiny, judge_url, small_disk):
    out = small_disk / "run"
    cmd = train_cmd(out, 6, "--set", f"judge.base_url={judge_url}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "the disk is full" in r.stderr and "checkpoint-2 is intact" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not (out / "checkpoint-4").exists()  # half a checkpoint is never what --resume would pick
    assert_whole_lines_and_tables(out)
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)  # space freed
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 6 and summary["resumed_from"].endswith("checkpoint-2")
