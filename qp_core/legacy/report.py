"""Golden-set evaluation of the legacy pipeline: the baseline row of every evaluation report."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from qp_core.lake import GOLDEN
from qp_core.legacy.pipeline import LegacyPipeline, load_or_train, read_annotations

logger = logging.getLogger(__name__)


def golden_references(lake_root: str | Path | None = None) -> list[dict[str, Any]]:
    """Unified reference dicts of ``raw/golden`` with their ``query`` key (rows with a bad label dropped)."""
    refs = []
    for row in read_annotations(lake_root, GOLDEN):
        try:
            label = json.loads(row["label"]) if isinstance(row.get("label"), str) else row.get("label")
        except json.JSONDecodeError:
            label = None
        if isinstance(label, dict) and isinstance(row.get("query"), str):
            refs.append({**label, "query": row["query"]})
    return refs


def trivial_predictions(references: list[dict[str, Any]], train_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The floor any learned baseline must beat: the whole query one segment of weight 3, no entities,
    the most frequent training category."""
    from qp_core.normalize import compact

    top = Counter()
    for r in train_rows:
        try:
            top[json.loads(r["label"])["category"][0]] += 1
        except Exception:  # noqa: BLE001 - a bad row just doesn't vote
            continue
    label = top.most_common(1)[0][0] if top else "美妆/彩妆"
    return [{"entities": [], "segments": [compact(r["query"])], "weights": [3], "category": [label],
             "intent_desc": f"用户想了解{compact(r['query'])[:30]}的相关内容，属于{label}"} for r in references]


def evaluate_legacy(lake_root: str | Path | None = None, pipeline: LegacyPipeline | None = None,
                    with_trivial: bool = True) -> dict[str, Any]:
    """Metrics (qp_core.metrics.evaluate) of the legacy pipeline on ``raw/golden``; ``trivial`` alongside."""
    from qp_core.metrics import evaluate

    train_rows = read_annotations(lake_root)
    t0 = time.perf_counter()
    pipe = pipeline or load_or_train(lake_root, rows=train_rows)
    fit_s = time.perf_counter() - t0
    refs = golden_references(lake_root)
    t0 = time.perf_counter()
    preds = pipe.predict_batch([r["query"] for r in refs])
    pred_s = time.perf_counter() - t0
    report: dict[str, Any] = {
        "legacy": evaluate(preds, refs),
        "meta": {**pipe.meta, "n_golden": len(refs), "n_train_rows": pipe.meta.get("n_train", len(train_rows)),
                 "load_or_train_s": round(fit_s, 2), "predict_s": round(pred_s, 2),
                 "queries_per_s": round(len(refs) / pred_s, 1) if pred_s else None},
    }
    if with_trivial:
        report["trivial"] = evaluate(trivial_predictions(refs, train_rows), refs)
    return report
