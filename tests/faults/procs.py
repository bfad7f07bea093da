"""Helpers for fault tests that drive real processes: wait for a condition, read a file that may not exist yet,
list a session's live processes, kill a process tree."""
import os
import sys
import time

RLAIF = [sys.executable, "-m", "rlaif.cli"]


def wait_for(cond, timeout, what, poll_s=0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def session(sid):
    """Every live process of a session (the judge server's: it leads its own, with its engine processes)."""
    import psutil
    out = []
    for proc in psutil.process_iter(["pid", "name", "status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (ProcessLookupError, PermissionError):
            pass
    return out


def kill_tree(pid):
    """torchrun starts its workers in sessions of their own: a kill of its group would leave them."""
    import psutil
    try:
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for q in procs:
        try:
            q.kill()
        except psutil.NoSuchProcess:
            pass


def without_tiny_models(tmp_path):
    """Overrides that let recipes/smoke.yaml load before `make models` (the unit lane): hub-style model ids that are
    never loaded and an empty training file, for tests whose servers are stand-ins."""
    train = tmp_path / "train.jsonl"
    train.touch()
    return [f"data.train={train}", "data.eval=null", "judge.canaries=null", "policy.model=tiny/policy",
            "judge.model=tiny/judge"]


def listening_port(pid):
    """The TCP port the process `pid` listens on (a judge server's API process)."""
    import psutil
    ports = [c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert ports, f"process {pid} listens on no TCP port"
    return ports[0]


def _server_side(port):
    """(client port, unread bytes) of every connection to `port`, from the server's side: the rx_queue column of
    /proc/net/tcp and tcp6 (local address in field 1, remote in field 2, hex ports)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                yield int(fields[2].rsplit(":", 1)[1], 16), int(fields[4].split(":")[1], 16)


def unread_bytes_at(port):
    """Bytes that have reached the server side of a connection to `port` and that nobody has read yet: a request a
    stopped server holds, and its client waits for."""
    return sum(unread for _, unread in _server_side(port))


def held_request_ports(port, min_bytes=1):
    """The client-side ports of the connections to `port` with at least `min_bytes` the server has not read (see
    unread_bytes_at): which clients have a request a stopped server holds."""
    return {client for client, unread in _server_side(port) if unread >= min_bytes}


def holds_a_request_from(pid, port, held):
    """Whether process `pid` has a connection to `port` among those whose request is held (`held_request_ports`)."""
    import psutil
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.raddr and c.raddr.port == port and c.laddr.port in held for c in conns)
