"""Loopback ports for the servers rlaif starts (judge and policy vLLM servers, vLLM's torch.distributed rendezvous).

A port found free is free only at that moment: the server binds it later, and another program (or a parallel test
session) may take it first. `free_port` never hands out the same port twice in one process, so servers launched
back to back by one run cannot collide with each other; a server that finds its port taken by someone else is
started again on another (rlaif/judge/server.py: start_servers).
"""
from __future__ import annotations

import socket
import threading

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to on `host` now, and not one this process handed out before."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with _lock:
        for _ in range(100):
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise OSError(f"no free port on {host} that this process has not handed out already")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        # as servers bind (uvicorn sets it): connections of a killed server in TIME_WAIT do not hold the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False
