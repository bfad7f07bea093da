"""An OpenAI-compatible judge whose verdicts are scripted from the sample, for tests that need judge replies
that vary in known ways (the tiny judge was trained for logprob prompts, so its JSON verdicts are all FAIL).

Verdict mode only: PASS when the fenced response says "please", else FAIL; a response containing "garble"
gets a reply that is not a verdict, and one containing "chatty" gets the JSON wrapped in prose and a code fence,
as judges without structured outputs write it. `style` writes replies as reasoning judges do: "think" (Qwen3 and
DeepSeek-R1: `<think>...</think>` then the verdict), "think_cut" (still thinking when the budget ran out),
"harmony" (gpt-oss's channels), "reasoning_field" (vLLM's reasoning parser: the thinking in `reasoning_content`),
"think_open_cut" (a template that opens the think block in the prompt: thoughts without a tag, cut at the budget).
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


def styled(content: str, style: str) -> tuple[str | None, str | None, str]:
    """(content, reasoning_content, finish_reason) of a reply written in a reasoning judge's style."""
    thought = "The response is short; I look for the word please."
    if style == "think":
        return f"<think>\n{thought}\n</think>\n\n{content}", None, "stop"
    if style == "think_cut":
        return f"<think>\n{thought} " + "Hmm, " * 20, None, "length"
    if style == "harmony":
        return (f"<|channel|>analysis<|message|>{thought}<|end|><|start|>assistant<|channel|>final<|message|>"
                f"{content}<|return|>"), None, "stop"
    if style == "think_open_cut":
        return f"{thought} " + "Hmm, " * 20, None, "length"
    if style == "reasoning_field":
        return content, thought, "stop"
    return content, None, "stop"


class ScriptedJudge:
    def __init__(self, model: str = "judge", style: str = "plain"):
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
                content, reasoning, finish = styled(verdict_for(user, criteria), style)
                message = {"role": "assistant", "content": content}
                if reasoning is not None:
                    message["reasoning_content"] = reasoning
                self._send({"id": "x", "object": "chat.completion", "created": int(time.time()), "model": model,
                            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None, "message": message}],
                            "usage": {"prompt_tokens": len(user) // 4, "completion_tokens": len(content or "") // 4,
                                      "total_tokens": (len(user) + len(content or "")) // 4}})

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the judge client opens dozens of connections at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
