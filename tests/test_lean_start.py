"""rlaif/train/lean_start.py: TRL is told vLLM is absent only before it has looked, and only for runs without it."""
import importlib
import sys
import types

from rlaif.config.recipe import load_recipe
from rlaif.train import lean_start


def test_a_process_whose_trl_has_imported_its_generation_modules_is_left_as_it_is(monkeypatch):
    import_utils = importlib.import_module("trl.import_utils")
    monkeypatch.setitem(sys.modules, "trl.generation", types.ModuleType("trl.generation"))
    before = import_utils.is_vllm_available
    assert lean_start.trl_without_vllm() is False
    assert import_utils.is_vllm_available is before


def test_before_trl_looks_it_is_told_vllm_is_absent(monkeypatch):
    import_utils = importlib.import_module("trl.import_utils")
    for name in [m for m in sys.modules if m == "trl.generation" or m.startswith("trl.generation.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(import_utils, "is_vllm_available", import_utils.is_vllm_available)  # restored after
    assert lean_start.trl_without_vllm() is True
    assert import_utils.is_vllm_available() is False and import_utils.is_vllm_available("0.1") is False


def test_only_vllm_rollouts_need_vllm():
    assert not lean_start.needs_vllm(load_recipe("recipes/smoke.yaml"))
    assert lean_start.needs_vllm(load_recipe("recipes/smoke-vllm.yaml"))
    assert lean_start.needs_vllm(load_recipe("recipes/smoke-vllm.yaml", ["rollouts.async={max_staleness: 1}"]))


def test_the_command_line_starts_without_torch_transformers_or_trl():
    """`rlaif --help` and every command's parser load no ML library: each command imports what it uses when it
    runs (the `rm` command's torch import once made every `rlaif` invocation 1.4 s slower here)."""
    import subprocess

    probe = ("import sys, rlaif.cli.main; rlaif.cli.main.build_parser(); "
             "print(sorted(m for m in ('torch', 'transformers', 'trl', 'vllm', 'peft') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr[-2000:]


def test_a_recipe_with_a_grpo_block_loads_without_importing_trl():
    """The grpo: block's keys are checked against GRPOConfig's fields read from TRL's source, not by importing TRL
    (5-13 s here): `rlaif label`, `reward score`, `nova job-config` and `data check` load recipes and train nothing."""
    import subprocess

    probe = ("import sys; from rlaif.config.recipe import load_recipe; r = load_recipe('recipes/smoke.yaml'); "
             "assert r.grpo; print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr[-2000:]
