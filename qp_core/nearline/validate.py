"""Validation step: ``curated/generations/dt=D/model=V`` → ``curated/qp_results/dt=D`` + ``_quality.json``.

Every generation is parsed and validated (``qp_core.parse.parse_output``, which applies only named,
unambiguous repairs), then held to ``qp_core.kv.rows.check_row`` — the one row check the publisher
also applies (strict JSON types, no control/bidi characters, size caps, no duplicate keys) — so
nothing this step passes can be refused at publish time; ``_quality.json`` records the check's
version and each written file's digest, which lets the publisher skip re-checking an untouched
partition. An unusable one — engine error such as ``prompt_too_long``, no JSON, or JSON that breaks
the contract — is replaced by the legacy pipeline's result with ``src=fallback``, so every chosen query still
gets a result. The quality report counts all of it.

The quality gate protects the KV store from a broken model or prompt: when the share of model outputs that
validated is below ``validation.min_valid_rate`` the step raises ``QualityGateFailed`` and the partition is
left holding only the report (``"passed": false``) — no rows, so the publish step has nothing to publish and
refuses the date. The partition is built in a staging folder and swapped in whole, so readers never see a
half-written partition and a rerun replaces it exactly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from qp_core.lake import QUALITY_FILE, RESULTS, generation_shard, generations_dir, partition, prompt_shards
from qp_core.nearline.settings import ValidationSettings, load_generation_settings

logger = logging.getLogger(__name__)

RESULT_COLUMNS = (
    "query_key", "query_norm", "result_json", "src", "repairs", "error", "finish_reason",
    "model_version", "rules_version", "prompt_version", "reason",
)


class QualityGateFailed(RuntimeError):
    """The valid rate fell below the threshold; nothing was written for publishing."""

    def __init__(self, report: dict[str, Any]):
        self.report = report
        super().__init__(
            f"quality gate failed for dt={report.get('dt')}: valid rate {report.get('valid_rate'):.3f} "
            f"< {report.get('min_valid_rate')} ({report.get('rows')} rows); see {report.get('report_path')}"
        )


class IncompleteGenerations(RuntimeError):
    """Some prompt shards have no generations file (generation unfinished)."""


@dataclass
class ValidationOutcome:
    rows: list[dict[str, Any]]
    report: dict[str, Any]


def read_generations(dt: str, model_version: str) -> list[dict[str, Any]]:
    import pyarrow.dataset as ds

    folder = generations_dir(dt, model_version)
    files = sorted(folder.glob("shard=*.parquet")) if folder.is_dir() else []
    if not files:
        return []
    table = ds.dataset([str(f) for f in files], format="parquet").to_table()
    return table.to_pylist()


def check_complete(dt: str, model_version: str) -> list[int]:
    """Prompt shards without a generations file (empty list when complete)."""
    return [s for s in prompt_shards(dt) if not generation_shard(dt, model_version, s).exists()]


def validate_rows(gens: Iterable[dict[str, Any]], legacy: Any = None) -> list[dict[str, Any]]:
    """One result row per generation: the parsed model output, or the legacy result (``src=fallback``)."""
    from qp_core.kv.rows import check_row
    from qp_core.parse import parse_output
    from qp_core.schema import dump_unified

    out: list[dict[str, Any]] = []
    fallback_idx: list[int] = []
    for g in gens:
        query = g.get("query_norm") or ""
        row = {
            "query_key": g.get("query_key"), "query_norm": query, "result_json": None, "src": "model",
            "repairs": [], "error": None, "finish_reason": g.get("finish_reason"),
            "model_version": g.get("model_version"), "rules_version": g.get("rules_version"),
            "prompt_version": g.get("prompt_version"), "reason": g.get("reason"),
            "_completion_tokens": g.get("completion_tokens") or 0, "_prompt_tokens": g.get("prompt_tokens") or 0,
            "_latency_s": g.get("latency_s") or 0.0,
        }
        if g.get("error"):
            row["error"] = f"engine: {g['error']}"
        else:
            parsed = parse_output(g.get("text"), query)
            row["repairs"] = list(parsed.repairs or [])
            if parsed.result is not None:
                row["result_json"] = dump_unified(parsed.result)
                checked = check_row(row)
                if isinstance(checked, str):
                    row["result_json"], row["error"] = None, f"check: {checked}"
            else:
                row["error"] = f"parse: {parsed.error}"
        if row["result_json"] is None:
            row["src"] = "fallback"
            fallback_idx.append(len(out))
        out.append(row)
    if fallback_idx:
        if legacy is None:
            from qp_core.legacy import load_or_train

            legacy = load_or_train()
        queries = [out[i]["query_norm"] for i in fallback_idx]
        preds = legacy.predict_batch(queries)
        for i, pred in zip(fallback_idx, preds):
            try:
                candidate = dict(out[i], result_json=dump_unified(pred)) if pred is not None else None
            except (KeyError, TypeError, ValueError):  # not even the unified shape
                candidate = None
            if candidate is not None and not isinstance(check_row(candidate), str):
                out[i]["result_json"] = candidate["result_json"]
            else:
                out[i]["src"] = "none"  # neither model nor legacy: the row is reported, not published
    return out


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (k - lo), 4)


def quality_report(dt: str, model_version: str, rows: list[dict[str, Any]], settings: ValidationSettings) -> dict[str, Any]:
    n = len(rows)
    valid = sum(r["src"] == "model" for r in rows)
    fallback = sum(r["src"] == "fallback" for r in rows)
    unresolved = sum(r["src"] == "none" for r in rows)
    repairs = Counter(name for r in rows for name in r["repairs"])
    repaired_rows = sum(bool(r["repairs"]) for r in rows if r["src"] == "model")
    errors = Counter((r["error"] or "").split(":", 1)[0] + ":" + _error_kind(r["error"]) for r in rows if r["error"])
    examples: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        if r["error"]:
            kind = (r["error"] or "").split(":", 1)[0] + ":" + _error_kind(r["error"])
            if len(examples.setdefault(kind, [])) < settings.error_examples:
                examples[kind].append({"query": r["query_norm"], "error": r["error"][:300]})
    categories: Counter = Counter()
    top1: Counter = Counter()
    for r in rows:
        if r["result_json"]:
            cats = json.loads(r["result_json"]).get("category") or []
            categories.update(cats)
            if cats:
                top1[cats[0]] += 1
    completion = [r["_completion_tokens"] for r in rows]
    latency = [r["_latency_s"] for r in rows if r["_latency_s"]]
    valid_rate = valid / n if n else 1.0
    gated = n >= max(settings.min_rows_for_gate, 1)
    passed = (valid_rate >= settings.min_valid_rate) if gated else True
    return {
        "dt": dt,
        "model_version": model_version,
        "rows": n,
        "valid": valid,
        "valid_rate": round(valid_rate, 4),
        "repaired_rows": repaired_rows,
        "repairs": dict(repairs.most_common()),
        "fallback": fallback,
        "fallback_rate": round(fallback / n, 4) if n else 0.0,
        "unresolved": unresolved,
        "errors": dict(errors.most_common()),
        "error_examples": examples,
        "finish_reasons": dict(Counter(r["finish_reason"] or "none" for r in rows).most_common()),
        "category_top1": dict(top1.most_common()),
        "category_all": dict(categories.most_common()),
        "src": dict(Counter(r["src"] for r in rows)),
        "tokens": {
            "prompt_total": sum(r["_prompt_tokens"] for r in rows),
            "completion_total": sum(completion),
            "completion_mean": round(sum(completion) / n, 1) if n else 0.0,
            "completion_p95": _percentile([float(c) for c in completion], 0.95),
        },
        "latency_s": {"p50": _percentile(latency, 0.5), "p95": _percentile(latency, 0.95)},
        "versions": {
            "rules": sorted({r["rules_version"] for r in rows if r["rules_version"]}),
            "prompt": sorted({r["prompt_version"] for r in rows if r["prompt_version"]}),
        },
        "min_valid_rate": settings.min_valid_rate,
        "gate_applied": gated,
        "passed": passed,
    }


def _error_kind(error: str | None) -> str:
    """A short, countable kind for an error message (the text before the first colon or paren)."""
    tail = (error or "").split(":", 1)[1].strip() if ":" in (error or "") else (error or "")
    for sep in (":", "(", ";", ","):
        tail = tail.split(sep, 1)[0]
    return tail.strip()[:60]


def _write_partition(dt: str, rows: list[dict[str, Any]], report: dict[str, Any]) -> Path:
    """Build ``dt=D`` in a staging folder and swap it in whole (readers see the old or the new, never half)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    final = partition(RESULTS, dt)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = final.parent / f".dt={dt}.staging.{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    if rows:
        schema = pa.schema([
            ("query_key", pa.string()), ("query_norm", pa.string()), ("result_json", pa.string()),
            ("src", pa.string()), ("repairs", pa.list_(pa.string())), ("error", pa.string()),
            ("finish_reason", pa.string()), ("model_version", pa.string()), ("rules_version", pa.string()),
            ("prompt_version", pa.string()), ("reason", pa.string()),
        ])
        table = pa.table({c: [r[c] for r in rows] for c in RESULT_COLUMNS}, schema=schema)
        pq.write_table(table, str(stage / "part-00000.parquet"))
    from qp_core.kv.rows import partition_stamp

    report = dict(report, report_path=str(final / QUALITY_FILE), row_check=partition_stamp(stage))
    (stage / QUALITY_FILE).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    old = final.parent / f".dt={dt}.old.{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(stage, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def run_validation(
    dt: str,
    model_version: str,
    settings: ValidationSettings | None = None,
    *,
    legacy: Any = None,
) -> ValidationOutcome:
    """Validate the day's generations of ``model_version``; write results + report; raise if the gate fails."""
    if settings is None:
        settings = load_generation_settings().validation
    started = time.perf_counter()
    missing = check_complete(dt, model_version)
    if missing and settings.require_all_shards:
        raise IncompleteGenerations(
            f"dt={dt} model={model_version}: no generations for prompt shards {missing}: run generate first"
        )
    gens = read_generations(dt, model_version)
    gens.sort(key=lambda g: (g.get("shard") or 0, g.get("pos") or 0))
    rows = validate_rows(gens, legacy)
    report = quality_report(dt, model_version, rows, settings)
    report["wall_s"] = round(time.perf_counter() - started, 3)
    publishable = [r for r in rows if r["src"] != "none"]
    if not report["passed"]:
        path = _write_partition(dt, [], report)
        report["report_path"] = str(path / QUALITY_FILE)
        logger.error("dt=%s model=%s: quality gate FAILED (valid rate %.3f < %.3f); nothing written for publish",
                     dt, model_version, report["valid_rate"], settings.min_valid_rate)
        raise QualityGateFailed(report)
    path = _write_partition(dt, publishable, report)
    report["report_path"] = str(path / QUALITY_FILE)
    logger.info("dt=%s model=%s: %d rows, valid %.1f%%, fallback %.1f%%, unresolved %d -> %s",
                dt, model_version, report["rows"], 100 * report["valid_rate"], 100 * report["fallback_rate"],
                report["unresolved"], path)
    return ValidationOutcome(publishable, report)
