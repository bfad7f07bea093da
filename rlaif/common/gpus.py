"""The GPUs of this node and which of them the training processes use, for placing a judge beside them.

`nvidia-smi -L` lists the node's GPUs whatever CUDA_VISIBLE_DEVICES says (NVML ignores it, unlike CUDA, so
torch.cuda.device_count() would count only this process's share); the launchers say the rest: accelerate's
`gpu_ids` becomes CUDA_VISIBLE_DEVICES, and each of a node's LOCAL_WORLD_SIZE processes takes the device of its
local rank.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess


def node_gpus() -> list[tuple[str, str]]:
    """(index, UUID) of each GPU of this node; none where there is no `nvidia-smi` or it fails."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        out = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return re.findall(r"^GPU (\d+):.*?\(UUID: ([^)\s]+)\)", out.stdout, re.M)


def gpu_indices(devices: str, gpus: list[tuple[str, str]]) -> list[str]:
    """The entries of a CUDA_VISIBLE_DEVICES string as GPU indices: a UUID (or the unique prefix of one, as CUDA
    takes it) becomes its GPU's index; an index stays as written."""
    out = []
    for d in (x.strip() for x in devices.split(",")):
        if not d:
            continue
        match = [i for i, uuid in gpus if d.startswith(("GPU-", "MIG-")) and uuid.startswith(d)]
        out.append(match[0] if len(match) == 1 else d)
    return out


def training_gpus(processes: int) -> tuple[list[str], str]:
    """The GPU indices this node's `processes` training processes use, and where that comes from (for a message).
    One process takes every GPU it sees (the policy is placed with device_map="auto"); several take one each, by
    local rank."""
    gpus = node_gpus()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = gpu_indices(visible, gpus) if visible is not None else [i for i, _ in gpus]
    if processes > 1:
        ids = ids[:processes]
        how = f"one GPU for each of {processes} processes by local rank"
    else:
        how = "one process using every GPU it sees"
    where = f"CUDA_VISIBLE_DEVICES={visible}" if visible is not None else \
        f"no CUDA_VISIBLE_DEVICES, all {len(gpus)} GPUs of this node"
    return ids, f"{where}: {how}"
