"""The training chain as Airflow tasks (``qp_training_chain``): one resumable ``python -m jobs.<job>`` per stage.

Why a list of commands: the DAG, like the nearline one, runs exactly the commands a person could type; the
``run_id`` names the run folder every stage resumes from (:mod:`qp_core.training.run`). Stdlib only, so the
DAG file can import it at parse time.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass



@dataclass(frozen=True)
class TrainingStep:
    name: str
    job: str
    extra: tuple[str, ...] = ()


TRAINING_STEPS: tuple[TrainingStep, ...] = (
    TrainingStep("aux", "aux_data"),
    TrainingStep("base", "train_sft", ("--stage", "0")),  # tokenizer + initial weights of the profile
    TrainingStep("sft1", "train_sft", ("--stage", "1")),
    TrainingStep("sft2", "train_sft", ("--stage", "2")),
    TrainingStep("grpo_filter", "grpo_filter"),
    TrainingStep("grpo", "train_grpo"),
    TrainingStep("evaluate", "evaluate"),
    TrainingStep("promote", "promote"),
)


def training_command(name: str, run_id: str, profile: str) -> list[str]:
    """Command of one training stage; the ``run_id`` names the run folder every stage resumes from."""
    for s in TRAINING_STEPS:
        if s.name == name:
            return [sys.executable, "-m", f"jobs.{s.job}", *s.extra, "--run-id", run_id, "--profile", profile]
    raise KeyError(f"unknown training stage {name!r}")


def safe_run_id(raw: str) -> str:
    """Airflow run ids contain ':' and '+'; keep a filesystem-friendly form."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("_")[:120]
