"""Training data: lake readers and the conversational prompt/completion rows TRL trains on.

Every example is ``{"prompt": [system, user], "completion": [assistant]}`` (TRL's conversational
prompt-completion format), so SFTTrainer's ``completion_only_loss`` masks exactly the prompt and GRPO's
rollouts are generated from the same rendering the nearline pipeline serves.

Stage-1 mixing (paper eq. 8): λ is a **sampling fraction**: all unified rows plus round(λ·N_unified) aux
rows, drawn with an equal share per sub-task. In expectation a step then carries λ aux examples per
unified one, which is what eq. 8's loss weight does to the gradient, without changing TRL's loss.
"""

from __future__ import annotations

import json
import logging
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterable

from qp_core import paths
from qp_core.lake import ANNOTATIONS, AUX, GOLDEN, dataset

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- lake io


def read_dataset(name_or_path: str | Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a Parquet lake dataset (hive partitions become string columns, ``dt`` stays a string)."""
    import pyarrow.dataset as ds

    path = Path(name_or_path)
    if not path.is_absolute() and not path.exists():
        path = paths.dataset(str(name_or_path))
    if not path.exists():
        raise FileNotFoundError(f"lake dataset not found: {path}")
    dataset = ds.dataset(str(path), format="parquet", partitioning="hive")
    table = dataset.to_table(columns=columns)
    rows = table.to_pylist()
    for r in rows:
        for key in ("dt", "task"):
            if key in r and r[key] is not None:
                r[key] = str(r[key])
    return rows


def annotation_rows() -> list[dict[str, Any]]:
    return read_dataset(ANNOTATIONS)


def golden_rows(limit: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """The golden set; ``limit`` > 0 takes a fixed random subset (same subset for every model of a run)."""
    rows = read_dataset(GOLDEN)
    rows.sort(key=lambda r: r["query"])
    if limit and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


def data_version(name: str) -> str:
    """A short identity of a lake dataset for the registry: newest partition and row count."""
    try:
        rows = read_dataset(name, columns=None)
    except FileNotFoundError:
        return "missing"
    dts = sorted({r["dt"] for r in rows if r.get("dt")})
    return f"{dts[-1] if dts else 'all'}:{len(rows)}"


# ------------------------------------------------------------------------------------------- examples


def _context(row: dict[str, Any], context: bool) -> tuple[list[str], list[str]]:
    if not context:
        return [], []
    return list(row.get("history") or []), list(row.get("notes") or [])


def unified_prompt(row: dict[str, Any], rules_mode: str, context: bool = True) -> list[dict[str, str]]:
    from qp_core.prompt import build_messages

    history, notes = _context(row, context)
    return build_messages(row["query"], history, notes, rules_mode=rules_mode)


def unified_example(row: dict[str, Any], rules_mode: str, context: bool = True) -> dict[str, Any]:
    """One unified SFT example: full business-aware prompt (I ⊕ R ⊕ q ⊕ C) → canonical unified JSON."""
    return {
        "prompt": unified_prompt(row, rules_mode, context),
        "completion": [{"role": "assistant", "content": row["label"]}],
        "query": row["query"],
        "label": row["label"],
        "source": "unified",
    }


def task_example(task: str, query: str, label: str) -> dict[str, Any]:
    """Single-task example (short task prompt, q → y_k) from a unified label (Table 2's isolated data)."""
    from qp_core.prompt import build_task_messages, task_target

    return {
        "prompt": build_task_messages(task, query),
        "completion": [{"role": "assistant", "content": task_target(task, json.loads(label))}],
        "query": query,
        "label": label,
        "source": f"task:{task}",
    }


def aux_examples_by_task(root: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """``training/aux/task=<t>`` rows as examples, grouped by task."""
    root = Path(root) if root else dataset(AUX)
    out: dict[str, list[dict[str, Any]]] = {}
    if not root.exists():
        return out
    for row in read_dataset(root):
        out.setdefault(row["task"], []).append(
            {
                "prompt": json.loads(row["prompt"]),
                "completion": [{"role": "assistant", "content": row["completion"]}],
                "query": row.get("query") or "",
                "label": "",
                "source": f"aux:{row['task']}",
            }
        )
    return out


def mix_aux(
    unified: list[dict[str, Any]],
    aux_by_task: dict[str, list[dict[str, Any]]],
    lambda_aux: float,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Unified examples + round(λ·N) aux examples, equal share per task, shuffled (see module doc)."""
    rng = random.Random(seed)
    n_aux = round(lambda_aux * len(unified))
    tasks = sorted(t for t, rows in aux_by_task.items() if rows)
    picked: list[dict[str, Any]] = []
    if n_aux > 0 and tasks:
        base, extra = divmod(n_aux, len(tasks))
        for i, task in enumerate(tasks):
            want = base + (1 if i < extra else 0)
            pool = aux_by_task[task]
            # sample without replacement while the pool lasts, then with replacement
            if want <= len(pool):
                picked += rng.sample(pool, want)
            else:
                picked += pool + [rng.choice(pool) for _ in range(want - len(pool))]
    mixed = list(unified) + picked
    rng.shuffle(mixed)
    logger.info("stage-1 mix: %d unified + %d aux (λ=%.3g, %d tasks)", len(unified), len(picked), lambda_aux, len(tasks))
    return mixed


def recent_rows(rows: Iterable[dict[str, Any]], days: int) -> list[dict[str, Any]]:
    """Rows whose ``dt`` lies within ``days`` of the newest ``dt`` (stage 2: most recent annotations)."""
    rows = list(rows)
    dts = [r["dt"] for r in rows if r.get("dt")]
    if not dts:
        return rows
    newest = date.fromisoformat(max(dts))
    cutoff = (newest - timedelta(days=max(days - 1, 0))).isoformat()
    return [r for r in rows if r.get("dt") and r["dt"] >= cutoff]


def to_hf_dataset(examples: list[dict[str, Any]]):
    """A ``datasets.Dataset`` with only the columns TRL needs (prompt, completion)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])


def corpus_texts(rows: Iterable[dict[str, Any]], rules_mode: str) -> list[str]:
    """Texts the tiny tokenizer is fitted on: queries, labels, context, prompts (no golden rows)."""
    from qp_core.prompt import build_messages, build_task_messages, TASKS

    texts: list[str] = []
    for i, r in enumerate(rows):
        texts.append(r["query"])
        texts.append(r["label"])
        texts += list(r.get("history") or []) + list(r.get("notes") or [])
        if i < 50:
            texts += [m["content"] for m in build_messages(r["query"], r.get("history") or [], r.get("notes") or [], rules_mode=rules_mode)]
            for t in TASKS:
                texts += [m["content"] for m in build_task_messages(t, r["query"])]
    return texts
