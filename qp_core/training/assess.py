"""What the chain's evaluate and promote stages conclude, and how honestly: baselines, splits, intervals.

* Two legacy rows in every report: ``legacy_refit`` — the legacy pipeline refitted on exactly the model's
  training annotations (the fair baseline: same data, other method), listed first; and ``legacy`` — the
  stale snapshot the nearline fallback serves (what a promotion replaces).
* Golden is for the report only; the reserved dev split (``data.split_dev``) is what the promotion gate and
  the choice of the promoted stage look at, so that the reported numbers were not used to pick the model.
* Every comparison is a paired bootstrap over the same rows (``compare.paired_bootstrap``) with a 95%
  interval, and a verdict only where it excludes zero; per slice (ambiguous / new word / rest) and
  re-weighted to live traffic.

Functions here take plain inputs (rows, metric dicts, callables) so that the chain module stays the
place that knows about run folders and stage markers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from qp_core.training.compare import (
    KEYS,
    SLICES,
    TRAFFIC,
    fmt_interval,
    paired_bootstrap,
    slice_masks,
    slice_scores,
    slice_shares,
    snapshot_vocabulary,
)

logger = logging.getLogger(__name__)

LEGACY_REFIT = "legacy_refit"
LEGACY_SNAPSHOT = "legacy"
NAMES = {
    LEGACY_REFIT: "legacy refitted on the model's training annotations (fair baseline)",
    LEGACY_SNAPSHOT: "legacy snapshot (stale; what the nearline fallback serves)",
    "base": "stage 0 (base)",
    "sft1": "stage 1 SFT (unified + λ·aux)",
    "sft2": "stage 2 SFT (recent)",
    "grpo": "stage 3 GRPO",
    "production": "current production model",
}
MODEL_ORDER = ("base", "sft1", "sft2", "grpo")
SHORT = {"overall": "Overall", "ner_f1": "NER", "seg_f1": "Seg", "tw_f1": "TW", "taxonomy": "Taxonomy"}


# ------------------------------------------------------------------------------------------ evaluation


def evaluate_cached(out_dir: Path, systems: Mapping[str, Callable[[], dict[str, Any]]],
                    progress: Callable[[str], None] = logger.info) -> dict[str, dict[str, Any]]:
    """Run each system's evaluation once: ``<out_dir>/<name>.json`` caches it (written atomically)."""
    from qp_core.training.state import read_json_marker, write_json_atomic

    out: dict[str, dict[str, Any]] = {}
    for name, run in systems.items():
        cache = out_dir / f"{name}.json"
        cached = read_json_marker(cache)
        if cached is not None and "per_row" in cached:
            out[name] = cached
            continue
        progress(f"evaluate: {name} on {out_dir.name}")
        metrics = run()
        write_json_atomic(cache, metrics)
        out[name] = metrics
        progress(f"evaluate: {name} on {out_dir.name}: overall {metrics.get('overall', 0):.2f} "
                 f"({metrics.get('eval_s', 0)} s, n={metrics.get('n')})")
    return out


def slice_setup(golden: Sequence[Mapping[str, Any]], snapshot_rows: Sequence[Mapping[str, Any]],
                traffic_queries: Sequence[str], labeller) -> tuple[dict[str, Any], dict[str, float]]:
    """Golden slice masks and the slices' traffic shares.

    ``snapshot_rows``: the annotation rows the legacy snapshot was fitted on (defines "new word").
    ``traffic_queries``: a draw from the query log; ``labeller`` (the refitted legacy, Seg 100 on golden)
    segments them, since log queries carry no labels.
    """
    vocab = snapshot_vocabulary(snapshot_rows)
    masks = slice_masks(golden, vocab)
    shares: dict[str, float] = {}
    if traffic_queries:
        preds = labeller.predict_batch(list(traffic_queries))
        shares = slice_shares([{"query": q, "label": p} for q, p in zip(traffic_queries, preds) if p], vocab)
    return masks, shares


