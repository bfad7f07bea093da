"""A local Bedrock-runtime `Converse` endpoint backed by the open judge.

    rlaif nova gateway --judge RECIPE.yaml [--port N]
    export AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:N AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x

Unmodified boto3 code (`boto3.client("bedrock-runtime").converse(modelId=..., messages=..., system=...,
inferenceConfig=...)`) then runs against the recipe's judge: reward Lambdas written for Bedrock judges, and the
Lambda `rlaif nova export-lambda` writes. Any `modelId` is answered by the judge (a Lambda's Bedrock model id need
not change); the reply has Bedrock's shape (`output.message.content[].text`, `stopReason`, `usage`, `metrics`).
Errors use Bedrock's error types and status codes (`x-amzn-ErrorType`), so boto3's own retry logic treats a
throttled or unavailable judge as it would treat Bedrock.

Security: it binds 127.0.0.1 unless told otherwise and refuses any other address without an API key; with a key,
a request must carry it as a bearer token (`AWS_BEARER_TOKEN_BEDROCK`) or as the SigV4 access key id.
"""
from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import time
import uuid

from rlaif.errors import UserError
from rlaif.judge.urls import api_url, is_loopback

log = logging.getLogger("rlaif.nova.gateway")

_ERROR_STATUS = {"ValidationException": 400, "AccessDeniedException": 403, "ResourceNotFoundException": 404,
                 "ModelTimeoutException": 408, "ThrottlingException": 429, "ModelErrorException": 424,
                 "InternalServerException": 500, "ServiceUnavailableException": 503,
                 "UnknownOperationException": 404}
_STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "content_filtered"}
_SIGV4_KEY = re.compile(r"Credential=([^/,\s]+)/")


class BedrockError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def check_bind(host: str, api_key: str | None) -> None:
    """Loopback by default; anything else only with an API key, so a judge is never open to a network."""
    if not is_loopback(host) and not api_key:
        raise UserError(f"refusing to bind {host} without an API key: the gateway would serve the judge to anyone "
                        "who can reach this machine. Pass --api-key (or RLAIF_GATEWAY_API_KEY), or bind 127.0.0.1")


def _text_blocks(blocks, where: str) -> str:
    if not isinstance(blocks, list) or not blocks:
        raise BedrockError("ValidationException", f"{where}: must be a non-empty list of content blocks")
    parts = []
    for i, b in enumerate(blocks):
        if not isinstance(b, dict) or "text" not in b:
            kinds = ", ".join(sorted(b)) if isinstance(b, dict) else type(b).__name__
            raise BedrockError("ValidationException",
                               f"{where}[{i}]: only text content blocks are supported by this judge (got {kinds})")
        if not isinstance(b["text"], str):
            raise BedrockError("ValidationException", f"{where}[{i}].text: must be a string")
        parts.append(b["text"])
    return "".join(parts)


