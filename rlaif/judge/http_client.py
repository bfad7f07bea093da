"""An async client for OpenAI-compatible judge servers (vLLM), with the failure handling a training run needs.

Bounded concurrency, optional request and token rate limits, a per-call timeout, and retries with exponential
backoff and full jitter on transport errors, 408, 429 and 5xx; other 4xx are the caller's mistake and are not
retried (rlaif/judge/attempts.py: the policy both ways of sending share). Several base URLs are one pool
(rlaif/judge/pool.py): each request goes to the least-loaded healthy server, a retry goes to another, a server
that refuses connections or times out twice in a row is out until it answers a real request, and while none is
up a request waits for one (once, at most `max_outage_wait_s`), so one dead server costs retries, not judgments.
Requests are POSTed as JSON with one HTTP client (the openai SDK's httpx2 client class) per event loop, because
TRL runs async reward functions on its own loop while evaluation runs on another, and an HTTP connection pool must
not cross loops; the SDK's request and reply objects cost more CPU than the rest of a verdict (issue 27).

One-token requests made together (a reward batch's logprob or pairwise requests) go to vLLM's
`/v1/chat/completions/batch` as one POST per `max_concurrency` conversations, with the same retries: for
one-token judgments the server's per-request HTTP and API work, not the model, bounds throughput. A server
without the endpoint gets single calls. When the judge's tokenizer is on this machine, such a batch goes to
`/v1/completions` as token ids instead, rendered here (rlaif/judge/token_prompts.py): the server's chat
templating and grammar work per conversation is the next cost on a small judge. Measurements:
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from rlaif.common import fastjson
from rlaif.common.dist import rank
from rlaif.judge.attempts import Attempts
from rlaif.judge.backend import CallResult, Reply
from rlaif.judge.pool import Pool
from rlaif.judge.token_prompts import TokenPrompts
from rlaif.judge.urls import api_url

if TYPE_CHECKING:
    from rlaif.config.judge import JudgeSpec

log = logging.getLogger("rlaif.judge")


def _params_key(params: dict) -> bytes:
    """Which batch a request's parameters put it in: equal parameters, equal keys, whatever their order."""
    try:
        return fastjson.dumps(params, sort_keys=True)
    except TypeError:  # a value JSON has no form for: its str, as before
        return json.dumps(params, sort_keys=True, default=str).encode()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


@functools.cache
def _sdk_modules():
    """(the openai SDK, the HTTP library it runs on: httpx2 since openai 3, httpx before), imported when a client
    first talks to a server: the SDK takes about half a second to import, and most commands never call a judge."""
    import openai
    try:
        import httpx2 as sdk_http
    except ImportError:  # pragma: no cover - older SDKs
        sdk_http = httpx
    return openai, sdk_http


@dataclass
class ClientSettings:
    base_url: str | list[str]
    model: str
    api_key: str | None = None
    max_concurrency: int = 64
    timeout_s: float = 30.0
    max_retries: int = 3
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    max_requests_per_s: float | None = None
    max_tokens_per_min: float | None = None
    # one-token requests (logprob, pairwise) that arrive together go out as one POST to vLLM's
    # /v1/chat/completions/batch, at most max_concurrency conversations each; servers without it get single calls
    batch_requests: bool = True
    # a batch of one-token requests goes to /v1/completions as token ids rendered here with the judge's own
    # tokenizer and chat template (rlaif/judge/token_prompts.py), when this folder or cached hub id has one and
    # the server's /tokenize agrees; otherwise to the chat batch endpoint
    tokenizer: str | None = None
    max_outage_wait_s: float = 600.0  # how long a request waits for a judge server to be up again
    breaker_failures: int = 2  # timeouts or server errors in a row that take a replica out until it answers

    @property
    def urls(self) -> list[str]:
        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)
        return [u.rstrip("/") for u in urls]

    @classmethod
    def from_spec(cls, judge: JudgeSpec, base_url: str | list[str]) -> ClientSettings:
        """The client a recipe's `judge:` block describes, for the server(s) at base_url."""
        return cls(base_url=base_url, model=judge.name, api_key=judge.api_key, max_concurrency=judge.max_concurrency,
                   timeout_s=judge.timeout_s, max_retries=judge.max_retries,
                   max_requests_per_s=judge.max_requests_per_s, max_tokens_per_min=judge.max_tokens_per_min,
                   batch_requests=judge.batch_requests, tokenizer=judge.model if judge.token_prompts else None,
                   max_outage_wait_s=judge.max_outage_wait_s, breaker_failures=judge.breaker_failures)


