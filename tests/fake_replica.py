"""A logprob judge replica on 127.0.0.1 whose behaviour a test sets, for the client's and the pool's tests: it
answers one-token chat requests (single and vLLM's batch endpoint) the way vLLM does, with P(PASS) = `p_pass`.

`mode`: "ok" answers; "hang" holds each chat request until the mode changes or the replica stops (a stuck engine
behind a live API server, whose /health still answers 200); an int answers that HTTP status with `status_text`
(a router with no workers says 503 "No available workers"). It counts what it was sent: POSTs per path, and
conversations answered.
"""
from __future__ import annotations

import collections
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def choice(index: int, p_pass: float, tokens: tuple[str, str] = ("PASS", "FAIL")) -> dict:
    """One constrained answer token: tokens[0] with probability p_pass, else tokens[1] (PASS/FAIL, or a pairwise
    judge's A/B)."""
    label = tokens[0] if p_pass >= 0.5 else tokens[1]
    tops = [{"token": tokens[0], "logprob": math.log(max(p_pass, 1e-9))},
            {"token": tokens[1], "logprob": math.log(max(1 - p_pass, 1e-9))}]
    return {"index": index, "finish_reason": "length", "message": {"role": "assistant", "content": label},
            "logprobs": {"content": [{"token": label, "logprob": tops[0 if label == tokens[0] else 1]["logprob"],
                                      "top_logprobs": tops}]}}


class FakeReplica:
    def __init__(self, p_pass: float = 0.9, mode: str | int = "ok", status_text: str = "server error",
                 port: int = 0, answer=None):
        """`answer(messages) -> (p, (token, other))`: a scripted answer per conversation instead of `p_pass`
        (e.g. from the fenced response, or a pairwise judge's A/B)."""
        self.p_pass, self.status_text, self.answer = p_pass, status_text, answer
        self._mode = mode
        self._changed = threading.Condition()
        self.posts: collections.Counter[str] = collections.Counter()
        self.seen: list[tuple[str, dict, dict]] = []  # (path, headers, JSON body) of every POST
        self.conversations = 0
        self.posts_done = 0  # POSTs that have left the handler (a held one counts once the mode lets it go)
        self.stopped = False
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, obj) -> None:
                body = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up on a held request
                    pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "judge", "object": "model"}]})

            def do_POST(self):
                try:
                    self._post()
                finally:  # answered, refused or given up on by its client: no longer held
                    with replica._changed:
                        replica.posts_done += 1

            def _post(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with replica._changed:
                    replica.posts[self.path] += 1
                    replica.seen.append((self.path, dict(self.headers), body))
                    while replica._mode == "hang" and not replica.stopped:
                        replica._changed.wait()
                    mode = replica._mode
                if isinstance(mode, int):
                    return self._send(mode, {"error": {"message": replica.status_text}})
                if self.path.endswith("/chat/completions/batch"):
                    convs = body["messages"]
                    with replica._changed:  # handlers run in threads of their own; tests assert exact counts
                        replica.conversations += len(convs)
                    return self._send(200, {"id": "b", "object": "chat.completion", "model": "judge",
                                            "choices": [replica.reply(i, c) for i, c in enumerate(convs)]})
                if self.path.endswith("/chat/completions"):
                    with replica._changed:
                        replica.conversations += 1
                    return self._send(200, {"id": "c", "object": "chat.completion", "created": int(time.time()),
                                            "model": "judge", "choices": [replica.reply(0, body["messages"])],
                                            "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                      "total_tokens": 2}})
                self._send(404, {"error": {"message": "not found"}})

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reply(self, index: int, messages: list[dict]) -> dict:
        if self.answer is None:
            return choice(index, self.p_pass)
        return choice(index, *self.answer(messages))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, value) -> None:
        with self._changed:
            self._mode = value
            self._changed.notify_all()

    def chat_posts(self) -> int:
        return sum(n for path, n in self.posts.items() if "/chat/completions" in path)

    def stop(self) -> None:
        with self._changed:
            self.stopped = True
            self._changed.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def one_token_batch(client, n: int = 4) -> list:
    """n one-token judge requests made together through `client` (a JudgeClient), as a reward batch makes them,
    on an event loop of their own; their CallResults."""
    import asyncio

    async def go():
        try:
            return await asyncio.gather(*[client.chat([{"role": "user", "content": f"q{i}"}], max_tokens=1)
                                          for i in range(n)])
        finally:
            await client.aclose()
    return asyncio.run(go())


def http_judge(url: str | list[str], min_calls: int = 32, **settings):
    """A real logprob judge of the says_please rubric over HTTP at url (fake replicas, or nothing at all), no
    retries unless asked."""
    from rlaif.config.rubric import load_rubric
    from rlaif.judge.http_client import ClientSettings, JudgeClient
    from rlaif.judge.scorer import FailureSettings, Judge
    client = JudgeClient(ClientSettings(url, "judge", backoff_base_s=0.01, **({"max_retries": 0} | settings)))
    return Judge(load_rubric("says_please"), client, on_failure=FailureSettings(min_calls=min_calls), cache=False)
