"""Where this process stands in a multi-process run (`accelerate launch`, torchrun): the one home of RANK and
WORLD_SIZE, which the launchers set in the environment before Python starts."""
from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0
