"""The verdict cache: identical judge requests are judged once."""
from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict

from rlaif.common import fastjson


_HIT = {"cached": True, "latency_s": 0.0, "attempts": 0}  # what a cached answer says about its call


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
        self._inflight: dict[str, tuple[asyncio.Future, int]] = {}  # key -> (its call's future, its place)

    def clear(self) -> None:
        self._done.clear()

    def key(self, req) -> str:
        h = self._salted.copy()
        h.update(fastjson.dumps([req.messages, req.params], sort_keys=True))
        return h.hexdigest()

    async def get_or_run_many(self, reqs: list, run_many, totals: dict) -> list[dict]:
        """Many requests through the cache at once: the ones neither judged nor being judged go to
        `run_many(requests) -> results` in one call, each distinct request once (the first of its duplicates);
        a duplicate, a cached one and one that another call is judging count as cache hits. One future for the
        whole call, not one per request (issue 27: the futures and tasks were a tenth of a judgment's CPU)."""
        out: list = [None] * len(reqs)
        todo: dict[str, int] = {}  # key -> its place among the requests run
        ran: list[int] = []  # per request run, its place in reqs
        again: list[tuple[int, int]] = []  # (place in reqs, place among the requests run): a duplicate
        waits: list[tuple[int, tuple[asyncio.Future, int]]] = []  # judged by another call now
        for i, req in enumerate(reqs):
            k = self.key(req)
            if k in self._done:
                self._done.move_to_end(k)
                totals["cache_hits"] += 1
                out[i] = self._done[k] | _HIT
            elif k in todo:
                totals["cache_hits"] += 1
                again.append((i, todo[k]))
            elif k in self._inflight:
                totals["cache_hits"] += 1
                waits.append((i, self._inflight[k]))
            else:
                todo[k] = len(ran)
                ran.append(i)
        if ran:
            fut = asyncio.get_running_loop().create_future()
            for k, j in todo.items():
                self._inflight[k] = (fut, j)
            try:
                results = await run_many([reqs[i] for i in ran])
            except BaseException as e:
                fut.set_exception(e)
                fut.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
                raise
            finally:
                for k in todo:
                    self._inflight.pop(k, None)
            fut.set_result(results)
            for k, j in todo.items():
                res = out[ran[j]] = results[j]
                if res["scores"] is not None:
                    self._done[k] = res
            while len(self._done) > self.max_entries:
                self._done.popitem(last=False)
            for i, j in again:
                out[i] = results[j] | _HIT
        for i, (other, j) in waits:
            out[i] = (await asyncio.shield(other))[j] | _HIT
        return out
