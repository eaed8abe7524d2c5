"""A self-contained local Airflow for the demo, tests and laptop backfills.

Why a module for this: Airflow reads its configuration (AIRFLOW_HOME, DAG folder, API port, execution API
URL) once, at import, so every way we start it (``airflow dags test`` for the demo, ``dag.test()`` in
pytest, ``airflow standalone`` for native backfill) must see the same environment *before* Airflow is
imported. This module builds that environment (a SQLite home under ``$QP_HOME/airflow`` by default),
migrates its database once, and wraps the three Airflow entry points we use. It never imports Airflow
itself (``qp_core`` stays Airflow-free); it only runs the ``airflow`` CLI of the current interpreter.

Measured pitfalls it encodes (DESIGN §5): DAGs must be unpaused at creation for ``airflow backfill create``
to make progress, and the execution API URL must point at the API server's port, otherwise task
processes cannot report back and runs hang in ``queued``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from qp_core.lake import date_range
from qp_core.ops.airflow_settings import settings
from qp_core.ops.process import run_command
from qp_core.paths import REPO_ROOT, qp_home

logger = logging.getLogger(__name__)

DAGS_FOLDER = REPO_ROOT / "dags"


def home_dir() -> Path:
    """The local AIRFLOW_HOME: ``$QP_AIRFLOW_HOME`` or ``$QP_HOME/airflow``."""
    env = os.environ.get("QP_AIRFLOW_HOME")
    return Path(env).resolve() if env else qp_home() / "airflow"


def airflow_env(home: Path | None = None, *, api_port: int | None = None, base: dict | None = None) -> dict[str, str]:
    """Environment for any Airflow process of the local home (CLI, standalone, in-process tests).

    ``QP_HOME`` is made absolute because task processes do not share the caller's working directory.
    """
    home = Path(home or home_dir()).resolve()
    port = api_port or settings().api_port
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "QP_HOME": str(qp_home()),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
            "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "2"),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            # A local home runs what it is asked to (dags test, backfills), never the cron schedules: an
            # unpaused DAG would otherwise start "yesterday's" run and a training chain on its own.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": env.get("QP_AIRFLOW_USE_JOB_SCHEDULE", "False"),
        }
    )
    # standalone spawns `airflow ...` by name: this interpreter's bin dir must come first on PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # the repo must be importable by task processes even without `pip install -e .`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def apply_env(home: Path | None = None, *, api_port: int | None = None) -> Path:
    """Set the Airflow environment in *this* process; call before the first ``import airflow``."""
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(Path(home or home_dir()).resolve()):
        logger.warning("airflow already imported with AIRFLOW_HOME=%s; new settings may not apply",
                       os.environ.get("AIRFLOW_HOME"))
    env = airflow_env(home, api_port=api_port)
    for key in [k for k in env if k.startswith("AIRFLOW") or k in ("QP_HOME", "PYTHONPATH", "PATH")]:
        os.environ[key] = env[key]
    return Path(env["AIRFLOW_HOME"])


def airflow_cli() -> list[str]:
    """The ``airflow`` command of this interpreter's environment."""
    exe = Path(sys.executable).with_name("airflow")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "airflow"]