class RateLimiter:
    """A token bucket: `rate` units per second, bursts up to `capacity`."""

    def __init__(self, rate: float, capacity: float):
        self.rate, self.capacity = rate, capacity
        self.tokens, self.t = capacity, time.monotonic()

    async def acquire(self, amount: float = 1.0) -> None:
        amount = min(amount, self.capacity)  # an oversize request waits for a full bucket, not forever
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
            self.t = now
            if self.tokens >= amount:
                self.tokens -= amount
                return
            await asyncio.sleep((amount - self.tokens) / self.rate)


@dataclass
class _LoopState:
    sem: asyncio.Semaphore
    requests: RateLimiter | None
    tokens: RateLimiter | None
    http: object = None  # every request, single or batch, goes through it
    pending: dict = field(default_factory=dict)  # params key -> (params, [(messages, future)])
    flusher: asyncio.Task | None = None


def estimate_tokens(messages: list[dict], max_tokens: int | None) -> float:
    """A rough count for rate limiting (about 4 characters a token), plus what the reply may use."""
    return sum(len(str(m.get("content", ""))) for m in messages) / 4 + (max_tokens or 0)


class JudgeClient:
    """A judge backend over HTTP (rlaif/judge/backend.py)."""

    def __init__(self, settings: ClientSettings):
        self.settings = settings
        self.name = settings.model
        self.urls = settings.urls
        self.per_url = {u: {"calls": 0, "failures": 0} for u in self.urls}
        # keyed by the loop object itself (weakly): a new loop may reuse a dead loop's id()
        self._per_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.no_batch: set[str] = set()  # servers that answered 404/405 on the batch endpoint
        self.batches = 0  # batch POSTs sent (for the benchmarks)
        self.token_prompts = TokenPrompts(settings.tokenizer) if settings.tokenizer else None
        # the servers' health and load; a supervisor of a server rlaif launched reports to it (rlaif/factory.py)
        self.pool = Pool(self.urls, settings.max_outage_wait_s, settings.api_key, model=settings.model, rank=rank(),
                         breaker_failures=settings.breaker_failures, timeout_s=settings.timeout_s)

    def replica_summary(self) -> dict:
        """Per server: judge requests sent, failed, and times it was taken out of the pool."""
        return {u: dict(c, downs=self.pool.replicas[u].downs) for u, c in self.per_url.items()}

    def _http(self):
        # The SDK's own HTTP client class (openai 3 runs on httpx2), sized so that the semaphore, not the pool,
        # bounds requests in flight: a pool capped at max_concurrency made large batches slower and cost the
        # client CPU time (benchmarks/RESULTS.md). One TLS context for all: building one reads the CA bundle,
        # and a client is made per event loop.
        openai, sdk_http = _sdk_modules()
        limits = sdk_http.Limits(max_connections=None, max_keepalive_connections=self.settings.max_concurrency)
        return openai.DefaultAsyncHttpxClient(timeout=self.settings.timeout_s, limits=limits, verify=_tls_context())

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if loop not in self._per_loop:
            rps, tpm = self.settings.max_requests_per_s, self.settings.max_tokens_per_min
            self._per_loop[loop] = _LoopState(
                asyncio.Semaphore(self.settings.max_concurrency),
                RateLimiter(rps, max(1.0, rps)) if rps else None,
                RateLimiter(tpm / 60.0, tpm / 60.0 * 5) if tpm else None,  # up to 5 s of tokens at once
                self._http())
        return self._per_loop[loop]

    async def aclose(self) -> None:
        """Close this loop's connections (call before an `asyncio.run` loop ends)."""
        st = self._per_loop.pop(asyncio.get_running_loop(), None)
        if st is not None:
            await st.http.aclose()

    def _headers(self) -> dict:
        # the key goes in this header only: never into an error message, a log line or argv. The bodies are
        # encoded here (orjson: httpx's `json=` ran the standard library's encoder, issue 27), so the type is said
        return {"Authorization": f"Bearer {self.settings.api_key or 'EMPTY'}", "Content-Type": "application/json"}

    def _described(self, e: BaseException) -> str:
        """An exception as an error string, with the key taken out: a transport library may quote the header it
        refused (h11: "Illegal header value b'Bearer ...'"), and errors go to the judgment log and the report."""
        text = f"{type(e).__name__}: {str(e)[:300]}"
        key = self.settings.api_key
        if key:
            for form in {key, key.strip(), repr(key.encode())[2:-1], repr(key)[1:-1]}:
                if form:
                    text = text.replace(form, "***")
        return text[:200 + len(type(e).__name__) + 2]

    def _attempts(self) -> Attempts:
        """A new request's attempts (rlaif/judge/attempts.py): its one outage deadline starts now."""
        st = self.settings
        return Attempts(self.pool, st.max_retries, st.backoff_base_s, st.backoff_max_s)

    def _batchable(self, params: dict) -> bool:
        # one-token requests only: there the per-request cost of HTTP and the API server dominates; a long
        # generation gains little and would make a batch's timeout hard to set. Rate limits count requests.
        return (self.settings.batch_requests and params.get("max_tokens") == 1 and not self.settings.max_requests_per_s
                and not self.settings.max_tokens_per_min and len(self.no_batch) < len(self.urls))

    async def chat(self, messages: list[dict], **params) -> CallResult:
        """One chat completion with retries; never raises for server or transport failures. One-token requests
        made together are sent together (see `batch_requests`); each still gets its own CallResult."""
        if not self._batchable(params):
            return await self._chat_one(messages, **params)
        st = self._state()
        fut = asyncio.get_running_loop().create_future()
        key = json.dumps(params, sort_keys=True, default=str)
        st.pending.setdefault(key, (params, []))[1].append((messages, fut))
        if st.flusher is None or st.flusher.done():
            st.flusher = asyncio.ensure_future(self._flush(st))
        return await fut

    async def chat_many(self, calls: list[tuple[list[dict], dict]]) -> list[CallResult]:
        """Many chat completions, `(messages, params)` each, made at once: a reward batch's. The one-token ones go
        out in batch POSTs of the same parameters, the rest as single calls, all concurrently; one CallResult
        each, in order. What `chat` does for requests gathered together, without a task and a future per request
        (issue 27: they were a tenth of a one-token judgment's client CPU)."""
        out: list = [None] * len(calls)
        singles: list[int] = []
        groups: dict[str, tuple[dict, list[int]]] = {}
        keys: dict[int, str] = {}  # id(params) -> its key: a batch's requests share a few params dicts
        for i, (_, params) in enumerate(calls):
            if not self._batchable(params):
                singles.append(i)
                continue
            k = keys.get(id(params))
            if k is None:  # once per params dict; each request of a reward batch has its own (issue 27)
                k = keys[id(params)] = _params_key(params)
            groups.setdefault(k, (params, []))[1].append(i)
        jobs = [self._chat_one(calls[i][0], **calls[i][1]) for i in singles]
        parts: list[list[int]] = []
        if groups:
            st, size = self._state(), self.settings.max_concurrency
            for params, idx in groups.values():
                for a in range(0, len(idx), size):
                    parts.append(idx[a:a + size])
                    jobs.append(self._batch(st, params, [calls[i][0] for i in parts[-1]]))
        results = await asyncio.gather(*jobs)
        for i, res in zip(singles, results):
            out[i] = res
        for part, batch in zip(parts, results[len(singles):]):
            for i, res in zip(part, batch):
                out[i] = res
        return out

    async def _flush(self, st: _LoopState) -> None:
        await asyncio.sleep(0)  # one turn of the loop: every request of the caller's gather is queued by then
        tasks = []
        while st.pending:
            _, (params, items) = st.pending.popitem()
            size = self.settings.max_concurrency
            tasks += [asyncio.ensure_future(self._answer(st, params, items[i:i + size]))
                      for i in range(0, len(items), size)]
        await asyncio.gather(*tasks)

    async def _answer(self, st: _LoopState, params: dict, items: list) -> None:
        results = await self._batch(st, params, [m for m, _ in items])
        for (_, fut), res in zip(items, results):
            if not fut.done():
                fut.set_result(res)

    async def _singly(self, params: dict, conversations: list) -> list[CallResult]:
        return list(await asyncio.gather(*[self._chat_one(m, **params) for m in conversations]))

    async def _batch(self, st: _LoopState, params: dict, conversations: list) -> list[CallResult]:
        """One POST for many conversations with the same parameters; retried as a whole like a single call."""
        try:
            return await self._batch_attempts(st, params, conversations)
        except Exception as e:  # never leave a caller without an answer
            return [CallResult(None, 0.0, 1, f"{type(e).__name__}: {str(e)[:200]}") for _ in conversations]

    async def _batch_attempts(self, st: _LoopState, params: dict, conversations: list) -> list[CallResult]:
        _, sdk_http = _sdk_modules()
        n = len(conversations)
        chat_body = self._chat_body(conversations, params)
        token_body = None  # rendered once, on the first attempt that goes to a server that takes token ids
        headers = self._headers()
        t0 = time.perf_counter()
        tries = self._attempts()
        while (url := await tries.next()) is not None:
            if url in self.no_batch:
                return await self._singly(params, conversations)
            tp = self.token_prompts
            as_tokens = tp is not None and await tp.check(st.http, url, headers, self.settings.model, conversations[0],
                                                          (params.get("extra_body") or {}).get("chat_template_kwargs"))
            if as_tokens and token_body is None:
                try:
                    token_body = await asyncio.to_thread(tp.body, self.settings.model, params, conversations)
                except Exception as e:  # a conversation the local template refuses: the server renders it
                    log.warning("token prompts: rendering a batch failed (%s); it goes to the chat endpoint", e)
                    as_tokens = False
            endpoint, body = ("/completions", token_body) if as_tokens else ("/chat/completions/batch", chat_body)
            self.per_url[url]["calls"] += n  # counted per judge request, as single calls are
            self.batches += 1
            try:
                with self.pool.serving(url, n):  # queued for the semaphore counts as load too
                    async with st.sem:
                        r = await st.http.post(api_url(url) + endpoint, content=fastjson.dumps(body),
                                               headers=headers)
                if r.status_code in (404, 405) and as_tokens:  # /tokenize, but no /v1/completions
                    return await self._without_tokens(st, params, conversations, url,
                                                      f"its /v1/completions answered HTTP {r.status_code}")
                if r.status_code in (404, 405):  # not vLLM, or a vLLM without the endpoint: single calls from now
                    self.no_batch.add(url)
                    return await self._singly(params, conversations)
                if r.status_code == 400:  # one bad conversation refuses the batch: single calls say which
                    return await self._singly(params, conversations)
                if r.status_code == 200:
                    reply = fastjson.loads(r.content, big_ints=False)  # ids, counts, logprobs: no big integers
                    choices = sorted(reply["choices"], key=lambda c: c["index"])
                    if len(choices) != n:
                        raise ValueError(f"{len(choices)} choices for {n} conversations")
                    if as_tokens and not tp.answered(token_body, choices):
                        if url not in tp.confirmed:  # the first reply: a vLLM that ignores logprob_token_ids
                            return await self._without_tokens(st, params, conversations, url, "its /v1/completions "
                                                              "gives no logprobs for chosen tokens")
                        raise ValueError("a reply without the logprobs of the label tokens")
                    if as_tokens:
                        tp.confirmed.add(url)
                        labels = token_body.get("logprob_token_ids")
                        choices = [tp.as_chat_choice(c, labels) for c in choices]
                    dt = time.perf_counter() - t0
                    tries.succeeded()
                    return [CallResult(Reply({"choices": [c]}), dt, tries.attempt, None, url) for c in choices]
                retry = tries.failed(f"HTTP {r.status_code}: {r.text[:200]}", status=r.status_code, body=r.text)
            except (httpx.HTTPError, sdk_http.HTTPError) as e:
                retry = tries.failed(self._described(e), exc=e)
            except (ValueError, KeyError, TypeError, IndexError) as e:  # a reply that is not the batch answer
                retry = tries.failed(f"malformed batch reply: {self._described(e)}")
            self.per_url[url]["failures"] += n
            if not retry:
                break
        dt = time.perf_counter() - t0
        return [CallResult(None, dt, tries.attempt, tries.error, tries.url) for _ in conversations]

    async def _without_tokens(self, st: _LoopState, params: dict, conversations: list, url: str,
                              why: str) -> list[CallResult]:
        """`url` cannot take token prompts: turn them off there and send this batch again, as a chat batch. The
        token attempt is not counted: the batch is one judge request per conversation, sent once."""
        self.token_prompts.turn_off(url, why)
        self.per_url[url]["calls"] -= len(conversations)
        self.batches -= 1
        return await self._batch_attempts(st, params, conversations)

    def _chat_body(self, messages, params: dict) -> dict:
        """The JSON the SDK's `chat.completions.create` would send: `extra_body` merged in at the top level."""
        body = {"model": self.settings.model, "messages": messages}
        body.update({k: v for k, v in params.items() if k != "extra_body"})
        body.update(params.get("extra_body") or {})
        return body

    async def _chat_one(self, messages: list[dict], **params) -> CallResult:
        """One chat completion, POSTed with this loop's HTTP client as the batches are: the openai SDK's request
        building and reply models cost 2.1 ms of a verdict's 2.6 ms of client CPU (benchmarks/RESULTS.md, issue
        27). The reply is the JSON itself, read through `Reply`."""
        _, sdk_http = _sdk_modules()
        st = self._state()
        body = self._chat_body(messages, params)
        headers = self._headers()
        t0 = time.perf_counter()
        tries = self._attempts()
        while (url := await tries.next()) is not None:
            if st.requests:
                await st.requests.acquire()
            if st.tokens:
                await st.tokens.acquire(estimate_tokens(messages, params.get("max_tokens")))
            self.per_url[url]["calls"] += 1
            try:
                with self.pool.serving(url):
                    async with st.sem:
                        r = await st.http.post(api_url(url) + "/chat/completions", content=fastjson.dumps(body),
                                               headers=headers)
                if r.status_code == 200:
                    reply = fastjson.loads(r.content, big_ints=False)
                    if not isinstance(reply, dict):
                        raise ValueError(f"a {type(reply).__name__}, not a JSON object")
                    tries.succeeded()
                    return CallResult(Reply(reply), time.perf_counter() - t0, tries.attempt, None, url)
                retry = tries.failed(f"HTTP {r.status_code}: {r.text[:200]}", status=r.status_code, body=r.text)
            except (httpx.HTTPError, sdk_http.HTTPError) as e:
                retry = tries.failed(self._described(e), exc=e)
            except ValueError as e:  # a 200 whose body is not a JSON object: a failed call, not a verdict
                retry = tries.failed(f"malformed reply: {self._described(e)}")
            except Exception as e:  # anything else the send raised (the SDK turned these into connection errors):
                retry = tries.failed(self._described(e))  # this request's failed attempt, not the whole batch's
            self.per_url[url]["failures"] += 1
            if not retry:
                break
        return CallResult(None, time.perf_counter() - t0, tries.attempt, tries.error, tries.url)
