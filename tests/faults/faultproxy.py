"""A small HTTP proxy in front of the real judge server that misbehaves on cue, for fault tests.

`FaultProxy(upstream).plan(["429", "429", "pass", "drop", ...])` sets what the next chat requests get, in
order of arrival; when the plan runs out, `default` applies ("pass" forwards to the real server). Counts what it
served, so tests can check the client's counters exactly.
"""
from __future__ import annotations

import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class FaultProxy:
    def __init__(self, upstream: str, default: str = "pass"):
        self.upstream = upstream.rstrip("/")
        self.default = default
        self._plan: collections.deque[str] = collections.deque()
        self.drop_fields: set[str] = set()
        self.served = collections.Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, body: bytes, ctype="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                r = httpx.get(proxy.upstream + self.path, timeout=30)
                self._send(r.status_code, r.content, r.headers.get("content-type", "application/json"))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                # the client's one check of the server's tokenizer is not a judge request: it is never faulted
                action = "tokenize" if self.path == "/tokenize" else proxy._next()
                proxy.served[action.split(":")[0]] += 1
                if action in ("pass", "tokenize") or action.startswith("slow:"):
                    if action.startswith("slow:"):
                        time.sleep(float(action.split(":")[1]))
                    if proxy.drop_fields:  # an older server that ignores request fields it does not know
                        req = json.loads(body)
                        body = json.dumps({k: v for k, v in req.items() if k not in proxy.drop_fields}).encode()
                    r = httpx.post(proxy.upstream + self.path, content=body, timeout=60,
                                   headers={"Content-Type": "application/json"})
                    return self._send(r.status_code, r.content)
                if action.startswith("status:"):
                    code = int(action.split(":")[1])
                    return self._send(code, json.dumps({"error": {"message": f"injected {code}"}}).encode())
                if action == "drop":  # the connection dies with no answer
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if action == "garbage":  # a 200 whose answer is not what the constraint allows
                    reply = {"id": "x", "object": "chat.completion", "created": 0, "model": "judge",
                             "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                          "message": {"role": "assistant", "content": "maybe?!"}}]}
                    return self._send(200, json.dumps(reply).encode())
                if action == "empty":
                    reply = {"id": "x", "object": "chat.completion", "created": 0, "model": "judge", "choices": []}
                    return self._send(200, json.dumps(reply).encode())
                if action == "notjson":
                    return self._send(200, b"<html>proxy error</html>", "text/html")
                raise ValueError(action)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _next(self) -> str:
        with self._lock:
            return self._plan.popleft() if self._plan else self.default

    def plan(self, actions: list[str], default: str | None = None) -> "FaultProxy":
        with self._lock:
            self._plan = collections.deque(actions)
            if default is not None:
                self.default = default
            self.served.clear()
        return self

    def close(self):
        self.server.shutdown()
        self.server.server_close()
