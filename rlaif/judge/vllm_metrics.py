"""vLLM's own counters, read from its Prometheus `/metrics` endpoint: how much of the judge prompts the prefix
cache served. The rubric is a shared prefix so that this is high; a rubric edited per sample shows up here."""
from __future__ import annotations

import asyncio
import re
import time

import httpx

from rlaif.judge.urls import server_root

_LINE = re.compile(r"^(vllm:prefix_cache_(?:queries|hits)_total)\{[^}]*\}\s+([0-9.eE+-]+)$", re.M)


async def metrics_text(base_url: str, timeout: float = 2.0) -> str | None:
    """The server's Prometheus /metrics page; None if it cannot be read."""
    url = server_root(base_url) + "/metrics"
    try:
        async with httpx.AsyncClient(timeout=timeout) as c:
            r = await c.get(url)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None


async def prefix_cache_counters(base_url: str, timeout: float = 2.0) -> tuple[float, float] | None:
    """(queried tokens, hit tokens) so far, summed over engines; None if the server does not say."""
    text = await metrics_text(base_url, timeout)
    if text is None:
        return None
    totals = {"vllm:prefix_cache_queries_total": 0.0, "vllm:prefix_cache_hits_total": 0.0}
    found = False
    for name, value in _LINE.findall(text):
        totals[name] += float(value)
        found = True
    return (totals["vllm:prefix_cache_queries_total"], totals["vllm:prefix_cache_hits_total"]) if found else None


_BLOCK = re.compile(r'^vllm:cache_config_info\{[^}]*\bblock_size="(\d+)"', re.M)


async def kv_block_size(base_url: str, timeout: float = 2.0) -> int | None:
    """The server's KV-cache block size in tokens: the prefix cache shares whole blocks only."""
    text = await metrics_text(base_url, timeout)
    m = _BLOCK.search(text) if text is not None else None
    return int(m.group(1)) if m else None


class PrefixCacheMeter:
    """Hit rate between two readings, over every judge server.

    A reading costs a /metrics scrape (tens of kB of text; on a busy CPU box a good share of a small step), so
    `rate()` reads the servers at most every `min_interval_s` and otherwise returns the last rate. The reward calls `latest()`, which never waits: a due reading runs as a task on the reward's event
    loop (TRL keeps one for async reward functions) while the trainer goes on, and the next call logs it.
    """

    def __init__(self, urls: list[str], min_interval_s: float = 10.0):
        self.urls = urls
        self.min_interval_s = min_interval_s
        self.last: dict[str, tuple[float, float]] = {}
        self.last_rate: float | None = None
        self._read_at: float | None = None
        self.readings = 0
        self._task: asyncio.Task | None = None

    def latest(self) -> float | None:
        """The last rate, at once; starts a reading in the background when one is due. Call on a running loop."""
        due = self._read_at is None or time.monotonic() - self._read_at >= self.min_interval_s
        if due and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self.rate())
        return self.last_rate

    async def rate(self) -> float | None:
        now_t = time.monotonic()
        if self._read_at is not None and now_t - self._read_at < self.min_interval_s:
            return self.last_rate
        self._read_at = now_t
        self.readings += 1
        dq = dh = 0.0
        for u in self.urls:
            now = await prefix_cache_counters(u)
            if now is None:
                continue
            q0, h0 = self.last.get(u, (0.0, 0.0))
            self.last[u] = now
            dq, dh = dq + now[0] - q0, dh + now[1] - h0
        if dq > 0:
            self.last_rate = dh / dq
        return self.last_rate
