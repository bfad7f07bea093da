"""FSDP2 on CPU processes: the sharded path tested where there is no GPU (recipes/smoke-fsdp.yaml).

accelerate 1.15 selects FSDP only for accelerator devices. On CPU processes (`use_cpu`, torchrun, gloo) the
state is MULTI_CPU, and the FSDP plugin the Trainer builds from `grpo.fsdp`/`fsdp_config` is dropped without a word
(accelerate/state.py, AcceleratorState.__init__: the branch that sets FSDP is reached from GPU-like types only): the
run would be plain DDP, every process holding the whole policy. torch's FSDP2 itself runs on gloo (`fully_shard`
over a CPU mesh). So when a recipe asks for FSDP on CPU processes, rlaif makes accelerate's state FSDP for the
trainer it builds; the rest (sharding, DCP checkpoints, TRL's generation) is the libraries' own FSDP2 path.
"""
from __future__ import annotations

import contextlib

from rlaif.errors import UserError


@contextlib.contextmanager
def fsdp_on_cpu(args, source: str):
    """Around the trainer's construction (where it builds its Accelerator): FSDP on CPU processes when `args` (the
    GRPOConfig) asks for it; nothing otherwise."""
    if not args.fsdp_plugin_args or not args.use_cpu:
        yield
        return
    import torch
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    # FSDP2 shards over its default mesh, which is the build's accelerator (torch's _init_default_mesh): a CUDA
    # build would put the shards on a GPU that these CPU processes do not use
    if torch._C._get_accelerator().type != "cpu":
        raise UserError(f"{source}: grpo.fsdp with use_cpu on a machine with {torch._C._get_accelerator().type}: "
                        "FSDP's shards would go to that device; train there (drop use_cpu) or use a CPU build of torch")
    original = AcceleratorState.__init__

    def init(self, *a, fsdp_plugin=None, **kw):
        original(self, *a, fsdp_plugin=fsdp_plugin, **kw)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            if self.mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self.mixed_precision)
            self.distributed_type = DistributedType.FSDP  # what the GPU branch sets, and the plugin with it
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = init
    try:
        yield
    finally:
        AcceleratorState.__init__ = original