def served(metrics: Mapping[str, Any]) -> Mapping[str, Any]:
    """What downstream reads: the model's valid outputs with the legacy fallback elsewhere (when evaluated)."""
    return metrics.get("served") or metrics


# --------------------------------------------------------------------------------------- comparisons


def compare(a: Mapping[str, Any], b: Mapping[str, Any], *, masks=None, shares=None, seed: int = 0,
            draws: int = 1000) -> dict[str, Any]:
    return paired_bootstrap(a["per_row"], b["per_row"], masks=masks, shares=shares, seed=seed, draws=draws)


def comparison_pairs(present: Sequence[str]) -> list[tuple[str, str]]:
    """(a, b) pairs the report compares: each model stage vs both legacy rows, each stage vs the previous."""
    stages = [s for s in MODEL_ORDER if s in present]
    pairs = []
    for s in stages:
        for base in (LEGACY_REFIT, LEGACY_SNAPSHOT):
            if base in present:
                pairs.append((s, base))
    pairs += list(zip(stages[1:], stages))
    return pairs


def comparison_rows(results: Mapping[str, Mapping[str, Any]], pairs: Sequence[tuple[str, str]], *, masks=None,
                    shares=None, seed: int = 0) -> list[dict[str, Any]]:
    """One row per comparison: Δ with 95% interval per metric, per slice and traffic-weighted."""
    rows = []
    for a, b in pairs:
        cmp = compare(results[a], results[b], masks=masks, shares=shares, seed=seed)
        row: dict[str, Any] = {"a": a, "b": b, "name": f"{NAMES.get(a, a)} − {NAMES.get(b, b)}", "n": cmp["n"],
                               "verdict": cmp["all"]["overall"]["verdict"], "intervals": cmp}
        for key in KEYS:
            row[SHORT[key]] = fmt_interval(cmp["all"][key])
        for s in (*SLICES, TRAFFIC):
            if s in cmp:
                row[f"Overall {s}"] = fmt_interval(cmp[s]["overall"])
        rows.append(row)
    return rows


def slice_rows(results: Mapping[str, Mapping[str, Any]], order: Sequence[str], masks, shares) -> list[dict[str, Any]]:
    rows = []
    for name in order:
        if name not in results:
            continue
        sc = slice_scores(results[name]["per_row"], masks, shares)
        row: dict[str, Any] = {"name": NAMES.get(name, name)}
        for s in SLICES:
            row[f"{s} (n={sc[s]['n']})"] = sc[s].get("overall")
        row["traffic-weighted Overall"] = sc.get(TRAFFIC)
        row["Overall (golden mix)"] = results[name].get("overall")
        rows.append(row)
    return rows


def best_stage(dev: Mapping[str, Mapping[str, Any]], stages: Sequence[str], seed: int = 0) -> tuple[str, list[str]]:
    """The stage with the highest served Overall on dev; the notes give each stage's paired interval
    against it, so "the last stage" is promoted only when dev says it is the best one."""
    cands = [s for s in stages if s in dev]
    if not cands:
        raise ValueError("no evaluated model stage on the dev split")
    best = max(cands, key=lambda s: (served(dev[s]).get("overall", 0.0), MODEL_ORDER.index(s)))
    notes = []
    for s in cands:
        if s == best:
            continue
        cmp = compare(served(dev[s]), served(dev[best]), seed=seed)
        notes.append(f"dev: {NAMES.get(s, s)} − {NAMES.get(best, best)}: Overall {fmt_interval(cmp['all']['overall'])}")
    return best, notes


def strip_rows(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A metric dict without the per-row counts (for report rows and registry records)."""
    out = {k: v for k, v in metrics.items() if k != "per_row"}
    if isinstance(out.get("served"), dict):
        out["served"] = {k: v for k, v in out["served"].items() if k != "per_row"}
    return out


def dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
