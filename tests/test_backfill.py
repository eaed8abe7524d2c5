"""Backfill both ways over two dates of the small world: Airflow's native backfill against a real
``airflow standalone`` (free port, private AIRFLOW_HOME), then the serial ``qp backfill`` over the same dates —
which must leave the lake partitions and the KV contents exactly as the Airflow backfill left them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from qp_core.ops import airflow_local
from qp_core.ops.process import free_port
from tests.fixtures.airflow import kv_snapshot, lake_snapshot, pipeline_sandbox

DATES = ["2026-11-01", "2026-11-02"]


def test_backfill_cli_rejects_bad_ranges():
    from qp_core.cli import app

    result = CliRunner().invoke(app, ["backfill", "--start", "2026-11-02", "--end", "2026-11-01"])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["backfill", "--start", "2026-11-31", "--end", "2026-12-01"])
    assert result.exit_code == 2


def test_serial_backfill_without_model_fails_cleanly(tmp_path, monkeypatch):
    from qp_core.cli import app

    monkeypatch.setenv("QP_REGISTRY", str(tmp_path / "empty-registry"))
    result = CliRunner().invoke(app, ["backfill", "--start", "2026-11-01", "--end", "2026-11-01"])
    assert result.exit_code == 1


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, small_world, redis_url, tiny_model_dir):
    with pipeline_sandbox(tmp_path_factory.mktemp("backfill"), small_world, redis_url, tiny_model_dir, db=8) as box:
        yield box


@pytest.fixture(scope="module")
def native_backfill(sandbox):
    """``airflow backfill create`` for 2 dates against ``airflow standalone``; stopped cleanly afterwards."""
    home = sandbox["root"] / "airflow"
    port = free_port()
    proc = airflow_local.start_standalone(home, api_port=port)
    try:
        airflow_local.wait_for_api(port, proc=proc, timeout=600)
        states = airflow_local.native_backfill("qp_nearline_daily", DATES[0], DATES[-1], home=home, api_port=port,
                                              timeout=2400, poll_s=10)
    finally:
        rc = airflow_local.stop_standalone(proc)
    return {"states": states, "stop_rc": rc, "proc": proc, "port": port, "home": home,
            "lake": {dt: lake_snapshot(sandbox["lake"], dt) for dt in DATES}, "kv": kv_snapshot(sandbox["url"])}


@pytest.mark.slow
@pytest.mark.airflow
def test_airflow_native_backfill_runs_both_dates(native_backfill):
    assert native_backfill["states"] == {DATES[0]: "success", DATES[1]: "success"}
    # stopped cleanly: the process group is gone and the API port is free again
    assert native_backfill["proc"].poll() is not None
    import socket

    with socket.socket() as s:
        # SO_REUSEADDR: the closed API connections may linger in TIME_WAIT; a live listener still fails the bind
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", native_backfill["port"]))
    # both dates were published: the namespace holds results stamped with each date
    import json

    dts = {json.loads(v).get("dt") for k, v in native_backfill["kv"].items()
           if isinstance(v, str) and k.count(":") == 2 and "{" not in k}  # control keys carry the {qp} tag
    assert set(DATES) <= dts


@pytest.mark.slow
@pytest.mark.airflow
def test_serial_backfill_matches_the_airflow_backfill(native_backfill, sandbox):
    """`qp backfill` (CLI, subprocess) over the same dates: the same steps, so nothing changes."""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "qp_core.cli", "backfill", "--start", DATES[0], "--end", DATES[-1]],
                          env=env, capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for dt in DATES:
        after = lake_snapshot(sandbox["lake"], dt)
        assert set(after) == set(native_backfill["lake"][dt])
        for key in after:
            assert after[key] == native_backfill["lake"][dt][key], f"{dt}: {key} differs"
    assert kv_snapshot(sandbox["url"]) == native_backfill["kv"]
