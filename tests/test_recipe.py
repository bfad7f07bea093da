import subprocess
import sys

import pytest
import yaml
from conftest import SMOKE

from rlaif.config.recipe import load_recipe
from rlaif.errors import UserError


def write_recipe(tmp_path, mutate):
    data = yaml.safe_load(SMOKE.read_text())
    mutate(data)
    p = tmp_path / "recipe.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_smoke_recipe_loads_with_its_values():
    r = load_recipe(SMOKE, check_files=False)
    assert r.judge.name == "judge"  # the model folder name, so swapping the model line renames it too
    assert r.grpo["num_generations"] == 8
    assert str(r.run_dir) == "runs/smoke"


def test_set_overrides_recipe_values():
    r = load_recipe(SMOKE, ["grpo.max_steps=7", "judge.model=some-org/some-judge", "seed=3"], check_files=False)
    assert r.grpo["max_steps"] == 7
    assert r.judge.model == "some-org/some-judge"
    assert r.seed == 3


def test_typo_in_a_recipe_key_names_file_and_field(tmp_path):
    p = write_recipe(tmp_path, lambda d: d["judge"].update(modle="x"))
    with pytest.raises(UserError) as e:
        load_recipe(p, check_files=False)
    assert str(p) in str(e.value) and "judge.modle" in str(e.value) and "unknown key" in str(e.value)


def test_grpo_fields_read_from_the_installed_source_are_grpo_configs_fields():
    """Recipes check their grpo: keys against names read from TRL's and transformers' source (no TRL import): on the
    installed versions they are exactly the dataclass's fields; where the class chain is not the expected one, the
    reader says so (None) and the check imports GRPOConfig instead."""
    from rlaif.config import grpo_fields

    source = grpo_fields.fields_from_source(grpo_fields.CLASS_CHAIN)
    assert source is not None and source == grpo_fields.fields_from_import()
    assert {"learning_rate", "num_generations", "beta", "output_dir"} <= source
    moved = (("trl", "trainer/grpo_config.py", "GRPOConfig", "SomeOtherBase"),) + grpo_fields.CLASS_CHAIN[1:]
    assert grpo_fields.fields_from_source(moved) is None
    assert grpo_fields.fields_from_source((("trl", "trainer/no_such_file.py", "GRPOConfig", None),)) is None


@pytest.mark.parametrize("body, fields", [
    ("    a: int = 1\n    b: ClassVar[int] = 2\n    def f(self):\n        x: int = 3\n", {"a", "c"}),
    ("    a: int = 1\n    if FLAG:\n        b: int = 2\n", None),  # only importing knows whether b exists
    ("    a: int = 1\n    _: KW_ONLY\n    b: int = 2\n", None),
    ("    a: int = 1\n    c: ClassVar[int] = 2\n", None),  # the base's field c made a ClassVar
])
def test_grpo_fields_read_from_source_leave_what_a_flat_reading_gets_wrong_to_the_import(tmp_path, monkeypatch,
                                                                                          body, fields):
    from rlaif.config import grpo_fields

    (tmp_path / "fakecfg").mkdir()
    (tmp_path / "fakecfg" / "__init__.py").write_text("")
    (tmp_path / "fakecfg" / "base.py").write_text("@dataclass\nclass Base:\n    c: int = 0\n")
    (tmp_path / "fakecfg" / "config.py").write_text(f"@dataclasses.dataclass(frozen=True)\nclass Config(Base):\n{body}")
    monkeypatch.syspath_prepend(str(tmp_path))
    chain = (("fakecfg", "config.py", "Config", "Base"), ("fakecfg", "base.py", "Base", None))
    assert grpo_fields.fields_from_source(chain) == fields


def test_typo_in_grpo_key_suggests_the_real_field(tmp_path):
    p = write_recipe(tmp_path, lambda d: d["grpo"].update(lerning_rate=1e-3))
    with pytest.raises(UserError, match=r"grpo\.lerning_rate.*did you mean 'learning_rate'"):
        load_recipe(p, check_files=False)


def test_typo_via_set_is_refused():
    with pytest.raises(UserError, match=r"judge\.timeout: unknown key"):
        load_recipe(SMOKE, ["judge.timeout=5"], check_files=False)


