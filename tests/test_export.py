"""`rlaif export`: the merged checkpoint is the trained policy (the same logits as base + adapter, to float
rounding in fp32, and the same greedy completions, near-ties aside), the adapter-only export loads over its named base, and a run
without an adapter or an occupied --out is refused with what to do."""
import json
import subprocess
from pathlib import Path

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


# -- what --force may replace (no model needed: refused before anything is read or written) ---------------------------
def fake_run(tmp_path):
    from rlaif.config.recipe import load_recipe
    run = tmp_path / "runs" / "smoke"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "base"}))
    (run / "recipe.resolved.json").write_text(load_recipe("recipes/smoke.yaml", check_files=False).model_dump_json())
    return run


@pytest.mark.parametrize("where", ["run", "parent", "adapter"])
def test_force_never_replaces_the_run_or_an_ancestor_of_it(tmp_path, where):
    from rlaif.errors import UserError
    from rlaif.train.export import export_run
    run = fake_run(tmp_path)
    out = {"run": run, "parent": run.parent, "adapter": run / "adapter"}[where]
    with pytest.raises(UserError, match="refusing to replace"):
        export_run(run, out, force=True)
    assert (run / "adapter" / "adapter_config.json").exists() and (run / "recipe.resolved.json").exists()


@pytest.mark.parametrize("where", ["home", "root", "home_as_tilde"])
def test_force_never_replaces_home_or_root(tmp_path, monkeypatch, where):
    """Checked on the guard alone, never through a call that could delete: a regression here must not rmtree /."""
    from rlaif.errors import UserError
    from rlaif.train.export import refuse_to_replace
    run = fake_run(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    out = {"home": tmp_path / "home", "root": "/", "home_as_tilde": "~"}[where]
    with pytest.raises(UserError, match="refusing to replace"):
        refuse_to_replace(Path(out), run)


def test_force_replaces_only_a_previous_export(tmp_path):
    from rlaif.errors import UserError
    from rlaif.train.export import MARKER, _empty_out, export_run
    run = fake_run(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match="not an rlaif export"):
        export_run(run, mine, force=True)
    assert (mine / "thesis.tex").read_text() == "years of work"
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / MARKER).write_text("{}")
    (previous / "model.safetensors").write_text("old")
    _empty_out(previous, True, run)
    assert list(previous.iterdir()) == [previous / MARKER]  # the marker again, for the export now written
