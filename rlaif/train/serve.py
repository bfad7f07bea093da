"""The trained policy behind an OpenAI-compatible endpoint on this machine, to try it: vLLM serving the base model
with the run's LoRA adapter (two models on one server: `trained`, and `base` for the same prompts without the
adapter), or a merged export (`rlaif export`) as `trained` alone.

vLLM runs from the judge environment (.venv-judge), which has it. On a CPU machine the checkpoint's own dtype is
asked for explicitly: vLLM would silently serve an fp32 checkpoint in bf16, and the completions would no longer be
the ones the policy was trained and evaluated to give.
"""
from __future__ import annotations

import json
from pathlib import Path

from rlaif.errors import UserError
from rlaif.judge.server import VLLMServer, has_gpu
from rlaif.train.export import base_model, find_adapter

TRAINED, BASE = "trained", "base"
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts


def _checkpoint_dtype(model: str) -> str:
    """vLLM's --dtype for this checkpoint: its own on a CPU machine (fp32 stays fp32), vLLM's choice on a GPU."""
    cfg = Path(model) / "config.json"
    if has_gpu() or not cfg.exists():
        return "auto"
    c = json.loads(cfg.read_text())
    return str(c.get("dtype") or c.get("torch_dtype") or "auto")


def policy_server(target: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
                  log_path: Path | None = None, progress=None) -> tuple[VLLMServer, list[str]]:
    """(the server for a run directory or a merged export, the model names it serves)."""
    target = Path(target)
    if (target / "config.json").exists() and not (target / "adapter").exists():  # a merged export
        server = VLLMServer(str(target), TRAINED, host=host, port=port, dtype=_checkpoint_dtype(str(target)),
                            log_path=log_path, role="policy", progress=progress)
        return server, [TRAINED]
    adapter = find_adapter(target)
    base = base_model(target, adapter)
    rank = json.loads((adapter / "adapter_config.json").read_text()).get("r", 16)
    max_rank = next((r for r in LORA_RANKS if r >= rank), None)
    if max_rank is None:
        raise UserError(f"{adapter}: LoRA rank {rank} is above what vLLM serves ({LORA_RANKS[-1]}); serve a merged "
                        f"export instead (`rlaif export {target} --out DIR`, then `rlaif serve DIR`)")
    server = VLLMServer(base, BASE, host=host, port=port, dtype=_checkpoint_dtype(base), log_path=log_path,
                        role="policy", progress=progress,
                        extra_args=["--enable-lora", "--lora-modules", f"{TRAINED}={adapter}",
                                    "--max-lora-rank", str(max_rank)])
    return server, [TRAINED, BASE]
