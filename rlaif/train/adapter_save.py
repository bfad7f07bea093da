"""The run's trained adapter out of the trainer, whole, however its weights are sharded.

Under FSDP, `Trainer.save_model` writes nothing unless the state dict type is FULL_STATE_DICT (transformers 5.24
`trainer.py` save_model: its FSDP branch has no `else`; transformers#30491), and FULL_STATE_DICT is no way out:
with FSDP2 + PEFT it keeps rank 0's slice of each LoRA matrix (accelerate#4206). So under FSDP every process takes
part in one all-gather per LoRA tensor (a DTensor's `full_tensor()`) and the main process writes peft's files
(`adapter_config.json`, `adapter_model.safetensors`) and the tokenizer. Only the adapter's tensors travel
(megabytes), never the base weights. Everywhere else (one process, DDP, DeepSpeed ZeRO-3 with
`zero3_save_16bit_model`, which gathers the weights itself) the Trainer's own save is right.
"""
from __future__ import annotations

from pathlib import Path

from rlaif.common.console import say
from rlaif.common.dist import is_main_process


def saved_policy(folder: Path) -> bool:
    """Whether `folder` holds a trained policy a later command can load: a peft adapter with its weights (a
    ZeRO-3 save without its 16-bit gather leaves adapter_config.json beside an empty weights file), or, for full
    fine-tuning, a model."""
    if (folder / "adapter_config.json").exists():
        return _tensor_count(folder / "adapter_model.safetensors") > 0 or (folder / "adapter_model.bin").exists()
    return (folder / "config.json").exists()


def _tensor_count(path: Path) -> int:
    if not path.exists():
        return 0
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return len(list(f.keys()))


def gathered_adapter_state(model, device=None) -> dict:
    """The adapter's tensors of a peft model, whole and on the CPU, under the names its own `state_dict` gives them
    (what `PeftModel.save_pretrained(state_dict=...)` takes). A collective under FSDP2: every process must call it,
    and each sharded tensor is one all-gather, in the same order everywhere (the state dict's order). `device`: where
    the all-gather runs (the training device: shards offloaded to the CPU go there first, as TRL's own gather does,
    since NCCL gathers GPU tensors only)."""
    from peft import get_peft_model_state_dict
    from torch.distributed.tensor import DTensor

    def whole(t):
        if not isinstance(t, DTensor):
            return t
        return (t.to(device) if device is not None and t.device != device else t).full_tensor()

    state = model.state_dict()  # under FSDP2 each process's shards, as DTensors: no communication yet
    # the tensors peft saves (its own choice: LoRA matrices, saved modules), found by identity so that the names
    # stay the model's own, which save_pretrained filters and renames itself
    wanted = {id(v) for v in get_peft_model_state_dict(model, state_dict=state).values()}
    out = {k: whole(v).detach().cpu() for k, v in state.items() if id(v) in wanted}
    if len(out) != len(wanted):
        raise RuntimeError(f"gathering the adapter: found {len(out)} of its {len(wanted)} tensors in the state dict")
    return out


def save_adapter(trainer, folder: Path) -> Path | None:
    """Save the trained policy (the LoRA adapter with the tokenizer, or the whole model for full fine-tuning) to
    `folder`. Every process calls this: under FSDP it is a collective. Returns `folder` when it holds a policy a
    later command can load (on the main process; others may not see its filesystem), else None, said why."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        trainer.save_model(str(folder))
    else:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if not hasattr(model, "peft_config"):
            say("[yellow]full fine-tuning under FSDP: the trained weights are in the last checkpoint's shards "
                "(pytorch_model_fsdp_0/), not in a model folder; rlaif gathers only LoRA adapters[/]")
            return None
        state = gathered_adapter_state(model, trainer.accelerator.device)
        if is_main_process():
            model.save_pretrained(str(folder), state_dict=state)
            trainer.processing_class.save_pretrained(str(folder))
    if not is_main_process():
        return folder
    if saved_policy(folder):
        return folder
    say(f"[yellow]no trained policy was written to {folder}[/]" + (
        " (DeepSpeed ZeRO-3 saves the adapter only with zero3_save_16bit_model: true in the accelerate config)"
        if getattr(trainer, "is_deepspeed_enabled", False) else ""))
    return None
