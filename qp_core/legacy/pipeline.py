"""The legacy QP pipeline: isolated discriminative models, one per sub-task (the paper's baseline).

Each model sees the query alone — no rewrite history, no notes, no other model's beliefs — except where a
cascade is inherent (term weights are given to the segmenter's words; the intent template is filled from
the segments, weights and top category). It plays three roles: the baseline row of every evaluation,
the pseudo-labeller of stage-1 auxiliary data (``predict_task``), and the fallback whenever a model
output is unusable, so ``predict`` returns a valid unified dict for every query that normalises to
something non-empty, repairing its own output and, as the last resort, degrading to a trivial one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from qp_core.lake import ANNOTATIONS
from qp_core.legacy.intent import describe, intent_rules
from qp_core.legacy.ner import EntityTagger
from qp_core.legacy.segmenter import Segmenter
from qp_core.legacy.taxonomy import TaxonomyClassifier
from qp_core.legacy.weights import TermWeighter
from qp_core.normalize import compact, normalize_query
from qp_core.prompt import TASKS, task_target
from qp_core.schema import (
    FIELDS,
    MAX_CATEGORIES,
    MAX_INTENT_CHARS,
    MAX_WEIGHT,
    entity_spans,
    entity_types,
    taxonomy_labels,
    to_dict,
    validation_errors,
)

logger = logging.getLogger(__name__)

# Bump when features/models change: part of the cache key of fitted pipelines.
LEGACY_VERSION = "legacy-1"
MODEL_FILE = "legacy.pkl"
META_FILE = "meta.json"


class EmptyQueryError(ValueError):
    """The query normalises to nothing: no valid unified result exists for it."""


def _label_dict(row: dict[str, Any]) -> dict[str, Any] | None:
    label = row.get("label")
    if isinstance(label, str):
        try:
            label = json.loads(label)
        except json.JSONDecodeError:
            return None
    return label if isinstance(label, dict) else None


def training_examples(rows: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(query, unified label) pairs of annotation rows whose label is valid for its query."""
    out, skipped = [], 0
    for row in rows:
        q, label = row.get("query"), _label_dict(row)
        if not isinstance(q, str) or label is None or not compact(q) or validation_errors(label, q):
            skipped += 1
            continue
        out.append((q, label))
    if skipped:
        logger.warning("legacy: skipped %d annotation rows with a missing or invalid label", skipped)
    return out


