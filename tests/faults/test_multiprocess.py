"""Two training processes on this CPU (torchrun starts two; `accelerate launch --cpu --num_processes 2` would
start one here, silently): one judge for the run, launched by the main process; both processes' completions
judged and logged; one summary with totals over both; a stop raised in one process stops both at the same step."""
import json
import os
import subprocess
import sys

import pytest
from procs import lines, wait_for

pytestmark = pytest.mark.integration

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "rlaif.train", "recipes/smoke.yaml"]


def run_cmd(out, steps, *extra):
    return TORCHRUN + ["--set", f"output_dir={out}", "--set", f"grpo.max_steps={steps}", "--set",
                       "grpo.logging_steps=1", "--set", "eval.every_steps=null", "--set", "grpo.save_strategy=no",
                       *extra]


def kill_tree(pid):
    """torchrun starts its workers in sessions of their own: a kill of its group would leave them."""
    import psutil
    try:
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for q in procs:
        try:
            q.kill()
        except psutil.NoSuchProcess:
            pass


def engines_under(pid):
    import psutil
    try:
        tree = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in tree if p.name().startswith("VLLM::Engine")]


def test_two_processes_share_one_judge_the_run_launched(tiny, tmp_path):
    out = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    with log.open("w") as f:  # a file, not a pipe: two processes' tables would fill a pipe nobody reads yet
        p = subprocess.Popen(run_cmd(out, 6), stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
    try:
        wait_for(lambda: lines(out / "judgments.rank1.jsonl"), 600, "the second process's first judgments")
        engines = engines_under(p.pid)
        sessions = {os.getsid(e.pid) for e in engines}
        assert len(sessions) == 1, f"{len(sessions)} judge servers for one run"  # one judge, not one per process
        judge_session = sessions.pop()
        p.wait(timeout=600)
    finally:
        if p.poll() is None:
            kill_tree(p.pid)
    err = log.read_text()
    assert p.returncode == 0, err[-3000:]
    assert err.count("starting the vLLM judge server") == 1
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and [x["rank"] for x in summary["processes"]] == [0, 1]
    assert [x["steps"] for x in summary["processes"]] == [6, 6]  # the same steps in both
    per_rank = [x["judge"]["calls"] for x in summary["processes"]]
    assert min(per_rank) > 0 and summary["judge"]["calls"] == sum(per_rank)  # totals over both processes
    logs = [[json.loads(x) for x in lines(out / f)] for f in ("judgments.jsonl", "judgments.rank1.jsonl")]
    assert all({r["step"] for r in log} == set(range(6)) for log in logs)  # each process's completions, judged
    assert len(logs[0]) == per_rank[0] and len(logs[1]) == per_rank[1]
    from conftest import RLAIF
    report = subprocess.run(RLAIF + ["report", str(out)], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    wait_for(lambda: not any(os.getsid(q.pid) == judge_session for q in _procs()), 30, "the judge to go")


def _procs():
    import psutil
    out = []
    for q in psutil.process_iter(["status"]):
        if q.info["status"] != psutil.STATUS_ZOMBIE:
            try:
                os.getsid(q.pid)
                out.append(q)
            except (ProcessLookupError, PermissionError):
                pass
    return out


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
