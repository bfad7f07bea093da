"""`rlaif serve RUN_DIR`: vLLM with the run's LoRA adapter answers as the trained policy does in transformers
(greedy completions equal, fixed prompts), and its `base` model as the base does; Ctrl-C stops the server and
every process of it."""
import json
import os
import signal
import subprocess

import httpx
from conftest import RLAIF
from greedy import greedy as _greedy
from greedy import same_greedy

from rlaif.train.serve import policy_server


def _prompts(n=6):
    rows = [json.loads(x) for x in open("artifacts/tiny/data/heldout.jsonl").read().splitlines()[:n]]
    return [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]


def test_the_served_policy_answers_as_the_trained_one_and_base_as_the_base(short_run, judge_url, tmp_path):
    import psutil
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    run = short_run[0]
    base_name = json.loads((run / "recipe.resolved.json").read_text())["policy"]["model"]
    tok = AutoTokenizer.from_pretrained(run / "adapter")
    models = {"base": AutoModelForCausalLM.from_pretrained(base_name).eval(),
              "trained": PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_name),
                                                   run / "adapter").eval()}
    p = subprocess.Popen(RLAIF + ["serve", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        url = p.stdout.readline().strip()  # printed once the server answers
        assert url.startswith("http://127.0.0.1:"), p.stderr.read()[-2000:] if p.poll() is not None else url
        listed = [m["id"] for m in httpx.get(url + "/v1/models", timeout=10).json()["data"]]
        assert sorted(listed) == ["base", "trained"]
        gaps = []  # how far the adapter moves the first token's logprob: it must be on for one name, off for the other
        for messages in _prompts():
            want = {name: _greedy(m, tok, messages) for name, m in models.items()}
            first = {}
            for name in ("trained", "base"):
                body = {"model": name, "messages": messages, "max_tokens": 16, "temperature": 0, "logprobs": True,
                        "return_tokens_as_token_ids": True, "skip_special_tokens": False}
                got = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()["choices"][0]
                served = [int(t["token"].split(":")[1]) for t in got["logprobs"]["content"]]
                assert same_greedy(served, *want[name]), (name, messages, served, want[name])
                first[name] = got["logprobs"]["content"][0]["logprob"]
            gaps.append(abs(first["trained"] - first["base"]))
        assert max(gaps) > 1e-3, gaps
        # train -> serve -> eval: `rlaif eval --policy-url` samples 'trained' and 'base' from the server and judges
        evaluated = tmp_path / "eval.json"
        r = subprocess.run(RLAIF + ["eval", "recipes/smoke.yaml", "--policy-url", url, "--set",
                                    f"judge.base_url={judge_url}", "--set", "eval.max_prompts=8", "--output",
                                    str(evaluated)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        res = json.loads(evaluated.read_text())
        assert res["base"]["n_completions"] == res["adapter"]["n_completions"] == 8 * 4
        assert res["adapter"]["adapter"] == f"{url} model 'trained'" and res["comparison"]
        assert res["base"]["judge_failures"] == res["adapter"]["judge_failures"] == 0
        r = subprocess.run(RLAIF + ["eval", "recipes/smoke.yaml", "--policy-url", url, "--policy-model", "nope",
                                    "--set", f"judge.base_url={judge_url}"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode != 0 and "not 'nope' (--policy-model)" in r.stderr
        assert "Traceback" not in r.stderr
        tree = psutil.Process(p.pid).children(recursive=True)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) == 130
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    gone = psutil.wait_procs(tree, timeout=30)[1]
    assert not [q for q in gone if q.status() != psutil.STATUS_ZOMBIE]


def test_what_serve_launches_for_a_run_and_for_a_merged_export(tmp_path, short_run):
    server, names = policy_server(short_run[0])
    cmd = server.command()
    assert names == ["trained", "base"] and "--enable-lora" in cmd
    assert cmd[cmd.index("--max-lora-rank") + 1] == "16"  # the smoke adapter's rank 16
    assert cmd[cmd.index("--dtype") + 1] in ("float32", "auto")  # fp32 kept on a CPU machine
    export = tmp_path / "merged"
    export.mkdir()
    (export / "config.json").write_text(json.dumps({"dtype": "float32"}))
    server, names = policy_server(export)
    assert names == ["trained"] and "--enable-lora" not in server.command()


def test_a_directory_without_a_policy_is_refused(tmp_path):
    r = subprocess.run(RLAIF + ["serve", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no trained adapter" in r.stderr and "Traceback" not in r.stderr
