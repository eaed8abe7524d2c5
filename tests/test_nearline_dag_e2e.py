"""The whole ``qp_nearline_daily`` DAG through Airflow's ``dag.test()`` on the small world, with the tiny
random-init model on vLLM CPU, Spark local and a real redis-server: results land in the KV store, and a
second run of the same date leaves every lake partition and the KV contents unchanged."""

from __future__ import annotations

import datetime as dt_mod

import pytest

from tests.fixtures.airflow import kv_snapshot, lake_snapshot, pipeline_sandbox

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.spark, pytest.mark.redis, pytest.mark.vllm]

DT = "2026-11-01"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, small_world, redis_url, tiny_model_dir, airflow_db):
    with pipeline_sandbox(tmp_path_factory.mktemp("e2e"), small_world, redis_url, tiny_model_dir, db=7) as box:
        yield box


def _dag_test(dagbag, dt: str):
    dag = dagbag.get_dag("qp_nearline_daily")
    logical = dt_mod.datetime.fromisoformat(dt).replace(tzinfo=dt_mod.timezone.utc)
    return dag.test(logical_date=logical, run_conf={"dt": dt})


def _states(dagrun) -> dict[str, str]:
    return {(ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state)
            for ti in dagrun.get_task_instances()}


@pytest.fixture(scope="module")
def first_run(sandbox, dagbag):
    dagrun = _dag_test(dagbag, DT)
    return {"dagrun": dagrun, "states": _states(dagrun), "lake": lake_snapshot(sandbox["lake"], DT),
            "kv": kv_snapshot(sandbox["url"])}


def test_dag_run_succeeds_with_mapped_generation(first_run):
    assert str(first_run["dagrun"].state) == "success", first_run["states"]
    states = first_run["states"]
    assert all(s == "success" for s in states.values()), states
    # 40 queries in shards of 24 -> 2 shards, dealt into 2 mapped generation tasks
    assert {k for k in states if k.startswith("generate")} == {"generate[0]", "generate[1]"}


def test_results_are_in_the_kv_store(first_run, sandbox):
    import pyarrow.parquet as pq

    from qp_core import paths
    from qp_core.kv import QPClient

    sample = pq.read_table(str(paths.partition("curated/query_sample", DT))).to_pylist()
    assert len(sample) == 40
    queries = [r["query_norm"] for r in sample]
    with QPClient(sandbox["url"]) as client:
        ns, results = client.mget_with_namespace(queries)
    assert ns is not None
    assert all(r is not None for r in results), f"{sum(r is None for r in results)} misses"
    assert {r["dt"] for r in results} == {DT}
    assert {r["src"] for r in results} <= {"model", "fallback"}
    assert sum(k.startswith(f"qp:{ns}:") for k in first_run["kv"]) == 40
    assert paths.partition("curated/qp_results", DT).joinpath("_quality.json").exists()


def test_second_run_of_the_same_date_changes_nothing(first_run, sandbox, dagbag):
    assert first_run["lake"], "nothing snapshotted"
    for dataset in ("query_sample", "query_context", "prompts", "generations", "qp_results"):
        assert any(k.startswith(dataset + "/") for k in first_run["lake"]), dataset
    dagrun = _dag_test(dagbag, DT)
    assert str(dagrun.state) == "success", _states(dagrun)
    second_lake = lake_snapshot(sandbox["lake"], DT)
    assert set(second_lake) == set(first_run["lake"])
    for key in first_run["lake"]:
        assert second_lake[key] == first_run["lake"][key], f"lake changed on rerun: {key}"
    second_kv = kv_snapshot(sandbox["url"])
    assert second_kv == first_run["kv"]
