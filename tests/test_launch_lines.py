"""Every command a recipe's header tells a user to run is one that works after `make setup`: it names a binary of
the trainer environment, and `accelerate launch`/`torchrun` lines parse with the launcher's own parser, with a config
file that exists and the recipe they sit in (or RECIPE, in a launcher config)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
BINARIES = ("accelerate", "torchrun", "hf", "rlaif", "python")


def header_commands(path: Path) -> list[list[str]]:
    """The commands in a recipe's leading comment, continuation lines joined, as argv."""
    lines = []
    for ln in path.read_text().splitlines():
        if not ln.startswith("#"):
            break
        lines.append(ln[1:])
    text = "\n".join(lines).replace("\\\n", " ")
    cmds = []
    # a command starts a line (after the comment's indent or the "Run:" label) and its binary is followed by a space
    for m in re.finditer(r"(?m)^\s*(?:\w+:\s+)?((?:\S*/)?(?:accelerate launch|torchrun|hf download)(?=\s)[^\n`]*)", text):
        cmds.append(shlex.split(m.group(1).split("  (")[0].split("   #")[0]))
    return cmds


def all_commands():
    return [(p, c) for p in RECIPES for c in header_commands(p)]


def test_every_gpu_recipe_has_a_launch_line():
    gpu = [p for p in RECIPES if p.parent.name == "recipes" and not p.name.startswith("smoke")]
    assert gpu
    for p in gpu:
        assert any(c[1] == "launch" for c in header_commands(p)), p.name


@pytest.mark.parametrize("path, argv", all_commands(), ids=lambda x: x.name if isinstance(x, Path) else "")
def test_a_header_command_names_the_trainer_environments_binary_and_parses(path, argv):
    binary = argv[0]
    assert binary.startswith(".venv/bin/"), f"{path.name}: `{' '.join(argv)}` must name the trainer environment's " \
                                            f"binary (.venv/bin/...): after `source .venv/bin/activate` or not, " \
                                            "that is the one with vLLM and rlaif"
    assert Path(binary).name in BINARIES
    assert (ROOT / binary).exists(), f"{binary} does not exist after `make setup`"
    rest = argv[1:]
    if Path(binary).name == "accelerate":
        from accelerate.commands.launch import launch_command_parser
        assert rest[0] == "launch"
        rest = rest[1:]
        script = rest.index("-m")
        args = launch_command_parser().parse_args(rest[:script] + ["x.py"])
        assert args.config_file and (ROOT / args.config_file).exists(), args.config_file
        target = rest[script + 1:]
    elif Path(binary).name == "torchrun":
        from torch.distributed.run import get_args_parser
        script = rest.index("-m")
        get_args_parser().parse_args(rest[:script] + ["x.py"])
        target = rest[script + 1:]
    else:  # hf download REPO_ID: one repository a line
        assert rest[0] == "download" and len(rest) == 2 and "/" in rest[1], argv
        return
    assert target[0] == "rlaif.train"
    where = path.relative_to(ROOT).as_posix()
    assert target[1] in (where, "RECIPE"), (target, where)
    if target[1] == where:
        from rlaif.config.recipe import load_recipe
        load_recipe(where, target[2:][1::2] if "--set" in target else None, check_files=False)


def test_no_page_says_huggingface_cli():
    """huggingface_hub 2.x (what `make setup` installs) ships `hf`, not `huggingface-cli`."""
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *RECIPES, *(ROOT / "scripts").glob("*")]
    said = [p.relative_to(ROOT).as_posix() for p in pages if p.is_file() and "huggingface-cli" in p.read_text()]
    assert not said, said
