"""`rlaif export RUN_DIR --out DIR`: the trained policy as a merged checkpoint, or its adapter alone
(rlaif/train/export.py)."""
from __future__ import annotations

from rlaif.train.export import export_run


def add_parser(sub) -> None:
    ep = sub.add_parser("export", help="write the trained policy as a checkpoint transformers and vLLM load as is",
                        description="Merge the run's LoRA adapter into its base model and save the result "
                                    "(safetensors, tokenizer, chat template, generation config) to --out, or with "
                                    "--adapter-only the adapter alone in peft's format with its base model named; "
                                    "a model card (README.md) and the run's recipe and summary go along.")
    ep.add_argument("run_dir", help="a finished run's directory (it holds adapter/)")
    ep.add_argument("--out", required=True, help="the folder to write (new or empty)")
    ep.add_argument("--adapter-only", action="store_true", help="the LoRA adapter alone, not merged")
    ep.add_argument("--force", action="store_true",
                    help="replace --out when it holds a previous export (never the run, a folder above it, your home "
                         "folder or /)")
    ep.set_defaults(fn=cmd_export)


def cmd_export(a) -> int:
    res = export_run(a.run_dir, a.out, adapter_only=a.adapter_only, force=a.force)
    print(res["out"])
    return 0
