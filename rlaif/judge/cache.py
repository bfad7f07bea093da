"""The verdict cache: identical judge requests are judged once."""
from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict


_KEY_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False)


class VerdictCache:
    """Identical requests (same judge, mode, rubric, sample) are judged once: GRPO groups repeat completions.

    Concurrent duplicates wait for the first; failed judgments are not cached, so a retry can succeed.
    """

    def __init__(self, salt: str, max_entries: int = 200_000):
        self.salt = salt
        # the salt (judge, mode and the whole rubric) hashed once; each key hashes on from there
        self._salted = hashlib.sha256(json.dumps(salt, ensure_ascii=False).encode())
        self.max_entries = max_entries
        self._done: OrderedDict[str, dict] = OrderedDict()
        self._inflight: dict[str, asyncio.Future] = {}

    def clear(self) -> None:
        self._done.clear()

    def key(self, req) -> str:
        h = self._salted.copy()
        h.update(_KEY_ENCODER.encode([req.messages, req.params]).encode())
        return h.hexdigest()

    async def get_or_run(self, req, run, totals: dict) -> dict:
        k = self.key(req)
        if k in self._done:
            self._done.move_to_end(k)
            totals["cache_hits"] += 1
            return self._done[k] | {"cached": True, "latency_s": 0.0, "attempts": 0}
        if k in self._inflight:
            totals["cache_hits"] += 1
            res = await asyncio.shield(self._inflight[k])
            return res | {"cached": True, "latency_s": 0.0, "attempts": 0}
        fut = asyncio.get_running_loop().create_future()
        self._inflight[k] = fut
        try:
            res = await run(req)
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            self._inflight.pop(k, None)
        if not fut.done():
            fut.set_result(res)
        if res["scores"] is not None:
            self._done[k] = res
            if len(self._done) > self.max_entries:
                self._done.popitem(last=False)
        return res