def to_chat_request(body: dict, served_model: str) -> dict:
    """A Converse request body -> OpenAI chat-completions keyword arguments for the judge server."""
    if not isinstance(body, dict):
        raise BedrockError("ValidationException", "request body must be a JSON object")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BedrockError("ValidationException", "messages: must be a non-empty list")
    chat = []
    system = body.get("system")
    if system:
        chat.append({"role": "system", "content": "\n".join(
            _text_blocks([b], f"system[{i}]") for i, b in enumerate(system))})
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise BedrockError("ValidationException", f"messages[{i}].role: must be 'user' or 'assistant'")
        chat.append({"role": m["role"], "content": _text_blocks(m.get("content"), f"messages[{i}].content")})
    if msgs[0].get("role") != "user":
        raise BedrockError("ValidationException", "messages: a conversation must start with a user message")
    kw: dict = {"model": served_model, "messages": chat}
    cfg = body.get("inferenceConfig") or {}
    if not isinstance(cfg, dict):
        raise BedrockError("ValidationException", "inferenceConfig: must be an object")
    for src, dst, typ in (("maxTokens", "max_tokens", int), ("temperature", "temperature", (int, float)),
                          ("topP", "top_p", (int, float)), ("stopSequences", "stop", list)):
        if src in cfg:
            if not isinstance(cfg[src], typ) or isinstance(cfg[src], bool):
                raise BedrockError("ValidationException", f"inferenceConfig.{src}: wrong type")
            kw[dst] = cfg[src]
    if "max_tokens" in kw and kw["max_tokens"] < 1:
        raise BedrockError("ValidationException", "inferenceConfig.maxTokens: must be at least 1")
    fmt = ((body.get("outputConfig") or {}).get("textFormat") or {})
    if fmt:
        if fmt.get("type") != "json_schema":
            raise BedrockError("ValidationException", "outputConfig.textFormat.type: only json_schema is supported")
        spec = (fmt.get("structure") or {}).get("jsonSchema") or {}
        try:
            schema = json.loads(spec.get("schema", ""))
        except (TypeError, json.JSONDecodeError) as e:
            raise BedrockError("ValidationException",
                               f"outputConfig.textFormat.structure.jsonSchema.schema: not JSON: {e}") from None
        kw["response_format"] = {"type": "json_schema",
                                 "json_schema": {"name": spec.get("name") or "output", "schema": schema,
                                                 "strict": True}}
    return kw


def to_converse_response(resp, latency_ms: int) -> dict:
    choice = resp.choices[0]
    stop = _STOP.get(choice.finish_reason or "stop", "end_turn")
    if stop == "end_turn" and isinstance(getattr(choice, "stop_reason", None), str):
        stop = "stop_sequence"  # vLLM names the matched stop string here; Bedrock calls that stop_sequence
    usage = resp.usage
    inp, out = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    return {"output": {"message": {"role": "assistant", "content": [{"text": choice.message.content or ""}]}},
            "stopReason": stop,
            "usage": {"inputTokens": inp, "outputTokens": out, "totalTokens": inp + out},
            "metrics": {"latencyMs": latency_ms}}


def _error_from_upstream(e: Exception) -> BedrockError:
    """The judge server's failure, as the Bedrock error a boto3 caller knows how to handle."""
    import openai
    if isinstance(e, openai.APITimeoutError):
        return BedrockError("ModelTimeoutException", f"the judge did not answer in time: {e}")
    if isinstance(e, openai.APIConnectionError):
        return BedrockError("ServiceUnavailableException", f"the judge server is unreachable: {e}")
    if isinstance(e, openai.APIStatusError):
        code = e.status_code
        if code == 429:
            return BedrockError("ThrottlingException", "the judge server is busy (429); slow down")
        if code in (400, 422):
            return BedrockError("ValidationException", f"the judge refused the request: {e.message}")
        if code == 404:
            return BedrockError("ResourceNotFoundException", f"the judge server does not serve this model: {e.message}")
        if code == 503:
            return BedrockError("ServiceUnavailableException", f"the judge server is unavailable: {e.message}")
        return BedrockError("InternalServerException", f"the judge server failed ({code}): {e.message}")
    return BedrockError("InternalServerException", f"{type(e).__name__}: {e}")


