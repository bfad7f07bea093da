"""Two torchrun "nodes" on this machine (`--nnodes 2 --node_rank 0|1`, one process each, gloo over 127.0.0.1),
judged by a running judge given as judge.base_url, as docs/scaling.md tells a two-node run to be: one output_dir
that both share (checkpoints, --resume, every rank's judgment log, one report), or refused up front when each
node has its own; and the judge's key in none of what the run writes. (The launch refusal across nodes and the
judge's devices: tests/test_nodes.py.)"""
import json
import re
import subprocess
import sys

import pytest
from conftest import RLAIF

from rlaif.judge.server import free_port

pytestmark = pytest.mark.integration

KEY = "sk-two-nodes-4f9a1c"


def node_cmd(rank, port, out, judge_url, steps, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
            "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
            "-m", "rlaif.train", "recipes/smoke.yaml", "--set", f"judge.base_url={judge_url}",
            "--set", f"output_dir={out}", "--set", f"grpo.max_steps={steps}", "--set", "grpo.save_steps=2",
            "--set", "grpo.logging_steps=1", "--set", "eval.every_steps=null", "--set", "judge.canaries=null",
            "--set", f"judge.api_key={KEY}", *extra]


def two_nodes(outs, judge_url, steps, tmp_path, *extra):
    """Start both nodes, wait for both; (return codes, stderr of each)."""
    port = free_port()
    procs, logs = [], []
    for rank, out in enumerate(outs):
        logs.append(tmp_path / f"node{rank}.{len(list(tmp_path.glob('node*.err')))}.err")
        with logs[-1].open("w") as f:  # a file, not a pipe: nobody reads a pipe while both run
            procs.append(subprocess.Popen(node_cmd(rank, port, out, judge_url, steps, *extra),
                                          stdout=subprocess.DEVNULL, stderr=f))
    try:
        codes = [p.wait(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return codes, [log.read_text() for log in logs]


def test_nodes_with_an_output_dir_each_are_refused_before_training(tiny, tmp_path):
    outs = [tmp_path / "node0" / "run", tmp_path / "node1" / "run"]
    codes, errs = two_nodes(outs, "http://127.0.0.1:9", 2, tmp_path)  # no judge needed: refused before it
    assert all(c != 0 for c in codes), errs[0][-2000:]
    for err in errs:  # one line from rlaif in each (torchrun adds its own traceback of the failed child)
        assert "error: output_dir" in err and "do not see what rank 0 writes there" in err, err[-3000:]
        assert not re.search(r'File ".*/rlaif/', err), err[-3000:]
    assert [p for out in outs for p in out.glob("judgments*.jsonl")] == []  # nothing judged, nothing trained


def test_nodes_sharing_one_output_dir_train_resume_and_report_together(tiny, judge_url, tmp_path):
    out = tmp_path / "shared" / "run"
    codes, errs = two_nodes([out, out], judge_url, 2, tmp_path)
    assert codes == [0, 0], errs[0][-3000:] + errs[1][-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and [p["steps"] for p in summary["processes"]] == [2, 2]
    assert (out / "checkpoint-2" / ".rlaif-complete").exists()
    assert (out / "judgments.jsonl").exists() and (out / "judgments.rank1.jsonl").exists()

    before = [len((out / log).read_text().splitlines()) for log in ("judgments.jsonl", "judgments.rank1.jsonl")]
    codes, errs = two_nodes([out, out], judge_url, 4, tmp_path, "--resume")
    assert codes == [0, 0], errs[0][-3000:] + errs[1][-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["resumed_from"].endswith("checkpoint-2")
    assert [p["steps"] for p in summary["processes"]] == [4, 4]
    for log, n in zip(("judgments.jsonl", "judgments.rank1.jsonl"), before):  # both went on from step 2
        rows = (out / log).read_text().splitlines()
        assert {json.loads(x)["step"] for x in rows[n:]} == {2, 3}, log

    r = subprocess.run(RLAIF + ["report", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "judgment logs are not" not in r.stdout + r.stderr, r.stderr[-2000:]

    # the key the run was given (--set judge.api_key) is in none of what it wrote, an export or its logs
    export = tmp_path / "export"
    r = subprocess.run(RLAIF + ["export", str(out), "--out", str(export), "--adapter-only"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    written = [p for d in (out, export) for p in d.rglob("*") if p.is_file()]
    assert (export / "rlaif_recipe.json").exists() and len(written) > 20
    assert [p for p in written if KEY.encode() in p.read_bytes()] == []
    assert all(KEY not in err for err in errs) and KEY not in r.stdout + r.stderr
    print(f"two nodes, one output_dir: {len(written)} files written, none holds the key")
