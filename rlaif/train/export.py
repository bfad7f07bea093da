"""What comes after training: the trained policy out of its run directory, as a merged checkpoint that transformers
and vLLM load as is, or as the LoRA adapter alone in peft's format with its base model named; either way with the
tokenizer, chat template and generation config, and a model card that says what trained it (recipe, rubric, the
run's numbers).

Why merge: a merged checkpoint needs no peft at inference and serves at the base model's speed on any server;
the adapter alone is megabytes instead of gigabytes, for servers that load LoRA adapters (vLLM `--lora-modules`).
Merging is done in the base checkpoint's own dtype; in fp32 the merged logits equal base + adapter to float
rounding (tests/test_export.py).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from rlaif.common.console import lit, say
from rlaif.errors import UserError

# what a run directory keeps beside the adapter that the export carries along, renamed so that nothing in the
# checkpoint folder is mistaken for a model file
RUN_FILES = {"recipe.resolved.json": "rlaif_recipe.json", "train_summary.json": "rlaif_train_summary.json",
             "eval.json": "rlaif_eval.json"}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MARKER = "rlaif_export.json"  # written first into every export folder: the only kind of folder --force replaces


def find_adapter(run_dir: Path) -> Path:
    """The run's final adapter, or a clear error that says what to do instead."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    adapter = run_dir / "adapter"
    if (adapter / "adapter_config.json").exists():
        return adapter
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    with_adapter = [c for c in checkpoints if (c / "adapter_config.json").exists()]
    if with_adapter:
        hint = (f"; the run stopped before its end: finish it with `rlaif train RECIPE --resume`, or export a "
                f"checkpoint as a run directory of its own (its adapter is in {with_adapter[-1]})")
    elif checkpoints:
        hint = (f"; its checkpoints hold no adapter (under FSDP a checkpoint keeps each process's shards, "
                f"pytorch_model_fsdp_0/; the last is {checkpoints[-1]}): run the same launch line with --resume, "
                "which ends by writing adapter/")
    else:
        hint = ""
    raise UserError(f"{run_dir}: no trained adapter (adapter/adapter_config.json){hint}")


def base_model(run_dir: Path, adapter: Path) -> str:
    """The base checkpoint the adapter was trained on: the run's recipe says it; the adapter's config agrees."""
    recipe = run_dir / "recipe.resolved.json"
    if recipe.exists():
        return json.loads(recipe.read_text())["policy"]["model"]
    return json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]


def refuse_to_replace(out: Path, run_dir: Path) -> None:
    """A UserError when `out` is a folder an export must never replace, however asked: a filesystem root, the home
    folder or a folder above it, the run being exported or a folder that holds it."""
    target, run, home = out.expanduser().resolve(), run_dir.resolve(), Path.home().resolve()
    if target == Path(target.anchor):
        why = "the filesystem root"
    elif home.is_relative_to(target):
        why = "your home folder" if target == home else f"a folder that holds your home folder ({home})"
    elif run.is_relative_to(target):
        why = "the run being exported" if target == run else f"a folder that holds the run being exported ({run})"
    elif target.is_relative_to(run / "adapter"):
        why = "the adapter being exported"
    else:
        return
    raise UserError(f"--out {out}: refusing to replace {why}; choose a new folder for the export")