class LegacyPipeline:
    def __init__(self):
        self.segmenter = Segmenter()
        self.tagger = EntityTagger()
        self.weighter = TermWeighter()
        self.taxonomy = TaxonomyClassifier()
        self.fallback_label = taxonomy_labels()[0]
        self.meta: dict[str, Any] = {"version": LEGACY_VERSION}

    # ------------------------------------------------------------------------------------------ training
    def fit(self, rows: Iterable[dict[str, Any]]) -> "LegacyPipeline":
        """Train every sub-task model on annotation rows (``query`` + unified ``label`` JSON or dict)."""
        examples = training_examples(rows)
        if not examples:
            raise ValueError("legacy pipeline: no valid annotation rows to train on")
        queries = [q for q, _ in examples]
        labels = [lab for _, lab in examples]
        segs = [[compact(s) for s in lab["segments"]] for lab in labels]
        self.segmenter.fit(segs)
        self.tagger.fit(queries, [lab["entities"] for lab in labels])
        self.weighter.fit(segs, [lab["weights"] for lab in labels])
        self.taxonomy.fit(queries, [lab["category"] for lab in labels])
        top1 = Counter(lab["category"][0] for lab in labels)
        self.fallback_label = top1.most_common(1)[0][0]
        self.meta = {"version": LEGACY_VERSION, "n_train": len(examples),
                     "lexicon": len(self.segmenter.lexicon), "gazetteer": len(self.tagger.gazetteer),
                     "taxonomy_threshold": self.taxonomy.threshold}
        logger.info("legacy pipeline trained on %d rows", len(examples))
        return self

    # ----------------------------------------------------------------------------------------- inference
    def predict(self, query: str) -> dict[str, Any]:
        """A valid unified dict for ``query``; ``EmptyQueryError`` if it normalises to nothing."""
        if not compact(query or ""):
            raise EmptyQueryError(f"query {str(query)[:40]!r} is empty after normalisation")
        return self.predict_batch([query])[0]

    def predict_batch(self, queries: Sequence[str | None]) -> list[dict[str, Any] | None]:
        """One valid unified dict per query (None where the query normalises to nothing)."""
        idx = [i for i, q in enumerate(queries) if isinstance(q, str) and compact(q)]
        qs = [queries[i] for i in idx]
        out: list[dict[str, Any] | None] = [None] * len(queries)
        if not qs:
            return out
        segs = [self.segmenter.cut(q) for q in qs]
        ents = self.tagger.predict_many(qs)
        weights = self.weighter.predict_many(segs)
        cats = self.taxonomy.predict_many(qs)
        rules = intent_rules()
        for i, q, s, e, w, c in zip(idx, qs, segs, ents, weights, cats):
            draft = {"entities": e, "segments": s, "weights": w, "category": c,
                     "intent_desc": describe(s, w, (c or [self.fallback_label])[0], rules)}
            out[i] = self.repair(draft, q)
        return out

    def predict_task(self, task: str, query: str) -> str:
        """Pseudo-label of one sub-task: the completion text ``prompt.task_target`` gives for gold data."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        return task_target(task, self.predict(query))

    def predict_tasks_batch(self, task: str, queries: Sequence[str]) -> list[str | None]:
        """``predict_task`` over many queries (None where the query normalises to nothing)."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        return [None if r is None else task_target(task, r) for r in self.predict_batch(queries)]

    # ---------------------------------------------------------------------------------------- robustness
    def repair(self, draft: dict[str, Any], query: str) -> dict[str, Any]:
        """Make ``draft`` valid for ``query``: drop what can't be placed, clamp, fill; last resort trivial."""
        q = compact(query)
        types = set(entity_types())
        labels = set(taxonomy_labels())
        res: dict[str, Any] = {}
        # entities: known type, non-empty, placeable left to right after the previous kept one
        kept: list[dict[str, str]] = []
        for ent in draft.get("entities") or []:
            if not isinstance(ent, dict) or ent.get("type") not in types or not compact(str(ent.get("text", ""))):
                continue
            cand = kept + [{"text": str(ent["text"]), "type": ent["type"]}]
            if entity_spans(cand, query)[-1] is not None:
                kept = cand
        res["entities"] = kept
        segs = [s for s in (draft.get("segments") or []) if isinstance(s, str) and compact(s)]
        if "".join(compact(s) for s in segs) != q:
            segs = [c for c in normalize_query(query).split(" ") if compact(c)] or [query]
        res["segments"] = segs
        ws = [w for w in (draft.get("weights") or []) if isinstance(w, int) and not isinstance(w, bool)]
        ws = [max(0, min(MAX_WEIGHT, w)) for w in ws][: len(segs)]
        res["weights"] = ws + [1] * (len(segs) - len(ws))
        cats: list[str] = []
        for c in draft.get("category") or []:
            if c in labels and c not in cats:
                cats.append(c)
        res["category"] = cats[:MAX_CATEGORIES] or [self.fallback_label if self.fallback_label in labels
                                                   else taxonomy_labels()[0]]
        intent = draft.get("intent_desc")
        if not isinstance(intent, str) or not intent.strip():
            intent = describe(res["segments"], res["weights"], res["category"][0])
        res["intent_desc"] = intent[:MAX_INTENT_CHARS]
        res = to_dict(res)
        errors = validation_errors(res, query)
        if errors:
            logger.warning("legacy repair fell back to a trivial result for %r: %s", query[:40], errors)
            res = {"entities": [], "segments": [query], "weights": [1], "category": res["category"],
                   "intent_desc": "用户想了解相关内容，属于" + res["category"][0]}
        return res

    # --------------------------------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Pickle of the fitted models + meta.json. Load only directories this code wrote (pickle)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f"{MODEL_FILE}.{os.getpid()}.tmp"  # unique: Spark executors may save the same cache at once
        with open(tmp, "wb") as fh:
            pickle.dump(self, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(d / MODEL_FILE)
        meta_tmp = d / f"{META_FILE}.{os.getpid()}.tmp"
        meta_tmp.write_text(json.dumps(self.meta, ensure_ascii=False, indent=2), encoding="utf-8")
        meta_tmp.replace(d / META_FILE)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "LegacyPipeline":
        with open(Path(directory) / MODEL_FILE, "rb") as fh:
            obj = pickle.load(fh)
        if not isinstance(obj, cls):
            raise TypeError(f"{directory}: not a LegacyPipeline")
        if obj.meta.get("version") != LEGACY_VERSION:
            raise ValueError(f"{directory}: legacy model version {obj.meta.get('version')} != {LEGACY_VERSION}")
        return obj


def training_hash(rows: Iterable[dict[str, Any]]) -> str:
    """16-hex sha256 of (query, label) pairs, order-independent, plus the code version."""
    items = sorted(
        json.dumps([r.get("query"), r.get("label") if isinstance(r.get("label"), str)
                    else json.dumps(r.get("label"), ensure_ascii=False, sort_keys=True)], ensure_ascii=False)
        for r in rows
    )
    h = hashlib.sha256(LEGACY_VERSION.encode())
    for it in items:
        h.update(it.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def read_annotations(lake_root: str | Path | None = None, dataset: str = ANNOTATIONS) -> list[dict[str, Any]]:
    """Rows (query, history, notes, label) of a lake dataset, every ``dt`` partition."""
    import pyarrow.dataset as ds

    from qp_core import paths

    root = Path(lake_root) if lake_root else paths.lake_root()
    path = root / dataset
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: generate the world first (`qp world generate`)")
    table = ds.dataset(str(path), format="parquet", partitioning="hive").to_table()
    cols = [c for c in ("query", "history", "notes", "label", "dt") if c in table.column_names]
    return table.select(cols).to_pylist()


def snapshot_rows(rows: list[dict[str, Any]], snapshot_days: int | None) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows the legacy snapshot is fitted on, and the ``dt`` partitions they come from.

    Rows carrying a ``dt`` (every row ``read_annotations`` returns) are kept when their dt is among the
    ``snapshot_days`` oldest dts present; ``snapshot_days`` 0/None keeps every dt. Rows without a ``dt``
    (a hand-built training set) are always kept: the window is a property of the lake's history.
    """
    dts = sorted({str(r["dt"]) for r in rows if r.get("dt") is not None})
    if not snapshot_days or len(dts) <= snapshot_days:
        return rows, dts
    keep = set(dts[:snapshot_days])
    return [r for r in rows if r.get("dt") is None or str(r["dt"]) in keep], dts[:snapshot_days]


_FROM_CONF: Any = object()  # snapshot_days not given: read conf/legacy.yaml


def load_or_train(lake_root: str | Path | None = None, rows: list[dict[str, Any]] | None = None,
                  *, snapshot_days: int | None = _FROM_CONF) -> LegacyPipeline:
    """The legacy pipeline fitted on the lake's ``raw/annotations``, cached under
    ``$QP_HOME/registry/legacy/<training hash>/`` so every job and test reuses one fit per training set.

    It is a stale snapshot by design (``conf/legacy.yaml`` ``snapshot_days``, or the argument): only the
    oldest ``snapshot_days`` annotation days are used (``snapshot_rows``), here, for every caller
    (nearline fallback, auxiliary pseudo-labels, evaluation baselines, ``qp eval legacy``). The cache key
    hashes the rows actually used.
    """
    from qp_core import paths

    if snapshot_days is _FROM_CONF:
        from qp_core.legacy.settings import load_legacy_settings

        snapshot_days = load_legacy_settings().snapshot_days
    rows = rows if rows is not None else read_annotations(lake_root)
    n_all = len(rows)
    rows, dts = snapshot_rows(rows, snapshot_days)
    if dts:
        logger.info("legacy snapshot (snapshot_days=%s): fitted on %d of %d annotation rows, dt %s",
                    snapshot_days or "all", len(rows), n_all, ", ".join(dts))
    key = training_hash(rows)
    cache = paths.registry_root() / "legacy" / key
    if (cache / MODEL_FILE).exists():
        try:
            return LegacyPipeline.load(cache)
        except Exception as exc:  # stale/corrupt cache: retrain
            logger.warning("legacy cache %s unusable (%s): retraining", cache, exc)
    pipe = LegacyPipeline().fit(rows)
    pipe.meta["training_hash"] = key
    pipe.meta["snapshot_dts"] = dts
    pipe.save(cache)
    logger.info("legacy pipeline cached at %s", cache)
    return pipe
