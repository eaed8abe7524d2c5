"""This process and its children: environment defaults, job logging, the one subprocess runner, ``free_port``,
and a memory probe.

Why one module: the nearline steps, the training jobs, the local Airflow harness and the demo all launch
subprocesses whose output must stream to the log line by line (in Airflow the task log is where operators look
first) and whose failure must carry the tail of that output; and every job process must start with the same
offline/tokenizer environment and the same log format. Everything here is stdlib (psutil inside
:class:`PeakMemory`).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from qp_core import paths

logger = logging.getLogger(__name__)

#: set (if unset) in every job process and step subprocess: no Hugging Face hub calls (models are local files),
#: no tokenizers thread pool fighting the engine's / trainer's own threads
ENV_DEFAULTS = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def apply_env_defaults(env: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """Set :data:`ENV_DEFAULTS` (and ``extra``) where unset, in ``env`` (default: this process's environment)."""
    target = os.environ if env is None else env
    for key, value in {**ENV_DEFAULTS, **extra}.items():
        target.setdefault(key, value)
    return target


def setup_job_logging() -> None:
    """INFO logs for our own modules (row counts, step progress), WARN for everything else; idempotent.

    Every job (``jobs/*.py``), and the tools that run like one, calls this first.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    logging.getLogger("qp_core").setLevel(logging.INFO)
    logging.getLogger("jobs").setLevel(logging.INFO)


class StepFailed(RuntimeError):
    """A step's subprocess exited non-zero; carries the command and the tail of its output."""

    def __init__(self, name: str, returncode: int, cmd: list[str], tail: str):
        self.name, self.returncode, self.cmd, self.tail = name, returncode, cmd, tail
        super().__init__(f"step {name!r} failed with exit code {returncode}: {' '.join(cmd)}\n--- last output ---\n{tail}")


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a step: ours, with an absolute QP_HOME and the repo importable."""
    env = dict(os.environ)
    env["QP_HOME"] = str(paths.qp_home())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(paths.REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    apply_env_defaults(env)
    env.update(extra or {})
    return env


def run_command(cmd: list[str], *, env: dict | None = None, check: bool = True, timeout: float | None = None,
                label: str = "step", tail_lines: int = 60, on_line: Callable[[str], None] | None = None,
                log_path: Path | None = None) -> int:
    """Run ``cmd``, streaming every output line to the log as ``[label] line``; raise on failure.

    Streaming (not capturing) matters: in Airflow the task log is where operators look first. ``on_line``
    replaces the per-line log call (the demo echoes a selection of lines); ``log_path`` also keeps the
    full output in a file.
    """
    logger.info("[%s] $ %s", label, " ".join(cmd))
    tail: deque[str] = deque(maxlen=tail_lines)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env if env is not None else subprocess_env(), cwd=str(paths.REPO_ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            bufsize=1)
    log = None
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "w", encoding="utf-8")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if log is not None:
                log.write(line)
            line = line.rstrip("\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)
            else:
                logger.info("[%s] %s", label, line)
            if timeout is not None and time.monotonic() - t0 > timeout:
                proc.kill()
                raise TimeoutError(f"[{label}] exceeded {timeout:.0f}s")
        rc = proc.wait(timeout=None if timeout is None else max(1.0, timeout - (time.monotonic() - t0)))
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        if log is not None:
            log.close()
    logger.info("[%s] exit %d after %.1fs", label, rc, time.monotonic() - t0)
    if check and rc != 0:
        raise StepFailed(label, rc, cmd, "\n".join(tail))
    return rc


def free_port() -> int:
    """A free TCP port on the loopback interface (for private redis-servers and Airflow API servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeakMemory:
    """Samples the RSS of this process and all its descendants; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
