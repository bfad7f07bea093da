"""What a judge backend is: something that answers chat requests, over HTTP (`JudgeClient`, a vLLM server) or
in this process (`LocalJudge`, a transformers model). The scorer (rlaif/judge/scorer.py) plans, caches, parses
and logs the same way over either.

Kept free of the openai SDK and pydantic, so the in-process judge (and `scripts/gpu_check.py`) imports on
machines that have only torch, transformers, peft and accelerate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class CallResult:
    """What one judge call returned: the reply (None after a failure), and how it went."""
    response: object | None
    latency_s: float
    attempts: int
    error: str | None = None
    base_url: str | None = None  # the server that answered (or failed last)


class JudgeBackend(Protocol):
    name: str  # the judge's served model name: logged, and part of the verdict cache's key
    urls: list[str]  # the servers behind it (none in process): read for vLLM's prefix-cache counters

    async def chat(self, messages: list[dict], **params) -> CallResult:
        """One chat completion; never raises for a server or transport failure (the CallResult says it)."""

    async def aclose(self) -> None:
        """Close this event loop's connections (call before an `asyncio.run` loop ends)."""


class Reply:
    """A judge server's JSON reply with attribute access, as the SDK's models read (`reply.choices[0].message
    .content`), wrapped only where read: the judge modes score from `reply.json`, the dict itself, and building an
    object per field of every reply cost more than the scoring (benchmarks/RESULTS.md, issue 27). A field the
    reply lacks raises AttributeError, as a missing attribute does, so `getattr(msg, "reasoning", None)` works."""
    __slots__ = ("json",)

    def __init__(self, json: dict):
        self.json = json

    def __getattr__(self, name: str):
        if name == "json" or name.startswith("__"):  # copy and pickle ask before `json` is set: no recursion
            raise AttributeError(name)
        try:
            return _wrapped(self.json[name])
        except (KeyError, TypeError):
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"Reply({self.json!r})"


def _wrapped(v):
    if isinstance(v, dict):
        return Reply(v)
    if isinstance(v, list):
        return [_wrapped(x) for x in v]
    return v
