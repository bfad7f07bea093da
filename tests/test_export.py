"""`rlaif export`: the merged checkpoint is the trained policy (the same logits as base + adapter, to float
rounding in fp32, and the same greedy completions, near-ties aside), the adapter-only export loads over its named base, and a run
without an adapter or an occupied --out is refused with what to do."""
import json
import subprocess

import pytest
import torch
from conftest import RLAIF
from greedy import greedy, same_greedy

PROMPTS = ["Write a note to a colleague.", "Ask the shop for a refund.", "Tell me about the weather."]


def _policy_inputs(tok, prompt):
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return tok(text, return_tensors="pt")


@pytest.fixture(scope="module")
def trained(short_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    out, summary, _, _ = short_run
    base_name = json.loads((out / "recipe.resolved.json").read_text())["policy"]["model"]
    tok = AutoTokenizer.from_pretrained(out / "adapter")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_name), out / "adapter").eval()
    return out, base_name, tok, model


def test_the_merged_export_is_the_trained_policy(trained, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    run, base_name, tok, reference = trained
    dest = tmp_path / "merged"
    r = subprocess.run(RLAIF + ["export", str(run), "--out", str(dest)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "README.md",
            "rlaif_recipe.json", "rlaif_train_summary.json"} <= {p.name for p in dest.iterdir()}
    assert not (dest / "adapter_config.json").exists()  # a plain checkpoint: no peft needed to load it
    merged = AutoModelForCausalLM.from_pretrained(dest).eval()
    merged_tok = AutoTokenizer.from_pretrained(dest)
    assert merged_tok.chat_template == tok.chat_template
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = _policy_inputs(tok, prompt)
            ref = reference(**ids).logits
            gap = (merged(**ids).logits - ref).abs().max().item()
            # float rounding only: x @ (W + BA) is not summed in the order x @ W + (x @ B) @ A is (seen here: up
            # to 1.3e-5 on logits up to ~10 in fp32, whether merged in fp32 or fp64)
            assert gap <= 1e-5 * max(1.0, ref.abs().max().item()), gap
            # the same greedy completion, but where the reference's best two logits are within 1e-3 (a rounding
            # of 1e-5 may break such a tie the other way, as in test_serve)
            messages = [{"role": "user", "content": prompt}]
            want, margins = greedy(reference, tok, messages)
            assert same_greedy(greedy(merged, merged_tok, messages)[0], want, margins), prompt
    card = (dest / "README.md").read_text()
    assert f"base_model: {base_name}" in card and "merged policy" in card


def test_the_adapter_only_export_loads_over_its_named_base(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    run, base_name, tok, reference = trained
    dest = tmp_path / "adapter"
    r = subprocess.run(RLAIF + ["export", str(run), "--out", str(dest), "--adapter-only"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((dest / "adapter_config.json").read_text())["base_model_name_or_path"] == base_name
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_name), dest).eval()
    with torch.no_grad():
        ids = _policy_inputs(tok, PROMPTS[0])
        assert torch.equal(model(**ids).logits, reference(**ids).logits)  # the same weights, loaded the same way
    assert "PeftModel.from_pretrained" in (dest / "README.md").read_text()


def test_a_run_without_an_adapter_or_an_occupied_out_is_refused(tmp_path, short_run):
    stopped = tmp_path / "stopped"
    (stopped / "checkpoint-2").mkdir(parents=True)
    r = subprocess.run(RLAIF + ["export", str(stopped), "--out", str(tmp_path / "x")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "no trained adapter" in r.stderr and "--resume" in r.stderr
    assert "checkpoint-2" in r.stderr and "Traceback" not in r.stderr
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    r = subprocess.run(RLAIF + ["export", str(short_run[0]), "--out", str(occupied)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "is not empty" in r.stderr and (occupied / "keep.txt").read_text() == "mine"
