"""FSDP2 on two CPU processes (torchrun, gloo), as recipes/smoke-fsdp.yaml runs it: the run ends with its adapter,
gathered whole from the shards, equal to the trained shards of its last checkpoint (read back with torch's own DCP
reader), that peft loads and `rlaif export` merges; a run directory whose checkpoints hold only shards is not
pointed at them; validation with fewer prompts than processes does not hang (every process must join each
forward of `generate` under FSDP); and TRL's weight stream for a colocated vLLM engine is the merged policy.
What only a GPU can settle is listed in docs/scaling.md."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import RLAIF, ROOT
from procs import kill_tree

from rlaif.eval.validation import shares

cpu_torch = pytest.mark.skipif(torch._C._get_accelerator().type != "cpu",
                               reason="FSDP2 on CPU processes needs a CPU build of torch (its default mesh is the "
                                      "build's accelerator); on a GPU, FSDP is accelerate's own path")

# the recipe header's launch line; --local-addr because torchrun's rendezvous otherwise connects to this machine's
# host name, which a container's /etc/hosts may not resolve (then every launch waits 300 s and fails)
STANDALONE = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr", "127.0.0.1",
              "--nproc_per_node", "2"]
TORCHRUN = STANDALONE + ["-m", "rlaif.train", "recipes/smoke-fsdp.yaml"]
RUN_S = 600  # a 4-step run of two CPU processes takes a minute or two on a loaded 2-core machine: only a hang is
# still running after ten


def torchrun(log, *args):
    """The launch line of the recipe's header, with overrides; its exit code, or None if it was still running
    after RUN_S (then killed, workers too)."""
    with log.open("w") as f:  # a file, not a pipe: two processes' output would fill a pipe nobody reads yet
        p = subprocess.Popen(TORCHRUN + list(args), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return p.wait(timeout=RUN_S)
    except subprocess.TimeoutExpired:
        return None
    finally:
        if p.poll() is None:
            kill_tree(p.pid)


def overrides(out, judge_url, *extra):
    return ["--set", f"output_dir={out}", "--set", f"judge.base_url={judge_url}", "--set", "judge.canaries=null",
            *extra]


def shards_of(checkpoint, tmp_path) -> dict:
    """The adapter's tensors as the trainer checkpointed them under FSDP: each process's shards (DCP), read back
    whole in this one process by torch's own converter."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    dcp_to_torch_save(checkpoint / "pytorch_model_fsdp_0", tmp_path / "shards.pt")
    return torch.load(tmp_path / "shards.pt")["model"]


def adapter_tensors(folder) -> dict:
    from safetensors.torch import load_file
    return load_file(folder / "adapter_model.safetensors")