def build_app(judge_url: str, served_model: str, api_key: str | None = None, judge_api_key: str | None = None,
              timeout_s: float = 120.0):
    """The Starlette app. `judge_url` is an OpenAI-compatible server (the recipe's vLLM judge)."""
    import openai
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    if not isinstance(judge_url, str):
        judge_url = judge_url[0]  # several judge servers: the gateway uses the first
    # no client-side retries: the caller's boto3 retries, on the error types it knows, as against Bedrock
    client = openai.AsyncOpenAI(base_url=api_url(judge_url), api_key=judge_api_key or "EMPTY", timeout=timeout_s,
                                max_retries=0)
    seen_ids: set[str] = set()
    counters = {"requests": 0, "errors": 0}

    def error(kind: str, message: str) -> JSONResponse:
        counters["errors"] += 1
        return JSONResponse({"message": message}, status_code=_ERROR_STATUS[kind],
                            headers={"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                                     "x-amzn-RequestId": str(uuid.uuid4())})

    def authorised(request: Request) -> bool:
        if not api_key:
            return True
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return hmac.compare_digest(auth[7:].strip(), api_key)
        m = _SIGV4_KEY.search(auth)
        return bool(m) and hmac.compare_digest(m.group(1), api_key)

    async def converse(request: Request):
        counters["requests"] += 1
        if not authorised(request):
            return error("AccessDeniedException", "missing or wrong API key for this gateway")
        model_id = request.path_params["model_id"]
        if model_id not in seen_ids:
            seen_ids.add(model_id)
            log.info("modelId %r is answered by the judge '%s'", model_id, served_model)
        try:
            body = json.loads(await request.body() or b"{}")
            kw = to_chat_request(body, served_model)
        except json.JSONDecodeError as e:
            return error("ValidationException", f"request body is not JSON: {e.msg}")
        except BedrockError as e:
            return error(e.kind, e.message)
        t0 = time.perf_counter()
        try:
            resp = await client.chat.completions.create(**kw)
        except Exception as e:  # every upstream failure becomes a Bedrock error, never a bare 500 trace
            be = _error_from_upstream(e)
            log.warning("converse %s -> %s: %s", model_id, be.kind, be.message)
            return error(be.kind, be.message)
        if not resp.choices:
            return error("ModelErrorException", "the judge returned no choices")
        out = to_converse_response(resp, int((time.perf_counter() - t0) * 1000))
        return JSONResponse(out, headers={"x-amzn-RequestId": str(uuid.uuid4())})

    async def unknown(request: Request):
        return error("UnknownOperationException",
                     f"{request.method} {request.url.path}: this gateway serves only POST /model/{{modelId}}/converse")

    async def ping(request: Request):
        return JSONResponse({"status": "ok", "judge": served_model} | counters)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await client.close()  # on the server's own loop, before it closes

    app = Starlette(lifespan=lifespan, routes=[Route("/model/{model_id:path}/converse", converse, methods=["POST"]),
                            Route("/ping", ping, methods=["GET"]),
                            Route("/{rest:path}", unknown, methods=["GET", "POST", "PUT", "DELETE"])])
    app.state.counters = counters
    return app


class Gateway:
    """The app on a bound socket, served by uvicorn in the calling thread (`serve`) or a background one (`start`)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None):
        import socket

        check_bind(host, api_key)
        self.app, self.host = app, host
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as e:
            raise UserError(f"gateway: cannot bind {host}:{port}: {e.strerror}") from None
        self.port = self.sock.getsockname()[1]
        # listening from here: the URL is printed before uvicorn starts, and a client that connects at once must
        # wait in the backlog, not be refused (uvicorn's own listen() on this socket only sets the backlog again)
        self.sock.listen(128)
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _make_server(self):
        import uvicorn
        cfg = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on")
        self._server = uvicorn.Server(cfg)
        return self._server

    def serve(self) -> None:
        self._make_server().run(sockets=[self.sock])

    def start(self) -> "Gateway":
        import threading
        server = self._make_server()
        server.install_signal_handlers = lambda: None  # the main thread keeps Ctrl-C
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                        name="bedrock-gateway")
        self._thread.start()
        deadline = time.time() + 10
        while not server.started and time.time() < deadline and self._thread.is_alive():
            time.sleep(0.02)
        if not server.started:
            raise RuntimeError("the Bedrock gateway did not start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def boto3_env(url: str, api_key: str | None = None) -> dict[str, str]:
    """Environment that points unmodified boto3 code at the gateway (dummy credentials unless a key is set)."""
    env = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": url, "AWS_ACCESS_KEY_ID": api_key or "rlaif-local",
           "AWS_SECRET_ACCESS_KEY": "rlaif-local", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    return env
