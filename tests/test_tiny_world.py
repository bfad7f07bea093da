"""The tiny world is shipped (artifacts/tiny) and must be what the code in rlaif/tiny builds: a change to the build
code cannot land without a rebuild, and the build code itself stays tested by a short build."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rlaif.errors import UserError
from rlaif.tiny import build as tiny_build
from rlaif.tiny import shipped as world

SHIPPED = Path(__file__).resolve().parents[1] / "artifacts" / "tiny"


def test_the_shipped_world_was_built_by_this_code_and_is_whole():
    """Fails when rlaif/tiny (or the says_please rubric, or the judge's rendered input) changed since the world was
    built, or when a file of it is missing or altered: `make models` rebuilds it, then commit artifacts/tiny."""
    state, why = world.status(SHIPPED)
    assert state == "current", f"{why}: run `make models` and commit artifacts/tiny"
    info = world.read_info(SHIPPED)
    assert not info["quick"]
    assert {"judge/model.safetensors", "judge_early/model.safetensors", "policy/model.safetensors",
            "policy_mixed/model.safetensors", "data/train.jsonl", "data/heldout.jsonl",
            "data/judge_audit.jsonl"} <= set(info["files"])
    assert info["judge"]["test_acc"] >= tiny_build.MIN_JUDGE_ACCURACY


def _copy(tmp_path) -> Path:
    out = tmp_path / "tiny"
    shutil.copytree(SHIPPED, out)
    return out


def test_status_names_a_stale_a_changed_and_a_missing_world(tmp_path, monkeypatch):
    out = _copy(tmp_path)
    assert world.status(out)[0] == "current"
    monkeypatch.setattr(world, "fingerprint", lambda: "0123456789abcdef")  # the build code changed
    state, why = world.status(out)
    assert state == "stale" and "0123456789abcdef" in why
    monkeypatch.undo()
    with open(out / "data" / "train.jsonl", "a") as f:  # a file edited by hand
        f.write("\n")
    state, why = world.status(out)
    assert state == "changed" and "data/train.jsonl" in why
    (out / "build.json").unlink()
    assert world.status(out)[0] == "missing"


def test_the_smoke_run_runs_on_a_stale_world_and_refuses_a_broken_one(tmp_path, monkeypatch):
    out = _copy(tmp_path)
    said = []
    monkeypatch.setattr(world, "fingerprint", lambda: "0123456789abcdef")
    assert world.shipped(out, log=said.append)["fingerprint"] == world.read_info(SHIPPED)["fingerprint"]
    assert said and "make models" in said[0]
    monkeypatch.undo()
    (out / "policy" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="policy/model.safetensors"):
        world.shipped(out)


@pytest.mark.models  # it builds models (seconds each): not in `make test-unit`
def test_a_quick_build_runs_the_build_code_and_is_the_same_twice(tmp_path):
    """The whole build on a budget of a few steps, twice: the same files on the same CPU (the property `make models`
    relies on), models that transformers loads, and a record that never passes for the smoke world."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = tiny_build.build(tmp_path / "a", quick=True, log=lambda m: None)
    b = tiny_build.build(tmp_path / "b", quick=True, log=lambda m: None)
    assert world.compare(a, b) == []
    assert a["files"] == b["files"] and len(a["files"]) >= 20
    assert world.status(tmp_path / "a")[0] == "stale"  # a quick build is never the smoke world
    tok = AutoTokenizer.from_pretrained(tmp_path / "a" / "policy")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "judge")
    assert model.config.vocab_size >= len(tok)
    rows = [json.loads(x) for x in (tmp_path / "a" / "data" / "heldout.jsonl").read_text().splitlines()]
    assert len(rows) == a["n_heldout_prompts"] and rows[0]["messages"][0]["role"] == "user"


def test_the_ci_smoke_recipes_share_one_judge_server():
    """`make smoke-all` (CI) starts one judge server for its smoke runs when their judges are served alike; a
    recipe whose judge differs gets its own."""
    import re

    from rlaif.cli.smoke import _served_judge
    from rlaif.config.recipe import load_recipe

    rule = re.search(r"^smoke-all:.*\n\t@\S+ smoke (.+)$", open("Makefile").read(), re.M)
    paths = rule.group(1).split()
    assert len(paths) == 4 and "recipes/smoke-distilled.yaml" in paths
    assert len({_served_judge(load_recipe(p, check_files=False)) for p in paths}) == 1
    other = load_recipe(paths[0], ["judge.serve.max_model_len=1024"], check_files=False)
    assert _served_judge(other) != _served_judge(load_recipe(paths[0], check_files=False))
