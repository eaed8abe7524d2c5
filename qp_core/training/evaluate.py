"""Evaluation of every stage (and the legacy baseline) on the golden set with ``qp_core.metrics.evaluate``.

Each model answers the same golden rows with the prompt it was trained on (full unified prompt with the
profile's rules mode; context on or off as in training), outputs go through ``parse.parse_output`` like the
nearline pipeline (an unparseable output counts as an empty prediction), and the metric dict is the row
``report.json`` carries. Task-isolated models (Table 2 ablation) answer the same prompt asking for their own
task's fields, decoded under that task's grammar, and each task is scored on its own model's answers.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def score(predictions: list[dict[str, Any] | None], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``metrics.evaluate`` of unified predictions against the rows' labels, plus ``per_row``: the unit
    counts of each row (``metrics.row_counts``) that paired-bootstrap comparisons resample."""
    from qp_core.metrics import evaluate, row_counts

    references = []
    for r in rows:
        ref = dict(json.loads(r["label"]) if isinstance(r["label"], str) else r["label"])
        ref["query"] = r["query"]
        references.append(ref)
    out = evaluate(predictions, references)
    out["per_row"] = row_counts(predictions, references)
    return out


def parse_texts(texts: list[str], rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    from qp_core.parse import parse_output

    return [parse_output(t, r["query"]).result for t, r in zip(texts, rows)]


def evaluate_model(
    model_dir: str | Path,
    rows: list[dict[str, Any]],
    *,
    rules_mode: str,
    context: bool = True,
    batch_size: int = 64,
    max_new_tokens: int = 192,
    bf16: bool = True,
    samples_path: str | Path | None = None,
    fallback=None,
    query_grammar: bool = True,
    free_valid_rate: bool = False,
) -> dict[str, Any]:
    """Greedy generation on ``rows`` + metrics; writes the raw outputs to ``samples_path`` (jsonl) if given.

    With ``query_grammar`` each row is decoded under its query's grammar, as the nearline engines do
    (``qp_core.grammar``). The model is scored on its own outputs (an output that fails validation counts
    as an empty prediction). With ``fallback`` (the legacy pipeline) the result also carries ``served``:
    the metrics of what the nearline pipeline would publish with this model — its valid outputs, and the
    legacy pipeline's answer wherever the output failed validation (``jobs/validate.py``, ``src=fallback``).
    ``free_valid_rate`` adds the valid share of a second, unconstrained decoding.
    """
    from qp_core.grammar import query_grammars
    from qp_core.training.data import unified_prompt
    from qp_core.training.generate import generate_texts, load_for_generation

    t0 = time.time()
    prompts = [unified_prompt(r, rules_mode, context) for r in rows]
    model = load_for_generation(model_dir, bf16)

    def decode(grammars):
        return [t[0] for t in generate_texts(model, prompts, batch_size=batch_size,
                                             max_new_tokens=max_new_tokens, bf16=bf16, grammars=grammars)]

    texts = decode(query_grammars([r["query"] for r in rows]) if query_grammar else None)
    preds = parse_texts(texts, rows)
    metrics = score(preds, rows)
    metrics["query_grammar"] = query_grammar
    if free_valid_rate and query_grammar:
        free = parse_texts(decode(None), rows)
        metrics["free_valid_rate"] = sum(p is not None for p in free) / max(1, len(rows))
    if fallback is not None:
        metrics["served"] = served_metrics(preds, rows, fallback)
    metrics["eval_s"] = round(time.time() - t0, 1)
    metrics["n"] = len(rows)
    if samples_path:
        _write_samples(samples_path, rows, texts, preds)
    return metrics


_TASK_KEYS = {"ner": "ner_f1", "seg": "seg_f1", "tw": "tw_f1", "taxonomy": "taxonomy"}


def _task_columns(task: str) -> list[int]:
    """Indices of ``metrics.ROW_COLUMNS`` that score ``task`` (taxonomy: its counts and top-1)."""
    from qp_core.metrics import ROW_COLUMNS

    prefix = {"ner": "ner_", "seg": "seg_", "tw": "tw_", "taxonomy": "tax_"}[task]
    return [i for i, c in enumerate(ROW_COLUMNS) if c.startswith(prefix) or (task == "taxonomy" and c == "top1")]


def evaluate_task_models_separately(
    task_model_dirs: dict[str, str | Path],
    rows: list[dict[str, Any]],
    *,
    rules_mode: str,
    context: bool = True,
    batch_size: int = 64,
    max_new_tokens: int = 192,
    bf16: bool = True,
    task_grammar: bool = True,
) -> dict[str, Any]:
    """Table-2 ablation: one model per sub-task, each asked its isolated prompt (``data.isolated_prompt``:
    the unified prompt, rules and context included, asking for that task's fields).

    Decoding is ``evaluate_model``'s: greedy, same batch size and token budget, and with ``task_grammar``
    each row under its query's grammar for that task's fields (``grammar.task_grammar``, built from the same
    blocks as the unified ``query_grammar``). Each task's metric is taken from the predictions of that
    task's own model (its fields put into an otherwise empty unified dict), exactly as the paper's
    task-isolated rows; Overall = mean of the four. When all four tasks ran, ``per_row`` holds each row's
    unit counts (``metrics.ROW_COLUMNS``), every task's columns from that task's model: the same layout as
    ``evaluate_model``'s, so ``compare.paired_bootstrap`` can pair the two on the same rows.
    """
    from qp_core.grammar import query_grammars
    from qp_core.prompt import task_fields
    from qp_core.schema import empty_result
    from qp_core.training.data import isolated_prompt
    from qp_core.training.generate import generate_texts, load_for_generation

    t0 = time.time()
    out: dict[str, Any] = {"task_grammar": task_grammar}
    per_task_rows: dict[str, list[list[int]]] = {}
    for task, model_dir in task_model_dirs.items():
        prompts = [isolated_prompt(task, r, rules_mode, context) for r in rows]
        grammars = query_grammars([r["query"] for r in rows], task=task) if task_grammar else None
        model = load_for_generation(model_dir, bf16)
        texts = [t[0] for t in generate_texts(model, prompts, batch_size=batch_size,
                                               max_new_tokens=max_new_tokens, bf16=bf16, grammars=grammars)]
        del model
        preds = []
        for text in texts:
            obj = _loads_object(text) or {}
            pred = empty_result()
            for f in task_fields(task):
                if f in obj:
                    pred[f] = obj[f]
            preds.append(pred)
        m = score(preds, rows)
        out[_TASK_KEYS[task]] = m[_TASK_KEYS[task]]
        out[f"{task}_model_valid_rate"] = round(100.0 * sum(1 for t in texts if _loads_object(t)) / max(1, len(texts)), 2)
        per_task_rows[task] = m["per_row"]
    parts = [out[k] for k in _TASK_KEYS.values() if k in out]
    out["overall"] = sum(parts) / len(parts) if parts else 0.0
    if set(_TASK_KEYS) <= set(per_task_rows):
        owner = {i: task for task in _TASK_KEYS for i in _task_columns(task)}
        out["per_row"] = [[per_task_rows[owner[i]][j][i] for i in sorted(owner)] for j in range(len(rows))]
    out["eval_s"] = round(time.time() - t0, 1)
    out["n"] = len(rows)
    return out


def served_metrics(preds: list[dict[str, Any] | None], rows: list[dict[str, Any]], fallback) -> dict[str, Any]:
    """Metrics of the served results: ``preds`` where valid, ``fallback.predict_batch`` elsewhere."""
    missing = [i for i, p in enumerate(preds) if p is None]
    served = list(preds)
    for i, p in zip(missing, fallback.predict_batch([rows[i]["query"] for i in missing]) if missing else []):
        served[i] = p
    out = score(served, rows)
    out["fallback_rate"] = len(missing) / max(1, len(rows))
    return out


def evaluate_legacy(rows: list[dict[str, Any]], legacy=None) -> dict[str, Any]:
    """A legacy multi-model pipeline on ``rows`` (default: the stale snapshot the nearline falls back to)."""
    from qp_core.legacy import load_or_train

    t0 = time.time()
    legacy = legacy or load_or_train()
    preds = legacy.predict_batch([r["query"] for r in rows])
    metrics = score(preds, rows)
    metrics["eval_s"] = round(time.time() - t0, 1)
    metrics["n"] = len(rows)
    return metrics


def refitted_legacy(training_rows: list[dict[str, Any]]):
    """The legacy pipeline refitted on exactly the model's training annotations (every day): the fair
    baseline. The stale snapshot (``legacy.load_or_train()``) is what serving falls back to, but it has not
    seen the days the model trained on, so beating it says little about the method."""
    from qp_core.legacy import load_or_train

    return load_or_train(rows=list(training_rows), snapshot_days=0)


def _loads_object(text: str) -> dict[str, Any] | None:
    text = text.strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start:end + 1])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _write_samples(path: str | Path, rows, texts, preds) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r, t, p in zip(rows, texts, preds):
            fh.write(json.dumps({"query": r["query"], "label": r["label"], "output": t, "parsed": p is not None},
                                ensure_ascii=False) + "\n")
