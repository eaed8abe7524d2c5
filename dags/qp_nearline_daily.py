"""qp_nearline_daily: the day's queries → one generative model → validated results → Redis KV.

Thin wiring only (paper Figure 3). Every task runs one command of ``qp_core.nearline.steps.STEPS`` (spark-submit
or ``python -m jobs.<step>``) for the partition date, so this DAG, ``qp run day`` and ``qp backfill`` do the
same thing. The partition date is the data interval's start (interval [D, D+1) processes ``dt=D``); a run
conf ``{"dt": "YYYY-MM-DD"}`` overrides it for manual runs. Retries, pool and queue of the generation
shards come from ``conf/airflow.yaml``. Only stdlib + ``qp_core`` config is imported at parse time.

Redis: the tasks that touch the KV store (``resolve_target`` reads the active namespace, ``publish`` writes)
take its URL from the Airflow connection ``qp_redis`` (``conf/kv.yaml`` ``airflow_conn_id``) when it is
defined, and hand it to the step's process as ``QP_REDIS_URL``; without the connection (the demo, laptops)
the usual order applies (``QP_REDIS_URL``, ``conf/kv.yaml`` ``url``, the local server's URL file).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, chain, dag, task

from qp_core.lake import RESULTS
from qp_core.ops.airflow_settings import default_args, settings

S = settings()

# Downstream DAGs (and people) can schedule on fresh results; annotations trigger the training chain.
QP_RESULTS = Asset(name="qp_results", uri=f"file:///qp/lake/{RESULTS}")

DEFAULT_ARGS = default_args(S, execution_timeout=timedelta(seconds=S.step_timeout_s))


def _run(name: str, dt: str, target: dict, shards: list[int] | None = None, env: dict | None = None) -> None:
    from qp_core.nearline import steps

    steps.run_step(name, dt, steps.Target.from_dict(target), shards, timeout=S.step_timeout_s, env=env)


def _redis_url() -> str:
    """The KV store's URL for this task: the Airflow connection ``qp_redis`` if defined, else the usual order."""
    from qp_core.kv import url_for_airflow_task

    return url_for_airflow_task()


@dag(
    dag_id="qp_nearline_daily",
    description="Daily nearline QP: sample → context → prompts → generate (per shard) → validate → publish",
    schedule=CronDataIntervalTimetable(S.nearline_cron, timezone="UTC"),
    start_date=datetime.fromisoformat(S.start_date).replace(tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=S.max_active_runs,
    default_args=DEFAULT_ARGS,
    params={"dt": Param(None, type=["null", "string"], description="partition date override (YYYY-MM-DD)")},
    tags=["qp", "nearline"],
    doc_md=__doc__,
)
def qp_nearline_daily():
    @task(retries=0)
    def partition_date(**context) -> str:
        from qp_core.lake import partition_date as _partition_date

        return _partition_date(context["params"].get("dt"), context["data_interval_start"])

    @task.sensor(poke_interval=S.sensor_poke_interval_s, timeout=S.sensor_timeout_s, mode="reschedule",
                 exponential_backoff=True)
    def wait_for_query_log(dt: str) -> bool:
        from qp_core.lake import log_partition_ready

        return log_partition_ready(dt)

    @task
    def resolve_target() -> dict:
        from qp_core.kv import KVConfigError
        from qp_core.nearline.steps import resolve_target as _resolve

        try:
            url = _redis_url()
        except KVConfigError:  # no Redis known here: publish is where that must fail, not here
            url = None
        target = _resolve(redis_url=url).to_dict()
        print(f"target model {target['model_version']} -> namespace {target['namespace']}")
        return target

    @task
    def sample(dt: str, target: dict) -> None:
        _run("sample", dt, target)

    @task
    def context(dt: str, target: dict) -> None:
        _run("context", dt, target)

    @task
    def prompts(dt: str, target: dict) -> list[list[int]]:
        """Writes the prompt shards; returns them dealt into ``generate_tasks`` groups (one mapped task each)."""
        from qp_core.lake import prompt_shards
        from qp_core.nearline.steps import shard_groups
        from qp_core.ops.airflow_settings import settings as _settings

        _run("prompts", dt, target)
        groups = shard_groups(prompt_shards(dt), _settings().generate_tasks)
        print(f"{sum(map(len, groups))} prompt shard(s) for {dt} in {len(groups)} generation task(s): {groups}")
        return groups

    @task(pool=S.generate_pool, pool_slots=S.generate_pool_slots, queue=S.generate_queue,
          max_active_tis_per_dagrun=S.generate_max_active_tis)
    def generate(shards: list[int], dt: str, target: dict) -> None:
        _run("generate", dt, target, shards)

    # none_failed: a day whose sample chose no query has no shard; validate/publish still run (empty)
    @task(trigger_rule="none_failed")
    def validate(dt: str, target: dict) -> None:
        _run("validate", dt, target)

    @task(outlets=[QP_RESULTS])
    def publish(dt: str, target: dict) -> None:
        _run("publish", dt, target, env={"QP_REDIS_URL": _redis_url()})

    dt = partition_date()
    target = resolve_target()
    shards = prompts(dt, target)
    chain(
        dt,
        wait_for_query_log(dt),
        target,
        sample(dt, target),
        context(dt, target),
        shards,
        generate.partial(dt=dt, target=target).expand(shards=shards),
        validate(dt, target),
        publish(dt, target),
    )


qp_nearline_daily()
