"""A reward model served by vLLM's pooling runner (`--runner pooling`), scored over HTTP: one `/classify` request
per chunk of a batch (vLLM takes a list of inputs), the conversations sent as token ids rendered here
(rlaif/judge/reward_model.py: the ids training saw), the head's raw logit asked for (`use_activation: false`).

Several URLs are one pool, with the judge's routing, outage waits and retries (rlaif/judge/pool.py,
rlaif/judge/attempts.py): a dead or restarting server is waited for, not failed through. A probe is a one-input
/classify request (a pooling server has no chat endpoint to probe).
"""
from __future__ import annotations

import asyncio
import weakref

import httpx

from rlaif.common.dist import rank
from rlaif.judge.attempts import Attempts
from rlaif.judge.pool import Pool
from rlaif.judge.reward_model import conversation_ids, load_tokenizer
from rlaif.judge.urls import server_root

PROBE_IDS = [1, 2]  # a two-token input: any vocabulary has these ids


def classify_probe(model: str) -> tuple[str, dict]:
    """(path at the server's root, body) of a one-input request a pooling server answers when it can score."""
    return "/classify", {"model": model, "input": [PROBE_IDS], "use_activation": False}


class PoolingClient:
    def __init__(self, urls: list[str], model: str, tokenizer: str, *, api_key: str | None = None,
                 batch_size: int = 256, timeout_s: float = 60.0, max_retries: int = 3,
                 max_outage_wait_s: float = 600.0, backoff_base_s: float = 0.25, backoff_max_s: float = 8.0):
        self.urls = [u.rstrip("/") for u in urls]
        self.model, self.api_key, self.batch_size, self.timeout_s = model, api_key, batch_size, timeout_s
        self.max_retries, self.backoff = max_retries, (backoff_base_s, backoff_max_s)
        self.tok = load_tokenizer(tokenizer)
        self.pool = Pool(self.urls, max_outage_wait_s, api_key, model=model, rank=rank(), timeout_s=timeout_s,
                         probe=classify_probe(model))
        self.requests = 0  # /classify requests sent
        self._http: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # one client per event loop

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if loop not in self._http:
            self._http[loop] = httpx.AsyncClient(timeout=self.timeout_s)
        return self._http[loop]

    async def score(self, prompts: list[list[dict]], responses: list[str]) -> tuple[list[float | None], str | None]:
        ids = [conversation_ids(self.tok, p, r) for p, r in zip(prompts, responses)]
        chunks = [ids[i:i + self.batch_size] for i in range(0, len(ids), self.batch_size)]
        results = await asyncio.gather(*[self._classify(c) for c in chunks])
        scores = [x for r, _ in results for x in r]
        return scores, next((e for _, e in results if e), None)

    async def _classify(self, ids: list[list[int]]) -> tuple[list[float | None], str | None]:
        body = {"model": self.model, "input": ids, "use_activation": False}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        tries = Attempts(self.pool, self.max_retries, *self.backoff)
        while (url := await tries.next()) is not None:
            self.requests += 1
            try:
                with self.pool.serving(url, len(ids)):
                    r = await self._client().post(server_root(url) + "/classify", json=body, headers=headers)
                if r.status_code == 200:
                    data = sorted(r.json()["data"], key=lambda d: d["index"])
                    if len(data) != len(ids):
                        raise ValueError(f"{len(data)} results for {len(ids)} inputs")
                    tries.succeeded()
                    return [float(d["probs"][0]) for d in data], None
                retry = tries.failed(f"HTTP {r.status_code}: {r.text[:200]}", status=r.status_code, body=r.text)
            except httpx.HTTPError as e:
                retry = tries.failed(f"{type(e).__name__}: {str(e)[:200]}", exc=e)
            except (ValueError, KeyError, TypeError, IndexError) as e:  # a reply that is not a classify answer
                retry = tries.failed(f"malformed /classify reply: {type(e).__name__}: {str(e)[:200]}")
            if not retry:
                break
        return [None] * len(ids), tries.error

    async def aclose(self) -> None:
        client = self._http.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
