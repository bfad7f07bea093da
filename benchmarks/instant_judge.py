"""An instant OpenAI-compatible judge server: canned, correctly shaped answers, next to no work per request.

    python benchmarks/instant_judge.py [--port 0] [--tokenizer artifacts/tiny/judge] [--max-model-len 8192]

It prints `port=N` once it listens. benchmarks/client_overhead.py runs it in a process of its own, so that what
is measured against it is the client's own work: the answers cost the server a JSON decode of the request (it
must count the prompts and read the label tokens asked for) and a string join.

Routes, as vLLM answers them:
- `POST /v1/completions` (token-id prompts, `logprob_token_ids`): one choice per prompt, the label tokens'
  logprobs as the first token's top logprobs, keyed `token_id:N` (`return_tokens_as_token_ids`).
- `POST /v1/chat/completions/batch` (vLLM's batch route: `messages` is a list of conversations) and
  `POST /v1/chat/completions`: a `structured_outputs` `choice` request gets its first choice with every choice's
  top logprob; a `response_format` json_schema request (verdict mode) gets a JSON object of the schema's first
  enum value per property and a short rationale.
- `POST /tokenize` (messages): the judge tokenizer's ids for the chat template, as the server's own would be.
- `GET /v1/models` (with `max_model_len`), `/health`, `/metrics` (prefix-cache counters).

Plain asyncio (one Protocol per connection, HTTP/1.1 keep-alive, Content-Length bodies), so that no framework's
per-request work is added; client_overhead.py measures what is left ("the stub alone").
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

MODEL = "judge"
# logprobs of the answer options, by position; three variants so that scores differ between requests
_LOGPROBS = ((-0.105, -2.303, -4.0, -5.0, -6.0), (-1.609, -0.223, -4.0, -5.0, -6.0), (-0.693, -0.693, -4.0, -5.0,
                                                                                         -6.0))


class Answers:
    def __init__(self, tokenizer_path: str | None, max_model_len: int):
        self.max_model_len = max_model_len
        self._tok_path, self._tok = tokenizer_path, None
        self.requests = 0
        self._tops: dict[tuple, list[str]] = {}

    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer
            self._tok = AutoTokenizer.from_pretrained(self._tok_path, local_files_only=True)
        return self._tok

    # -- token-id completions ------------------------------------------------------------------------------------
    def _label_tops(self, labels: tuple) -> list[str]:
        """The `logprobs` object of a choice, per variant, for these label tokens (built once per label set)."""
        if labels not in self._tops:
            out = []
            # whole answers ("PASS", "FAIL") likeliest, as a judge answers; their prefixes ("P", "PA") after them
            texts = self.tokenizer().batch_decode([[t] for t in labels]) if labels else []
            ranked = [t for _, t in sorted(zip(texts, labels), key=lambda x: -len(x[0]))]
            for v in _LOGPROBS:
                lps = [v[min(i, len(v) - 1)] - 0.01 * i for i in range(len(ranked))]
                tops = {f"token_id:{t}": lp for t, lp in zip(ranked, lps)} or {"token_id:0": -0.1}
                first = next(iter(tops))
                out.append(json.dumps({"text_offset": [0], "token_logprobs": [tops[first]], "tokens": [first],
                                       "top_logprobs": [tops]}, separators=(",", ":")))
            self._tops[labels] = out
        return self._tops[labels]

    def completions(self, body: dict) -> bytes:
        prompts = body.get("prompt")
        n = len(prompts) if isinstance(prompts, list) and prompts and isinstance(prompts[0], list) else 1
        tops = self._label_tops(tuple(body.get("logprob_token_ids") or ()))
        choices = ",".join(f'{{"index":{i},"text":"x","logprobs":{tops[i % 3]},"finish_reason":"length",'
                           f'"stop_reason":null}}' for i in range(n))
        return (f'{{"id":"cmpl-stub","object":"text_completion","created":0,"model":"{MODEL}","choices":[{choices}],'
                f'"usage":{{"prompt_tokens":0,"completion_tokens":{n},"total_tokens":{n}}}}}').encode()

    # -- chat ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _choice_options(body: dict) -> list[str]:
        so = body.get("structured_outputs") or (body.get("extra_body") or {}).get("structured_outputs") or {}
        return list(so.get("choice") or ["PASS", "FAIL"])

    def _one_token_choice(self, i: int, options: list[str]) -> dict:
        lps = _LOGPROBS[i % 3]
        tops = [{"token": o, "logprob": lps[min(k, len(lps) - 1)], "bytes": None} for k, o in enumerate(options)]
        best = max(tops, key=lambda t: t["logprob"])
        return {"index": i, "message": {"role": "assistant", "content": best["token"]},
                "logprobs": {"content": [dict(best, top_logprobs=tops)]}, "finish_reason": "stop"}

    @staticmethod
    def _verdict_choice(i: int, body: dict) -> dict:
        schema = body["response_format"]["json_schema"]["schema"]
        verdict = {name: (p["enum"][i % len(p["enum"])] if "enum" in p else "A canned rationale for the stub.")
                   for name, p in schema.get("properties", {}).items()}
        return {"index": i, "message": {"role": "assistant", "content": json.dumps(verdict)}, "logprobs": None,
                "finish_reason": "stop"}

    def chat(self, body: dict) -> bytes:
        self.requests += 1
        choice = (self._verdict_choice(self.requests, body) if body.get("response_format")
                  else self._one_token_choice(self.requests, self._choice_options(body)))
        return json.dumps({"id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": MODEL,
                           "choices": [choice], "usage": {"prompt_tokens": 0, "completion_tokens": 1,
                                                          "total_tokens": 1}}).encode()

    def chat_batch(self, body: dict) -> bytes:
        options = self._choice_options(body)
        n = len(body.get("messages") or [])
        rest = []  # each variant's choice without its index, which is written per conversation
        for k in range(3):
            c = self._one_token_choice(k, options)
            del c["index"]
            rest.append(json.dumps(c)[1:])
        choices = ",".join(f'{{"index":{i},{rest[i % 3]}' for i in range(n))
        return f'{{"id":"chatcmpl-stub","object":"chat.completion","created":0,"model":"{MODEL}","choices":[{choices}]}}'\
            .encode()

    def tokenize(self, body: dict) -> bytes:
        tok = self.tokenizer()
        text = tok.apply_chat_template(body["messages"], add_generation_prompt=body.get("add_generation_prompt", True),
                                       tokenize=False, **(body.get("chat_template_kwargs") or {}))
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        return json.dumps({"count": len(ids), "max_model_len": self.max_model_len, "tokens": ids,
                           "token_strs": None}).encode()

    def models(self) -> bytes:
        return json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                       "owned_by": "stub", "root": MODEL,
                                                       "max_model_len": self.max_model_len}]}).encode()

    @staticmethod
    def metrics() -> bytes:
        return (b'vllm:prefix_cache_queries_total{engine="0",model_name="judge"} 100.0\n'
                b'vllm:prefix_cache_hits_total{engine="0",model_name="judge"} 50.0\n')

    def route(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        path = path.split("?", 1)[0]
        if method == "GET":
            if path == "/health":
                return 200, b""
            if path == "/v1/models":
                return 200, self.models()
            if path == "/metrics":
                return 200, self.metrics()
            return 404, b'{"error":"not found"}'
        handlers = {"/v1/completions": self.completions, "/v1/chat/completions/batch": self.chat_batch,
                    "/v1/chat/completions": self.chat, "/tokenize": self.tokenize}
        if path not in handlers:
            return 404, b'{"error":"not found"}'
        try:
            return 200, handlers[path](json.loads(body))
        except (ValueError, KeyError, TypeError) as e:
            return 400, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 411: b"Length Required"}


class HttpConnection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies (what httpx and the openai SDK send)."""

    def __init__(self, answers: Answers):
        self.answers = answers
        self.buf = bytearray()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length, chunked = 0, False
            for line in lines[1:]:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "content-length":
                    length = int(value)
                elif key == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            status, payload = (411, b"") if chunked else self.answers.route(method, path, body)
            ctype = b"text/plain" if path.startswith("/metrics") else b"application/json"
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
                                 % (status, _REASONS.get(status, b"?"), ctype, len(payload)) + payload)
            if chunked:
                self.transport.close()
                return


async def serve(port: int, answers: Answers) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpConnection(answers), "127.0.0.1", port, backlog=1024)
    print(f"port={server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tokenizer", default=os.path.join("artifacts", "tiny", "judge"),
                    help="the judge tokenizer /tokenize answers with (must be the client's)")
    ap.add_argument("--max-model-len", type=int, default=8192, help="the context /v1/models reports")
    a = ap.parse_args(argv)
    try:
        asyncio.run(serve(a.port, Answers(a.tokenizer, a.max_model_len)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
