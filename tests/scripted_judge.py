"""An OpenAI-compatible judge whose verdicts are scripted from the sample, for tests that need judge replies
that vary in known ways (the tiny judge was trained for logprob prompts, so its JSON verdicts are all FAIL).

Verdict mode only: PASS when the fenced response says "please", else FAIL; a response containing "garble"
gets a reply that is not a verdict, and one containing "chatty" gets the JSON wrapped in prose and a code fence,
as judges without structured outputs write it.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verdict_for(user: str, criteria: list[str]) -> str:
    response = user.split("Response:", 1)[-1]
    if "garble" in response:
        return "I would rather not say."
    label = "PASS" if re.search(r"(?i)please", response) else "FAIL"
    text = json.dumps({c: label for c in criteria} | {"rationale": f"scripted: {label}"})
    return f"Here is my verdict:\n```json\n{text}\n```" if "chatty" in response else text


class ScriptedJudge:
    def __init__(self, model: str = "judge"):
        self.requests: list[dict] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, obj):
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": model, "object": "model"}]})

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                judge.requests.append(req)
                schema = req["response_format"]["json_schema"]["schema"]
                criteria = [k for k in schema["required"] if k != "rationale"]
                user = req["messages"][-1]["content"]
                content = verdict_for(user, criteria)
                self._send({"id": "x", "object": "chat.completion", "created": int(time.time()), "model": model,
                            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                         "message": {"role": "assistant", "content": content}}],
                            "usage": {"prompt_tokens": len(user) // 4, "completion_tokens": len(content) // 4,
                                      "total_tokens": (len(user) + len(content)) // 4}})

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the judge client opens dozens of connections at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
