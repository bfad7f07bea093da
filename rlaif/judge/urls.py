"""Where a judge server's routes are. Users write a server's URL with or without `/v1`
(`http://127.0.0.1:8000` or `http://127.0.0.1:8000/v1`); both mean the same server."""
from __future__ import annotations


def server_root(url: str) -> str:
    """The server's own address, for its non-OpenAI routes (/metrics, /tokenize, /health)."""
    return url.rstrip("/").removesuffix("/v1")


def api_url(url: str) -> str:
    """The OpenAI-compatible API's base (`.../v1`), for /v1/models, /v1/chat/completions, /v1/completions."""
    return server_root(url) + "/v1"
