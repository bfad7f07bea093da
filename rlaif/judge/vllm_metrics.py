"""vLLM's own counters, read from its Prometheus `/metrics` endpoint: how much of the judge prompts the prefix
cache served. The rubric is a shared prefix so that this is high; a rubric edited per sample shows up here."""
from __future__ import annotations

import re

import httpx

_LINE = re.compile(r"^(vllm:prefix_cache_(?:queries|hits)_total)\{[^}]*\}\s+([0-9.eE+-]+)$", re.M)


async def prefix_cache_counters(base_url: str, timeout: float = 2.0) -> tuple[float, float] | None:
    """(queried tokens, hit tokens) so far, summed over engines; None if the server does not say."""
    url = base_url.rstrip("/").removesuffix("/v1") + "/metrics"
    try:
        async with httpx.AsyncClient(timeout=timeout) as c:
            r = await c.get(url)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    totals = {"vllm:prefix_cache_queries_total": 0.0, "vllm:prefix_cache_hits_total": 0.0}
    found = False
    for name, value in _LINE.findall(r.text):
        totals[name] += float(value)
        found = True
    return (totals["vllm:prefix_cache_queries_total"], totals["vllm:prefix_cache_hits_total"]) if found else None


class PrefixCacheMeter:
    """Hit rate between two readings, over every judge server."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self.last: dict[str, tuple[float, float]] = {}

    async def rate(self) -> float | None:
        dq = dh = 0.0
        for u in self.urls:
            now = await prefix_cache_counters(u)
            if now is None:
                continue
            q0, h0 = self.last.get(u, (0.0, 0.0))
            self.last[u] = now
            dq, dh = dq + now[0] - q0, dh + now[1] - h0
        return dh / dq if dq > 0 else None
