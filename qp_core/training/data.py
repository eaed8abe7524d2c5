"""Training data: lake readers and the conversational prompt/completion rows TRL trains on.

Every example is ``{"prompt": [system, user], "completion": [assistant]}`` (TRL's conversational
prompt-completion format), so SFTTrainer's ``completion_only_loss`` masks exactly the prompt and GRPO's
rollouts are generated from the same rendering the nearline pipeline serves.

Stage-1 mixing (paper eq. 8): λ is a **sampling fraction**: all unified rows plus round(λ·N_unified) aux
rows, drawn with an equal share per sub-task. In expectation a step then carries λ aux examples per
unified one, which is what eq. 8's loss weight does to the gradient, without changing TRL's loss.

Table 2's task-isolated models train on ``isolated_example``s (the unified prompt asking for one sub-task)
plus the pseudo-labels of their task that the unified mix holds (``mix_aux(..., only_task=...)``).
"""

from __future__ import annotations

import json
import logging
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterable

from qp_core import paths
from qp_core.lake import ANNOTATIONS, AUX, GOLDEN, QUERY_LOG, dataset

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


DEV_SALT = "qp-dev-v1"


def in_dev_split(query: str, fraction: float, salt: str = DEV_SALT) -> bool:
    """Whether ``query`` belongs to the reserved dev split: a stable hash of its normalised text.

    Hashing the text (not sampling rows) keeps the split fixed as annotation days are added and keeps
    every row of one query on the same side, so no dev query is ever trained on.
    """
    import hashlib

    from qp_core.normalize import normalize_query

    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{salt}:{normalize_query(query)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_dev(rows: Iterable[dict[str, Any]], fraction: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, dev rows) of annotation rows; dev is what recipe tuning and the promotion gate read.

    The golden set is for the report only. Dev keeps one row per query (its newest annotation).
    """
    from qp_core.normalize import normalize_query

    train, dev = [], {}
    for r in rows:
        if in_dev_split(r["query"], fraction):
            key = normalize_query(r["query"])
            prev = dev.get(key)
            if prev is None or str(r.get("dt") or "") >= str(prev.get("dt") or ""):
                dev[key] = r
        else:
            train.append(r)
    return train, [dev[k] for k in sorted(dev)]


def annotation_splits(dev_fraction: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, dev rows): unified annotations minus golden queries (defensive: the world keeps them
    disjoint already), split by ``split_dev``. The one place the chain, the probe and the refitted legacy
    baseline get "the model's training annotations" from."""
    from qp_core.normalize import normalize_query

    golden = {normalize_query(r["query"]) for r in read_dataset(GOLDEN, columns=["query"])}
    rows = [r for r in annotation_rows() if normalize_query(r["query"]) not in golden]
    return split_dev(rows, dev_fraction)


def traffic_sample(n: int, seed: int = 0, dt: str | None = None) -> list[str]:
    """``n`` queries drawn from one day of ``raw/query_log`` (default: the newest), repeats included, so
    that each query's share follows its traffic: the weights of the traffic-weighted Overall."""
    import pyarrow.dataset as ds

    root = dataset(QUERY_LOG)
    if not root.exists():
        return []
    if dt is None:
        dts = sorted(p.name.split("=", 1)[1] for p in root.glob("dt=*"))
        if not dts:
            return []
        dt = dts[-1]
    table = ds.dataset(str(root / f"dt={dt}"), format="parquet").to_table(columns=["query"])
    queries = [q for q in table.column("query").to_pylist() if q]
    rng = random.Random(seed)
    return [rng.choice(queries) for _ in range(n)] if queries else []


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


def isolated_prompt(task: str, row: dict[str, Any], rules_mode: str, context: bool = True) -> list[dict[str, str]]:
    from qp_core.prompt import build_isolated_messages

    history, notes = _context(row, context)
    return build_isolated_messages(task, row["query"], history, notes, rules_mode=rules_mode)


def isolated_example(task: str, row: dict[str, Any], rules_mode: str, context: bool = True) -> dict[str, Any]:
    """One example of Table 2's task-``task`` model: ``unified_example``'s prompt (same rules, same query and
    context) asking for that task's fields only → ``task_target`` of the row's label, so the isolated and the
    unified model differ in what they are asked to output and nothing else."""
    from qp_core.prompt import task_target

    label = row["label"]
    return {
        "prompt": isolated_prompt(task, row, rules_mode, context),
        "completion": [{"role": "assistant", "content": task_target(task, json.loads(label))}],
        "query": row["query"],
        "label": label,
        "source": f"isolated:{task}",
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


def stage1_aux(lambda_aux: float) -> dict[str, list[dict[str, Any]]]:
    """The aux pool stage 1 draws from (none at λ = 0); an error when λ > 0 and the aux stage has not run."""
    aux = aux_examples_by_task() if lambda_aux > 0 else {}
    if lambda_aux > 0 and not aux:
        raise RuntimeError("λ > 0 but training/aux is empty: run the aux stage first")
    return aux


def mix_aux(
    unified: list[dict[str, Any]],
    aux_by_task: dict[str, list[dict[str, Any]]],
    lambda_aux: float,
    seed: int = 0,
    only_task: str | None = None,
) -> list[dict[str, Any]]:
    """Unified examples + round(λ·N) aux examples, equal share per task, shuffled (see module doc).

    ``only_task``: keep only that task's aux examples, drawn exactly as for the full mix (same N, seed and
    pool), so a Table-2 task-isolated model trains on the very pseudo-labels of its task that the unified
    model's stage-1 mix holds, as many and the same ones.
    """
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
                drawn = rng.sample(pool, want)
            else:
                drawn = pool + [rng.choice(pool) for _ in range(want - len(pool))]
            if only_task in (None, task):  # every task is drawn, so the kept task's draw is the full mix's
                picked += drawn
    mixed = list(unified) + picked
    rng.shuffle(mixed)
    logger.info("stage-1 mix: %d unified + %d aux (λ=%.3g, %d tasks%s)", len(unified), len(picked), lambda_aux,
                len(tasks), f", kept {only_task}'s" if only_task else "")
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
