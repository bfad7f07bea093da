"""Two training processes on this CPU (torchrun starts two; `accelerate launch --cpu --num_processes 2` would
start one here, silently): one judge for the run, launched by the main process; both processes' completions
judged and logged; one summary with totals over both; a stop raised in one process stops both at the same step."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from procs import held_request_ports, holds_a_request_from, kill_tree, lines, listening_port, session, wait_for

pytestmark = pytest.mark.integration

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "rlaif.train", "recipes/smoke.yaml"]


def run_cmd(out, steps, *extra):
    # no canaries: these tests measure the reward judge's own requests (its waits in an outage, its calls), and a
    # canary judge asking beside it changes which of the two meets the outage
    return TORCHRUN + ["--set", f"output_dir={out}", "--set", f"grpo.max_steps={steps}", "--set",
                       "grpo.logging_steps=1", "--set", "eval.every_steps=null", "--set", "grpo.save_strategy=no",
                       "--set", "judge.canaries=null", *extra]


def engines_under(pid):
    import psutil
    try:
        tree = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in tree if p.name().startswith("VLLM::Engine")]


def pid_in(path):
    """The pid a pid file holds, or None while it is missing or being rewritten."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def says_please(text):
    return "please" in text.lower()


def test_two_processes_share_one_judge_the_run_launched_wait_out_its_kill_and_learn(tiny, tmp_path):
    """One judge for both processes, launched by the main one. SIGKILLed after 5 steps: only the main process
    supervises it; the other learns of the outage by a refused connection and of the restart by the server's
    /health (rlaif/judge/pool.py). Both wait: no judgment fails, no step is lost, and the policy still learns.
    The judge is killed while it holds a request of each process, so both meet the outage. (Killed at a random
    moment, the process that had finished its step's judging waits at the step's gather instead and never sees it:
    rank 1's outage_wait_s was 0.0 in a CI run.)
    (One run for what were three tests: two processes learning, the judge killed under two processes, and the judge
    killed under one, whose main process is this run's rank 0: each started its own judge and trainer.)"""
    import psutil
    steps = 60
    out = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    with log.open("w") as f:  # a file, not a pipe: two processes' tables would fill a pipe nobody reads yet
        p = subprocess.Popen(run_cmd(out, steps, "--set", f"eval.every_steps={steps}"), stdout=subprocess.DEVNULL,
                             stderr=f, start_new_session=True)
    pidfile = out / "judge_server.pid"
    stopped = False
    try:
        wait_for(lambda: lines(out / "judgments.rank1.jsonl"), 600, "the second process's first judgments")
        engines = engines_under(p.pid)
        sessions = {os.getsid(e.pid) for e in engines}
        assert len(sessions) == 1, f"{len(sessions)} judge servers for one run"  # one judge, not one per process
        first = int(pidfile.read_text())
        assert sessions == {first}
        wait_for(lambda: len(lines(out / "judgments.rank1.jsonl")) >= 5 * 32, 600, "5 steps in both processes")
        port, workers = listening_port(first), psutil.Process(p.pid).children()  # torchrun's two processes
        assert len(workers) == 2, [w.name() for w in workers]

        def both_held():  # a judge batch from each process (KBs of token ids; a liveness probe is a few hundred)
            held = held_request_ports(port, min_bytes=2048)
            return all(holds_a_request_from(w.pid, port, held) for w in workers)
        # stop the judge; if a process had already judged its step, it waits at the step's gather for the other
        # and sends nothing: let the step end and stop the judge again. Short stops with a second of serving
        # between them: the judge is never held long enough for a request to reach its 30 s timeout
        for _ in range(30):
            os.killpg(first, signal.SIGSTOP)
            stopped = True
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline and not both_held():
                time.sleep(0.1)
            if both_held():
                break
            os.killpg(first, signal.SIGCONT)
            stopped = False
            time.sleep(1.0)
        assert stopped, "never held a judge request of both processes at once in 30 tries"
        os.killpg(first, signal.SIGKILL)  # the server and its engine, as an OOM killer or a crash would
        stopped = False
        wait_for(lambda: pid_in(pidfile) not in (None, first), 300, "the restarted judge's pid file")
        second = pid_in(pidfile)
        p.wait(timeout=900)
    finally:
        if stopped:  # whatever failed above: a stopped judge would hold its requests (and a SIGTERM) forever
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.killpg(first, sig)
                except ProcessLookupError:
                    pass
        if p.poll() is None:
            kill_tree(p.pid)
    err = log.read_text()
    assert p.returncode == 0, err[-3000:]
    text = " ".join(err.split())  # the console wraps long lines
    assert "died (exit code -9); restarting it (1 of at most 3)" in text
    assert err.count("starting the vLLM judge server") == 2  # the start and the one restart, by the main process
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and [x["rank"] for x in summary["processes"]] == [0, 1]
    assert summary["steps"] == steps and summary["stopped_early"] is None
    assert [x["steps"] for x in summary["processes"]] == [steps, steps]  # the same steps in both
    assert summary["judge"]["server_restarts"] == 1
    for proc in summary["processes"]:
        judge = proc["judge"]
        assert judge["failures"] == 0 and judge["fallbacks"] == 0, proc  # the outage cost time, not judgments
        assert judge["outage_wait_s"] > 0, proc  # each process waited for the restart (how long depends on the
        # machine, that it waited does not)
    logged = [h["step"] for h in summary["log_history"] if "judge/fail_rate" in h]
    assert logged == list(range(1, steps + 1))  # every step logged, once, on judge rewards
    per_rank = [x["judge"]["calls"] for x in summary["processes"]]
    assert min(per_rank) > 0 and summary["judge"]["calls"] == sum(per_rank)  # totals over both processes
    logs = [[json.loads(x) for x in lines(out / f)] for f in ("judgments.jsonl", "judgments.rank1.jsonl")]
    assert all({r["step"] for r in log} == set(range(steps)) for log in logs)  # each process's completions
    assert len(logs[0]) == per_rank[0] and len(logs[1]) == per_rank[1]  # whole lines, every judgment
    # it learned: held-out validation (each process half of the prompts) at step 0 and at the end, by the judge
    # and by the regex the judge was trained to imitate
    val = [json.loads(x) for x in lines(out / "validation.jsonl")]
    first_val, last_val = ([r for r in val if r["step"] == s] for s in (0, steps))
    assert len(first_val) == len(last_val) == 16 * 4  # val_prompts x samples_per_prompt, gathered from both
    judge_rate = [sum(bool(r["judge_pass"]) for r in rows) / len(rows) for rows in (first_val, last_val)]
    regex_rate = [sum(says_please(r["completion"]) for r in rows) / len(rows) for rows in (first_val, last_val)]
    assert judge_rate[1] >= judge_rate[0] + 0.2 and regex_rate[1] >= regex_rate[0] + 0.2, (judge_rate, regex_rate)
    from conftest import RLAIF
    report = subprocess.run(RLAIF + ["report", str(out)], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    wait_for(lambda: not session(second), 30, "the restarted judge to go")  # the run's end stops it too
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE
    print(f"2 processes, {steps} steps, judge killed after 5: waited "
          + ", ".join(f"{x['judge']['outage_wait_s']}s" for x in summary["processes"])
          + f"; s/step {summary['s_per_step']}, judge calls per process {per_rank}, held-out pass rate judge "
          f"{judge_rate[0]:.2f} -> {judge_rate[1]:.2f}, regex {regex_rate[0]:.2f} -> {regex_rate[1]:.2f}")


def test_sigterm_to_torchrun_checkpoints_both_processes_and_resume_finishes(tiny, judge_url, tmp_path):
    """torchrun passes SIGTERM on to its workers (and SIGKILLs them 30 s later): they finish the step, save one
    checkpoint and stop together; the same launch line with --resume finishes the run, every step logged once."""
    out = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    cmd = run_cmd(out, 40, "--set", f"judge.base_url={judge_url}")
    with log.open("w") as f:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
    try:
        wait_for(lambda: len(lines(out / "judgments.rank1.jsonl")) >= 3 * 32, 600, "3 steps in both processes")
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            kill_tree(p.pid)
    err = log.read_text()
    summary = json.loads((out / "train_summary.json").read_text())
    stopped = summary["steps"]
    assert summary["stopped_early"] == "SIGTERM" and 3 <= stopped < 40, err[-3000:]
    assert [x["steps"] for x in summary["processes"]] == [stopped, stopped]
    assert (out / f"checkpoint-{stopped}" / ".rlaif-complete").exists()
    assert "-m rlaif.train recipes/smoke.yaml" in err and "--resume" in err  # the way back, said
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 40 and summary["resumed_from"].endswith(f"checkpoint-{stopped}")
    logged = [h["step"] for h in summary["log_history"] if "judge/fail_rate" in h]
    assert logged == list(range(1, 41))  # every step once
    print(f"torchrun SIGTERM: stopped at step {stopped}, torchrun exit code {p.returncode}")


def test_a_stop_in_one_process_stops_both_at_the_same_step(tiny, judge_url, tmp_path):
    out = tmp_path / "run"
    sources = [{"kind": "judge", "name": "judge"},
               {"kind": "python", "name": "service", "function": "tests.fixtures.reward_functions:fails_on_rank_1"}]
    r = subprocess.run(run_cmd(out, 40, "--set", f"judge.base_url={judge_url}",
                               "--set", f"rewards={json.dumps(sources)}"), capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "training stopped at step" in r.stderr, r.stderr[-3000:]
    assert "reward function tests.fixtures.reward_functions:fails_on_rank_1 failed" in r.stderr
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] < 40 and [x["steps"] for x in summary["processes"]] == [summary["steps"]] * 2
    assert summary["stopped_early"] and "fails_on_rank_1" in summary["stopped_early"]
    assert (out / f"checkpoint-{summary['steps']}" / ".rlaif-complete").exists()  # saved on the way out