@cpu_torch
@pytest.mark.timeout(3 * RUN_S)
def test_an_fsdp_run_ends_with_its_adapter_whole_loadable_and_exported(judge_url, tmp_path):
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    log = tmp_path / "train.log"
    rc = torchrun(log, *overrides(out, judge_url, "--set", "eval.every_steps=null"))
    assert rc == 0, log.read_text()[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    last = out / "checkpoint-4"
    # it was FSDP: the checkpoints are each process's shards, not an adapter (what DDP would have written)
    assert (last / "pytorch_model_fsdp_0").is_dir() and not (last / "adapter_config.json").exists()
    adapter = out / "adapter"
    assert summary["adapter"] == str(adapter) and (adapter / "adapter_config.json").exists()
    assert (adapter / "tokenizer_config.json").exists()
    saved, trained = adapter_tensors(adapter), shards_of(last, tmp_path)
    assert saved.keys() == trained.keys() and len(saved) == 2 * 7 * 2  # lora_A and lora_B, 7 projections, 2 layers
    for name, t in trained.items():
        assert torch.equal(saved[name], t), name  # the whole matrix, not one process's slice (accelerate#4206)
    assert any(t.abs().max() > 0 for name, t in saved.items() if "lora_B" in name)  # trained: lora_B starts at 0

    base = json.loads((out / "recipe.resolved.json").read_text())["policy"]["model"]
    tok = AutoTokenizer.from_pretrained(adapter)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    loaded = get_peft_model_state_dict(peft)
    assert all(torch.equal(loaded[name], t) for name, t in trained.items())
    merged_dir = tmp_path / "merged"
    r = subprocess.run(RLAIF + ["export", str(out), "--out", str(merged_dir)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    ids = tok("Ask the shop for a refund, please.", return_tensors="pt")
    with torch.no_grad():
        ref = peft(**ids).logits
        gap = (merged(**ids).logits - ref).abs().max().item()
    assert gap <= 1e-5 * max(1.0, ref.abs().max().item()), gap  # float rounding only, as in tests/test_export.py

    # without adapter/ the export does not send the user to a checkpoint of shards; the way it gives (--resume
    # with the same launch line) ends with an adapter that exports (resumed at max_steps, transformers' loop
    # trains one step more before it stops: not the same weights)
    shutil.rmtree(adapter)
    r = subprocess.run(RLAIF + ["export", str(out), "--out", str(tmp_path / "x")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1 and "hold no adapter" in r.stderr and "--resume" in r.stderr, r.stderr[-2000:]
    assert "its adapter is in" not in r.stderr
    rc = torchrun(log, *overrides(out, judge_url, "--set", "eval.every_steps=null"), "--resume")
    assert rc == 0, log.read_text()[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-4") and summary["adapter"] == str(adapter)
    assert adapter_tensors(adapter).keys() == trained.keys()
    r = subprocess.run(RLAIF + ["export", str(out), "--out", str(tmp_path / "x")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


@cpu_torch
@pytest.mark.timeout(2 * RUN_S)
def test_validation_with_fewer_prompts_than_processes_does_not_hang(judge_url, tmp_path):
    """One held-out prompt, two processes: the process without a prompt used to go on to the gather of the
    results while the other was inside `generate`, each of whose forwards all-gathers the shards. On NCCL that
    is a hang; gloo here sees the sizes differ (4 bytes against 128) and aborts the run at step 0."""
    out = tmp_path / "run"
    log = tmp_path / "train.log"
    rc = torchrun(log, *overrides(out, judge_url, "--set", "grpo.max_steps=2", "--set", "grpo.save_strategy=no",
                                  "--set", "eval.every_steps=2", "--set", "eval.val_prompts=1"))
    assert rc is not None, f"still running after {RUN_S} s: a hang\n" + log.read_text()[-3000:]
    assert rc == 0, log.read_text()[-3000:]
    rows = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()]
    k = 4  # eval.samples_per_prompt
    for step in (0, 2):  # the one prompt's samples, once: the padding rank's rows were dropped
        ids = [r["id"] for r in rows if r["step"] == step]
        assert len(ids) == k and len({i.split("#")[0] for i in ids}) == 1, (step, ids)
    assert [h["step"] for h in json.loads((out / "train_summary.json").read_text())["log_history"]
            if "val/reward" in h] == [0, 2]


@cpu_torch
@pytest.mark.timeout(RUN_S)
def test_trls_weight_stream_to_vllm_under_fsdp2_and_peft_is_the_merged_policy(tiny, tmp_path):
    """What TRL feeds the colocated vLLM engine before each step (VLLMGeneration._iter_named_params: peft's
    merge_adapter on the DTensor shards, each weight gathered whole, then unmerged), run by two FSDP2 processes
    (tests/fixtures/fsdp_weight_sync.py); no engine. The twin recipes' sync rests on it (gpu-path-review F15)."""
    out = tmp_path / "sync.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run(STANDALONE + ["tests/fixtures/fsdp_weight_sync.py", str(out)], capture_output=True, text=True,
                       env=env, timeout=RUN_S)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["streamed"] == res["engine_names"]  # every weight once, under the names vLLM loads them by
    assert res["types"] == ["Tensor"]  # whole tensors, not one process's shards
    assert res["lora_delta"] > 1e-3 and res["max_abs_err"] <= 1e-6, res  # the merged policy, trained LoRA in it
    assert res["unmerged_err"] <= 1e-6  # and the weights being trained are back as they were


def test_every_process_samples_as_many_validation_prompts_and_each_prompt_is_judged_once():
    records = [{"id": i} for i in range(7)]
    for n in range(len(records) + 1):
        for world in (1, 2, 3, 4, 8):
            parts = [shares(records[:n], rank, world) for rank in range(world)]
            assert len({len(mine) + len(pad) for mine, pad in parts}) == 1, (n, world)  # as many generate calls
            judged = sorted(r["id"] for mine, _ in parts for r in mine)
            assert judged == list(range(n)), (n, world)  # each prompt once; padding is sampled, never judged
            assert all(r in records[:n] for _, pad in parts for r in pad)
