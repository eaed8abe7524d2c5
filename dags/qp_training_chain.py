"""qp_training_chain: aux pseudo-labels → base model → SFT 1 → SFT 2 → GRPO filter → GRPO → evaluate → promote.

Thin wiring only (paper Figure 1 / §4.3). Runs weekly, or as soon as new human annotations land (an event
on the ``qp_annotations`` asset), whichever comes first. One task per stage, each a ``python -m jobs.<x>``
command from ``qp_core.training.steps.TRAINING_STEPS``; all stages of a run share one run folder named after the
Airflow run id, so a retried or cleared task resumes from the checkpoint its stage saved there.
Profile and schedule come from ``conf/airflow.yaml``; a run conf ``{"profile": "..."}`` overrides the profile.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, chain, dag, task

from qp_core.ops.airflow_settings import default_args, settings

S = settings()

QP_ANNOTATIONS = Asset(name="qp_annotations", uri="file:///qp/lake/raw/annotations")
QP_MODEL = Asset(name="qp_model_registry", uri="file:///qp/registry")

_weekly = CronTriggerTimetable(S.training_cron, timezone="UTC")
SCHEDULE = AssetOrTimeSchedule(timetable=_weekly, assets=[QP_ANNOTATIONS]) if S.training_on_annotations else _weekly

DEFAULT_ARGS = default_args(S, pool=S.training_pool, queue=S.training_queue)


@dag(
    dag_id="qp_training_chain",
    description="Three-stage training chain with evaluation and a promotion gate",
    schedule=SCHEDULE,
    start_date=datetime.fromisoformat(S.start_date).replace(tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={"profile": Param(S.training_profile, type="string", description="model profile (conf/profiles)")},
    tags=["qp", "training"],
    doc_md=__doc__,
)
def qp_training_chain():
    def stage(name: str, **task_kwargs):
        @task(task_id=name, **task_kwargs)
        def _stage(**context) -> None:
            from qp_core.ops.process import run_command
            from qp_core.training.steps import safe_run_id, training_command

            run_id = safe_run_id(context["run_id"])
            run_command(training_command(name, run_id, context["params"]["profile"]), label=name)

        return _stage()

    from qp_core.training.steps import TRAINING_STEPS  # stdlib-only module: cheap at parse time

    chain(*[stage(s.name, **({"outlets": [QP_MODEL]} if s.name == "promote" else {})) for s in TRAINING_STEPS])


qp_training_chain()