def run_cli(args: list[str], *, home: Path | None = None, api_port: int | None = None, check: bool = True,
            capture: bool = False, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``airflow <args>`` against the local home; output streams to our log unless captured."""
    env = airflow_env(home, api_port=api_port)
    cmd = airflow_cli() + args
    logger.info("$ airflow %s", " ".join(args))
    if capture:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    else:
        rc = run_command(cmd, env=env, check=False, timeout=timeout, label="airflow")
        proc = subprocess.CompletedProcess(cmd, rc)
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "")[-2000:] if capture else ""
        raise RuntimeError(f"airflow {' '.join(args)} failed (exit {proc.returncode}) {tail}")
    return proc


def ensure_db(home: Path | None = None) -> Path:
    """Create the home and migrate its SQLite metadata DB (idempotent; ~5 s the first time)."""
    home = Path(home or home_dir()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    stamp = home / ".qp_migrated"
    if not (stamp.exists() and (home / "airflow.db").exists()):
        run_cli(["db", "migrate"], home=home, capture=True)
        stamp.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return home


def dags_test(dag_id: str, logical_date: str, conf: dict | None = None, *, home: Path | None = None,
              timeout: float | None = None) -> str:
    """Run one DAG run in-process through Airflow (``airflow dags test``) and return its final state.

    ``airflow dags test`` exits 0 even when a task failed, so the state is read back from the DB.
    """
    home = ensure_db(home)
    args = ["dags", "test", dag_id, logical_date]
    if conf:
        args += ["-c", json.dumps(conf)]
    run_cli(args, home=home, check=False, timeout=timeout)
    return last_run_state(dag_id, home=home)


def last_run_state(dag_id: str, *, home: Path | None = None) -> str:
    """State of the most recent run of ``dag_id`` in the local home ('success', 'failed', ... or 'none')."""
    proc = run_cli(["dags", "list-runs", dag_id, "-o", "json"], home=home, capture=True, check=False)
    runs = json_output(proc.stdout) or []
    if not runs:
        return "none"
    runs.sort(key=lambda r: r.get("start_date") or r.get("run_after") or "", reverse=True)
    return runs[0].get("state", "none")


def json_output(stdout: str):
    """The JSON document an ``airflow ... -o json`` command printed (warnings may precede it), or None."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith(("[", "{")):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


# ---------------------------------------------------------------------------------------------------
# `airflow standalone` (needed by native backfill: the scheduler must be running)


def wait_for_api(port: int, *, timeout: float = 180, proc: subprocess.Popen | None = None) -> None:
    """Block until the API server answers on ``port``; fail fast if ``proc`` dies."""
    import urllib.request

    deadline = time.monotonic() + timeout
    url = f"http://localhost:{port}/api/v2/monitor/health"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"airflow standalone exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise TimeoutError(f"Airflow API not up on port {port} after {timeout:.0f}s")


def start_standalone(home: Path | None = None, *, api_port: int | None = None,
                     log_path: Path | None = None) -> subprocess.Popen:
    """Start ``airflow standalone`` (API server, scheduler, DAG processor, triggerer) in its own session."""
    home = ensure_db(home)
    port = api_port or settings().api_port
    env = airflow_env(home, api_port=port)
    log_path = Path(log_path or home / "standalone.log")
    logger.info("starting airflow standalone on port %d (home %s, log %s)", port, home, log_path)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(airflow_cli() + ["standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    (home / "standalone.pid").write_text(str(proc.pid))
    return proc


def stop_standalone(proc: subprocess.Popen, *, timeout: float = 60) -> int:
    """Stop a standalone started by :func:`start_standalone` (SIGTERM to its own process group)."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
    _wait_group_gone(proc.pid, timeout=30)
    return proc.returncode if proc.returncode is not None else 0


def _wait_group_gone(pgid: int, *, timeout: float) -> None:
    """Standalone's children (API server workers, scheduler, ...) share its process group and may outlive the
    leader by a moment; wait for all of them (SIGKILL after ``timeout``) so the API port is really free."""
    import signal

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.5)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for_dag(dag_id: str, *, home: Path | None = None, api_port: int | None = None, timeout: float = 300) -> None:
    """Block until the DAG processor has serialised ``dag_id`` into the metadata DB (backfill needs it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = run_cli(["dags", "list", "-o", "json"], home=home, api_port=api_port, capture=True, check=False)
        if any(d.get("dag_id") == dag_id for d in (json_output(proc.stdout) or [])):
            return
        time.sleep(5)
    raise TimeoutError(f"DAG {dag_id} not parsed by the DAG processor after {timeout:.0f}s")


def list_runs(dag_id: str, *, home: Path | None = None, api_port: int | None = None) -> list[dict]:
    proc = run_cli(["dags", "list-runs", dag_id, "-o", "json"], home=home, api_port=api_port, capture=True,
                   check=False)
    return json_output(proc.stdout) or []


def native_backfill(dag_id: str, start: str, end: str, *, home: Path | None = None, api_port: int | None = None,
                    max_active_runs: int = 1, timeout: float = 3600, poll_s: float = 15,
                    on_poll=None) -> dict[str, str]:
    """Airflow's own backfill (``airflow backfill create``) against a running scheduler; waits for the runs.

    Returns {logical date (YYYY-MM-DD): final state}. Needs ``airflow standalone`` (or a scheduler) on the
    same home and API port: :func:`start_standalone`. The DAG is unpaused first (a paused DAG's backfill
    runs never start), and ``--max-active-runs`` keeps dates in order so each day sees the previous KV state.
    """
    dates = date_range(start, end)
    wait_for_dag(dag_id, home=home, api_port=api_port)
    run_cli(["dags", "unpause", dag_id], home=home, api_port=api_port, capture=True)
    run_cli(["backfill", "create", "--dag-id", dag_id, "--from-date", start, "--to-date", end,
             "--max-active-runs", str(max_active_runs), "--reprocess-behavior", "completed"],
            home=home, api_port=api_port, capture=True)
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        runs = [r for r in list_runs(dag_id, home=home, api_port=api_port) if r.get("run_type") == "backfill"
                or str(r.get("run_id", "")).startswith("backfill")]
        states = {str(r.get("logical_date", ""))[:10]: r.get("state") for r in runs}
        states = {d: states[d] for d in dates if d in states}
        if on_poll:
            on_poll(states)
        if len(states) == len(dates) and all(s in ("success", "failed") for s in states.values()):
            return states
        time.sleep(poll_s)
    raise TimeoutError(f"backfill {start}..{end} of {dag_id} not finished after {timeout:.0f}s: {states}")