def test_missing_dataset_file_is_named(tmp_path):
    p = write_recipe(tmp_path, lambda d: d["data"].update(train="nowhere/train.jsonl"))
    with pytest.raises(UserError, match=r"data\.train: file not found: nowhere/train\.jsonl"):
        load_recipe(p)


def test_missing_model_folder_is_named(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("")
    p = write_recipe(tmp_path, lambda d: (d["policy"].update(model="./no/such/policy"),
                                          d["data"].update(train=str(data), eval=str(data))))
    with pytest.raises(UserError, match=r"policy\.model: model folder not found"):
        load_recipe(p)


def test_hub_ids_are_not_checked_on_disk():
    r = load_recipe(SMOKE, ["judge.model=Qwen/Qwen2.5-7B-Instruct", f"data.train={SMOKE}",
                            f"data.eval={SMOKE}", "policy.model=Qwen/Qwen2.5-0.5B-Instruct"])
    assert r.judge.name == "Qwen2.5-7B-Instruct"


def test_unknown_rubric_is_refused():
    with pytest.raises(UserError, match="neither a file nor a built-in rubric"):
        load_recipe(SMOKE, ["rubric=no_such_rubric"], check_files=False)


def test_cli_reports_a_bad_recipe_without_traceback(tmp_path):
    p = write_recipe(tmp_path, lambda d: d["policy"]["lora"].update(rank=8))
    r = subprocess.run([sys.executable, "-m", "rlaif.cli", "train", str(p)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "policy.lora.rank: unknown key" in r.stderr
    assert "Traceback" not in r.stderr


def test_every_command_explains_itself():
    for cmd in (["--help"], ["train", "--help"], ["judge", "serve", "--help"], ["eval", "--help"],
                ["data", "check", "--help"]):
        r = subprocess.run([sys.executable, "-m", "rlaif.cli", *cmd], capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stderr)
        assert "usage:" in r.stdout


def test_yaml_no_stays_a_string_not_false():
    r = load_recipe(SMOKE, ["grpo.save_strategy=no", "grpo.bf16=false"], check_files=False)
    assert r.grpo["save_strategy"] == "no" and r.grpo["bf16"] is False


def test_every_shipped_recipe_is_valid(tmp_path):
    from pathlib import Path
    recipes = sorted(Path("recipes").glob("*.yaml"))
    assert len(recipes) >= 2
    for p in recipes:
        r = load_recipe(p, check_files=False)
        assert r.judge.model and r.policy.model and r.grpo, p
        import torch
        from trl import GRPOConfig
        grpo = dict(r.grpo)
        if not torch.cuda.is_available():
            grpo["use_cpu"] = True  # a GPU recipe's bf16 needs a GPU or an explicit CPU run
        GRPOConfig(output_dir=str(tmp_path / r.name), **grpo)  # TRL's own checks accept the grpo block



ENGINES = {"multi_gpu.yaml": "MULTI_GPU", "single_gpu.yaml": "NO", "multi_gpu_judge_tp2.yaml": "MULTI_GPU",
           "fsdp_judge_tp2.yaml": "FSDP", "deepspeed_zero3_judge_tp2.yaml": "DEEPSPEED",
           "multi_node_2x8.yaml": "MULTI_GPU"}


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_shipped_accelerate_configs_are_what_accelerate_launch_reads(name, monkeypatch):
    """Each config through accelerate's own path: its config loader and launch-argument checks, the environment
    `accelerate launch` would give the training processes, and the FSDP or DeepSpeed plugin built from it, as
    the Trainer builds it (no GPU and no deepspeed package needed for that)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env
    path = f"recipes/accelerate/{name}"
    cfg = load_config_from_file(path)  # unknown keys or values fail here
    assert cfg.distributed_type.value == ENGINES[name] and cfg.num_processes >= 1
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", path, "x.py"]))
    if ENGINES[name] == "FSDP":
        env = prepare_multi_gpu_env(args)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.cpu_ram_efficient_loading
    if ENGINES[name] == "DEEPSPEED":
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as deepspeed_launcher
        _, env = prepare_deepspeed_cmd_env(args)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        plugin = DeepSpeedPlugin()
        assert plugin.zero_stage == 3 and plugin.deepspeed_config["zero_optimization"]["stage"] == 3
    if cfg.num_machines > 1:
        assert cfg.num_processes == 16 and cfg.main_process_ip and cfg.rdzv_backend == "static"
