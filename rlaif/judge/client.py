"""An async client for OpenAI-compatible judge servers (vLLM), with the failure handling a training run needs.

Bounded concurrency, a per-call timeout, and retries with exponential backoff and full jitter on transport
errors, 408, 429 and 5xx. Other 4xx are the caller's mistake and are not retried. One `openai.AsyncOpenAI` per
event loop, because TRL runs async reward functions on its own loop while evaluation runs on another, and an
HTTP connection pool must not cross loops.
"""
from __future__ import annotations

import asyncio
import random
import time
import weakref
from dataclasses import dataclass, field

import httpx
import openai

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass
class CallResult:
    response: object | None
    latency_s: float
    attempts: int
    error: str | None = None


@dataclass
class ClientSettings:
    base_url: str
    model: str
    api_key: str | None = None
    max_concurrency: int = 64
    timeout_s: float = 30.0
    max_retries: int = 3
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    extra_headers: dict = field(default_factory=dict)


class JudgeClient:
    def __init__(self, settings: ClientSettings):
        self.s = settings
        # keyed by the loop object itself (weakly): a new loop may reuse a dead loop's id()
        self._per_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _for_this_loop(self):
        key = asyncio.get_running_loop()
        if key not in self._per_loop:
            url = self.s.base_url.rstrip("/")
            client = openai.AsyncOpenAI(
                base_url=url if url.endswith("/v1") else url + "/v1",
                api_key=self.s.api_key or "EMPTY",
                timeout=self.s.timeout_s,
                max_retries=0,  # retries are ours: counted, jittered, logged
                http_client=httpx.AsyncClient(
                    timeout=self.s.timeout_s,
                    limits=httpx.Limits(max_connections=self.s.max_concurrency,
                                        max_keepalive_connections=self.s.max_concurrency)),
            )
            self._per_loop[key] = (client, asyncio.Semaphore(self.s.max_concurrency))
        return self._per_loop[key]

    async def aclose(self) -> None:
        """Close this loop's connections (call before an `asyncio.run` loop ends)."""
        pair = self._per_loop.pop(asyncio.get_running_loop(), None)
        if pair is not None:
            await pair[0].close()

    def _backoff(self, attempt: int) -> float:
        cap = min(self.s.backoff_max_s, self.s.backoff_base_s * (2 ** attempt))
        return random.uniform(0, cap)  # full jitter: retries of a burst do not arrive together

    async def chat(self, messages: list[dict], **params) -> CallResult:
        """One chat completion with retries; never raises for server or transport failures."""
        client, sem = self._for_this_loop()
        t0 = time.perf_counter()
        last_err = None
        for attempt in range(self.s.max_retries + 1):
            try:
                async with sem:
                    resp = await client.chat.completions.create(model=self.s.model, messages=messages, **params)
                return CallResult(resp, time.perf_counter() - t0, attempt + 1)
            except openai.APIStatusError as e:
                last_err = f"HTTP {e.status_code}: {str(e)[:200]}"
                if e.status_code not in RETRYABLE_STATUS:
                    break
            except (openai.APIConnectionError, openai.APITimeoutError, httpx.HTTPError) as e:
                last_err = f"{type(e).__name__}: {str(e)[:200]}"
            except Exception as e:  # a malformed reply the SDK cannot decode: treat as a failed call
                last_err = f"{type(e).__name__}: {str(e)[:200]}"
            if attempt < self.s.max_retries:
                await asyncio.sleep(self._backoff(attempt))
        return CallResult(None, time.perf_counter() - t0, attempt + 1, last_err)
