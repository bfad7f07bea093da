"""What one judge call returned, shared by the HTTP client and the in-process backend.

Kept apart from `client.py` so the in-process judge (and `scripts/gpu_check.py`) imports without the openai SDK,
which GPU machines that have only torch, transformers, peft and accelerate lack.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CallResult:
    response: object | None
    latency_s: float
    attempts: int
    error: str | None = None
    base_url: str | None = None  # the server that answered (or failed last)
