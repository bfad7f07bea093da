"""Where a judge server's routes are, and the address it is reached at. Users write a server's URL with or without
`/v1` (`http://127.0.0.1:8000` or `http://127.0.0.1:8000/v1`); both mean the same server."""
from __future__ import annotations

import ipaddress
import socket

WILDCARDS = ("0.0.0.0", "::", "")  # bind addresses that mean every interface of the machine


def server_root(url: str) -> str:
    """The server's own address, for its non-OpenAI routes (/metrics, /tokenize, /health)."""
    return url.rstrip("/").removesuffix("/v1")


def api_url(url: str) -> str:
    """The OpenAI-compatible API's base (`.../v1`), for /v1/models, /v1/chat/completions, /v1/completions."""
    return server_root(url) + "/v1"


def is_loopback(host: str) -> bool:
    """Whether only this machine reaches `host` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _route_source(addr: str) -> str | None:
    """This machine's address on its route to `addr` (a UDP connect picks the route and sends nothing)."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(addr, 9, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(sockaddr)
            return s.getsockname()[0]
    except OSError:
        return None


def reachable_host(bind_host: str, master_addr: str | None = None) -> str:
    """The address other machines reach a server at that binds `bind_host`. One address: that one. Every interface
    (0.0.0.0, which a client on another node takes as itself): this machine's address on the route to the run's
    MASTER_ADDR (the network the nodes share), else its fully qualified name where that is not loopback, else its
    address on the default route."""
    if bind_host not in WILDCARDS:
        return bind_host
    if master_addr and not is_loopback(master_addr):
        if (here := _route_source(master_addr)) and not is_loopback(here):
            return here
    name = socket.getfqdn()
    try:
        if not all(is_loopback(info[4][0]) for info in socket.getaddrinfo(name, None)):
            return name
    except OSError:
        pass
    return _route_source("198.51.100.1") or name  # a documentation address: only the default route is asked
