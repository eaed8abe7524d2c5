"""DAG tests: both DAGs parse fast through Airflow's own DagBag, import nothing heavy, and wire the steps
of ``qp_core.nearline.steps`` in order with the configured retries, pools/queues, sensor mode and assets."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from qp_core import lake
from qp_core.nearline import steps
from qp_core.ops import airflow_local, airflow_settings, process
from qp_core.training import steps as training_steps

pytestmark = pytest.mark.airflow

HEAVY = ("torch", "pyspark", "vllm", "transformers", "trl", "redis", "pandas", "sklearn", "jieba")


def test_dagbag_has_both_dags_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"qp_nearline_daily", "qp_training_chain"} <= set(dagbag.dag_ids)


def test_each_dag_file_parses_well_under_a_second(dagbag):
    stats = {os.path.basename(s.file): s.duration for s in dagbag.dagbag_stats}
    assert set(stats) >= {"qp_nearline_daily.py", "qp_training_chain.py"}
    for name, duration in stats.items():
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        assert seconds < 0.5, f"{name} took {seconds:.3f}s to parse"


@pytest.mark.parametrize("dag_file", ["qp_nearline_daily", "qp_training_chain"])
def test_dag_module_imports_nothing_heavy(dag_file):
    """In a fresh interpreter, importing a DAG file on top of airflow.sdk adds no heavy framework."""
    code = (
        "import sys, time, importlib.util, airflow.sdk\n"
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('d', {str(airflow_local.DAGS_FOLDER / (dag_file + '.py'))!r})\n"
        "t = time.perf_counter(); m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "dt = time.perf_counter() - t\n"
        "new = sorted({n.split('.')[0] for n in set(sys.modules) - before})\n"
        "print('RESULT', dt, ' '.join(new))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=airflow_local.airflow_env(), capture_output=True,
                         text=True, timeout=120)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, out.stderr[-2000:]
    _, seconds, *mods = line[0].split(" ")
    assert float(seconds) < 0.5
    assert not set(HEAVY) & set(mods), f"heavy modules imported at parse time: {set(HEAVY) & set(mods)}"


def test_airflow_cli_reports_no_import_errors(airflow_db):
    proc = airflow_local.run_cli(["dags", "list-import-errors", "-l", "-o", "json"], home=airflow_db,
                                capture=True, timeout=120)
    out = proc.stdout.strip()
    assert out.endswith("No data found") or airflow_local.json_output(out) == [], out


def test_nearline_dag_runs_pipeline_steps_in_order(dagbag):
    dag = dagbag.get_dag("qp_nearline_daily")
    order = ["partition_date", "wait_for_query_log", "resolve_target", *steps.STEP_NAMES]
    assert set(order) == set(dag.task_ids)
    for up, down in zip(order, order[1:]):
        assert up in dag.get_task(down).upstream_task_ids, f"{up} -> {down} missing"


def test_nearline_dag_operational_settings(dagbag):
    s = airflow_settings.settings()
    dag = dagbag.get_dag("qp_nearline_daily")
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert dag.max_active_runs == s.max_active_runs
    assert dag.catchup is False
    sensor = dag.get_task("wait_for_query_log")
    assert sensor.mode == "reschedule" and sensor.poke_interval == s.sensor_poke_interval_s
    gen = dag.get_task("generate")
    assert type(gen).__name__.endswith("MappedOperator")  # dynamic task mapping over the prompt shards
    assert gen.partial_kwargs.get("pool", getattr(gen, "pool", None)) == s.generate_pool
    assert gen.queue == s.generate_queue
    for task in dag.tasks:
        if task.task_id == "partition_date":
            continue
        assert task.retries == s.retries, task.task_id
        assert task.retry_exponential_backoff == s.retry_exponential_backoff
        assert task.max_retry_delay == timedelta(seconds=s.max_retry_delay_s)
    outlets = dag.get_task("publish").outlets
    assert [a.name for a in outlets] == ["qp_results"]


def test_generate_pool_and_queue_come_from_config(tmp_path):
    """An operator points shards at GPU workers with config only (QP__AIRFLOW__* env here)."""
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"b = DagBag({str(airflow_local.DAGS_FOLDER)!r})\n"
        "t = b.get_dag('qp_nearline_daily').get_task('generate')\n"
        "print('RESULT', t.queue, t.partial_kwargs.get('pool', getattr(t, 'pool', None)), b.import_errors)\n"
    )
    env = airflow_local.airflow_env()
    env.update(QP__AIRFLOW__GENERATE_QUEUE="gpu", QP__AIRFLOW__GENERATE_POOL="gpu_pool")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
    assert line and line[0] == "RESULT gpu gpu_pool {}", out.stdout[-1000:] + out.stderr[-2000:]


def test_training_chain_one_task_per_stage_in_order(dagbag):
    dag = dagbag.get_dag("qp_training_chain")
    order = [s.name for s in training_steps.TRAINING_STEPS]
    assert list(dag.task_ids) == order or set(dag.task_ids) == set(order)
    for up, down in zip(order, order[1:]):
        assert dag.get_task(down).upstream_task_ids == {up}
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert "qp_annotations" in repr(dag.timetable)
    assert [a.name for a in dag.get_task("promote").outlets] == ["qp_model_registry"]


# --------------------------------------------------------------------------------------------------
# qp_core.nearline.steps, qp_core.lake, qp_core.ops.process: the shared step list, dates, the runner


def test_date_range_and_validation():
    assert lake.date_range("2026-02-27", "2026-03-02") == ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]
    with pytest.raises(ValueError):
        lake.date_range("2026-03-02", "2026-03-01")
    for bad in ("2026-2-1", "2026-02-30", "x", ""):
        with pytest.raises(ValueError):
            lake.check_date(bad)


def test_partition_date_from_interval_or_conf():
    from datetime import datetime, timezone

    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert lake.partition_date(None, start) == "2026-11-01"
    assert lake.partition_date("2026-10-31", start) == "2026-10-31"


def test_log_partition_sensor_and_shard_listing(tmp_path, monkeypatch):
    monkeypatch.setenv("QP_LAKE_ROOT", str(tmp_path))
    part = tmp_path / "raw/query_log/dt=2026-11-01"
    assert not lake.log_partition_ready("2026-11-01")
    part.mkdir(parents=True)
    assert not lake.log_partition_ready("2026-11-01")  # an empty folder is a partition still being written
    (part / "part-0.parquet").write_bytes(b"")
    assert lake.log_partition_ready("2026-11-01")
    part2 = tmp_path / "raw/query_log/dt=2026-11-02"
    part2.mkdir(parents=True)
    (part2 / "_SUCCESS").write_text("")
    assert lake.log_partition_ready("2026-11-02")

    prompts = tmp_path / "curated/prompts/dt=2026-11-01"
    for n in (2, 0, 10):
        (prompts / f"shard={n}").mkdir(parents=True)
    (prompts / "_SUCCESS").write_text("")
    assert lake.prompt_shards("2026-11-01") == [0, 2, 10]
    assert lake.prompt_shards("2026-11-02") == []


def test_step_commands_are_the_jobs():
    target = steps.Target("v1", "/models/v1", "compact", "r1", "nabc", active_namespace="nold")
    python_steps = [s for s in steps.STEPS if s.runner == "python"]
    for s in python_steps:
        cmd = steps.command(s, "2026-11-01", target, [3] if s.per_shard else None)
        assert cmd[:3] == [sys.executable, "-m", f"jobs.{s.job}"] and "--dt" in cmd
    gen = steps.command(steps.step("generate"), "2026-11-01", target, [3, 7])
    assert [gen[i + 1] for i, a in enumerate(gen) if a == "--shard"] == ["3", "7"]
    assert gen[gen.index("--model-dir") + 1] == "/models/v1"
    with pytest.raises(ValueError):
        steps.command(steps.step("generate"), "2026-11-01", target)
    pub = steps.command(steps.step("publish"), "2026-11-01", target)
    assert pub[pub.index("--namespace") + 1] == "nabc"
    sample = steps.command(steps.step("sample"), "2026-11-01", target)
    assert sample[0].endswith("spark-submit") and any(a.endswith("jobs/sample.py") for a in sample)
    assert sample[sample.index("--previous-namespace") + 1] == "nold"
    assert steps.Target.from_dict(target.to_dict()) == target


def test_shard_groups_deal_round_robin():
    assert steps.shard_groups([0, 1, 2, 3, 4], 2) == [[0, 2, 4], [1, 3]]
    assert steps.shard_groups([0, 1, 2], 1) == [[0, 1, 2]]
    assert steps.shard_groups([5, 1], 0) == [[1], [5]]
    assert steps.shard_groups([0], 8) == [[0]]
    assert steps.shard_groups([], 2) == []


def test_run_command_streams_and_raises(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="qp_core.ops.process")
    rc = process.run_command([sys.executable, "-c", "print('hello'); print('world')"], label="t")
    assert rc == 0 and "[t] hello" in caplog.text and "[t] world" in caplog.text
    with pytest.raises(process.StepFailed) as err:
        process.run_command([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], label="bad")
    assert err.value.returncode == 3 and "boom" in err.value.tail


def test_training_commands_share_the_run_folder():
    run_id = training_steps.safe_run_id("scheduled__2026-11-01T03:00:00+00:00")
    assert ":" not in run_id and "+" not in run_id
    cmds = [training_steps.training_command(s.name, run_id, "tiny") for s in training_steps.TRAINING_STEPS]
    assert all(c[c.index("--run-id") + 1] == run_id for c in cmds)
    stages = {s.name: c for s, c in zip(training_steps.TRAINING_STEPS, cmds)}
    assert stages["sft1"][stages["sft1"].index("--stage") + 1] == "1"
    assert stages["sft2"][stages["sft2"].index("--stage") + 1] == "2"
    assert [s.name for s in training_steps.TRAINING_STEPS][-1] == "promote"