def _empty_out(out: Path, force: bool, run_dir: Path) -> None:
    """`out` empty and marked as an export. Replacing a non-empty one needs --force and a previous export there
    (its marker file): an export never deletes a folder it did not write."""
    refuse_to_replace(out, run_dir)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"--out {out}: not a folder; choose a new folder for the export")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UserError(f"{out} exists and is not empty; choose another --out, or --force to replace a previous "
                            "export there")
        if not (out / MARKER).is_file():
            raise UserError(f"{out} is not an rlaif export (it has no {MARKER}): --force replaces only a previous "
                            "export; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"run_dir": str(run_dir.resolve())}) + "\n")


def model_card(run_dir: Path, base: str, adapter_only: bool) -> str:
    """README.md for the export: what it is, how to load it, and what trained it."""
    recipe = json.loads((run_dir / "recipe.resolved.json").read_text()) if (run_dir / "recipe.resolved.json").exists() \
        else {}
    summary = json.loads((run_dir / "train_summary.json").read_text()) if (run_dir / "train_summary.json").exists() \
        else {}
    rubric = recipe.get("rubric")
    criteria = rubric.get("criteria", []) if isinstance(rubric, dict) else []
    judge = (recipe.get("judge") or {}).get("model", "?")
    lines = ["---", f"base_model: {base}", "library_name: " + ("peft" if adapter_only else "transformers"),
             "tags: [rlaif, grpo, lora]", "---", "",
             f"# {recipe.get('name', run_dir.name)}: {'LoRA adapter' if adapter_only else 'merged policy'}", "",
             f"GRPO with LoRA on `{base}`, rewarded by the judge `{judge}` (rlaif).", ""]
    if adapter_only:
        lines += ["Load it over its base model:", "", "```python",
                  "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  f"base = AutoModelForCausalLM.from_pretrained({base!r})",
                  "model = PeftModel.from_pretrained(base, THIS_FOLDER)", "```", "",
                  f"or serve it with vLLM: `vllm serve {base} --enable-lora --lora-modules policy=THIS_FOLDER`.", ""]
    else:
        lines += ["A whole checkpoint (the adapter merged into the base weights): load it with "
                  "`AutoModelForCausalLM.from_pretrained(THIS_FOLDER)` or serve it with `vllm serve THIS_FOLDER`.",
                  ""]
    if criteria:
        lines += ["## Rubric", ""] + [f"- **{c.get('name')}**: {c.get('question')}" for c in criteria] + [""]
    elif isinstance(rubric, str):
        lines += ["## Rubric", "", f"`{rubric}`", ""]
    if summary:
        judge_totals = summary.get("judge") or {}
        lines += ["## Training", "", "| | |", "|---|---|",
                  f"| steps | {summary.get('steps')} of {summary.get('max_steps')} |",
                  f"| seconds per step | {summary.get('s_per_step')} |",
                  f"| processes | {summary.get('world_size', 1)} |",
                  f"| judge calls (failed) | {judge_totals.get('calls')} ({judge_totals.get('failed')}) |", ""]
    lines += ["The run's recipe, summary and evaluation (when there was one) are beside this card as "
              "`rlaif_*.json`.", ""]
    return "\n".join(lines)


def export_run(run_dir: str | Path, out: str | Path, *, adapter_only: bool = False, force: bool = False) -> dict:
    """Write the run's trained policy to `out`; returns what was written."""
    run_dir, out = Path(run_dir), Path(out).expanduser()
    adapter = find_adapter(run_dir)
    base = base_model(run_dir, adapter)
    _empty_out(out, force, run_dir)
    if adapter_only:
        for name in ADAPTER_FILES:
            shutil.copy2(adapter / name, out / name)
        cfg = json.loads((out / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = base  # the recipe's name for it (a hub id for real runs)
        (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
        _save_tokenizer(adapter, base, out)
    else:
        _merge(adapter, base, out)
    for src, dst in RUN_FILES.items():
        if (run_dir / src).exists():
            shutil.copy2(run_dir / src, out / dst)
    (out / "README.md").write_text(model_card(run_dir, base, adapter_only))
    files = sorted(p.name for p in out.iterdir())
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    say(f"exported {'the adapter' if adapter_only else 'the merged policy'} of {lit(run_dir)} to {lit(out)} "
        f"({size / 1e6:.1f} MB: {lit(', '.join(files))})")
    return {"out": str(out), "base_model": base, "adapter_only": adapter_only, "files": files, "bytes": size}


def _save_tokenizer(adapter: Path, base: str, out: Path) -> None:
    """The tokenizer and chat template the policy was trained with: the run's copy (TRL saves it with the
    adapter), else the base model's."""
    from transformers import AutoTokenizer
    src = adapter if (adapter / "tokenizer_config.json").exists() else base
    AutoTokenizer.from_pretrained(src).save_pretrained(out)


def _merge(adapter: Path, base: str, out: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, GenerationConfig

    say(f"merging {lit(adapter)} into {lit(base)}")
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")  # the base checkpoint's own dtype
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    _save_tokenizer(adapter, base, out)
    try:  # the base model's sampling defaults (save_pretrained writes them when the model carries them)
        GenerationConfig.from_pretrained(base).save_pretrained(out)
    except OSError:
        pass  # a base without generation_config.json: transformers' defaults apply, as they did in training
