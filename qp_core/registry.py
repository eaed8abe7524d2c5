"""Model registry: every trained model with the versions that produced it, and one production pointer.

Layout under ``$QP_HOME/registry`` (``QP_REGISTRY`` overrides, see ``qp_core.paths``)::

    models/<version>/            the model files (config, weights, tokenizer) as saved by transformers
    models/<version>/meta.json   profile, rules_mode, rules_version, prompt_version, data versions, metrics, created
    production.json              {"version": ..., "promoted_at": ..., "history": [previous versions]}

Why a pointer file: promotion must be one atomic step (``os.replace``) that the next nearline run reads;
flipping it back is rollback. The nearline pipeline derives its KV namespace from the production
record's version and rules/prompt versions, so a promotion fills a fresh namespace on the next run.

The promotion gate (``gate``) is pure so that its decisions can be tested on constructed metrics:
a candidate passes when Overall ≥ production Overall − tolerance and no sub-task (NER, Seg, TW,
Taxonomy) falls by more than δ. With no production model every candidate passes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qp_core.config import Settings
from qp_core.paths import registry_root

logger = logging.getLogger(__name__)

SUBTASK_KEYS = ("ner_f1", "seg_f1", "tw_f1", "taxonomy")
OVERALL_KEY = "overall"
META_FILE = "meta.json"
POINTER_FILE = "production.json"


class GateSettings(Settings):
    """Thresholds of the promotion gate, in metric points (0–100). ``training.yaml`` → ``gate``."""

    tolerance: float = 0.5
    max_subtask_drop: float = 2.0
    # With no production model yet, the system in production is the legacy pipeline: gate against it.
    first_against_legacy: bool = True
    # The candidate's own valid-JSON rate (0-1) on the golden set. Below the nearline quality gate
    # (conf/generation.yaml validation.min_valid_rate) a promoted model would stop every nearline run.
    min_valid_rate: float = 0.8


class RegistryError(RuntimeError):
    """Unknown version, or a promotion the gate refused."""


@dataclass
class ModelRecord:
    version: str
    path: str
    profile: str
    rules_mode: str = "full"
    rules_version: str = ""
    prompt_version: str = ""
    data_versions: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    stage: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ModelRecord":
        known = {f for f in cls.__dataclass_fields__}
        rec = cls(**{k: v for k, v in data.items() if k in known})
        rec.extra.update({k: v for k, v in data.items() if k not in known})
        return rec


@dataclass
class GateDecision:
    ok: bool
    reasons: list[str]

    def __bool__(self) -> bool:
        return self.ok


def gate(candidate: dict[str, Any], production: dict[str, Any] | None, settings: GateSettings | None = None) -> GateDecision:
    """Decide whether ``candidate`` metrics may replace ``production`` metrics (both ``metrics.evaluate`` dicts)."""
    settings = settings or GateSettings()
    if not production:
        return GateDecision(True, ["no production model: first promotion"])
    reasons: list[str] = []
    ok = True
    valid = candidate.get("valid_rate")
    if valid is not None and float(valid) < settings.min_valid_rate:
        ok = False
        reasons.append(f"valid JSON rate {float(valid):.2f} < {settings.min_valid_rate:g}")
    # Compare what downstream would read: a model's served metrics (its valid outputs, the legacy
    # fallback elsewhere) when the evaluation has them; the legacy baseline is served as it is.
    candidate, production = candidate.get("served") or candidate, production.get("served") or production
    cand_overall = float(candidate.get(OVERALL_KEY, 0.0))
    prod_overall = float(production.get(OVERALL_KEY, 0.0))
    if cand_overall < prod_overall - settings.tolerance:
        ok = False
        reasons.append(
            f"overall {cand_overall:.2f} < production {prod_overall:.2f} - tolerance {settings.tolerance:g}"
        )
    for key in SUBTASK_KEYS:
        if key not in production:
            continue
        drop = float(production[key]) - float(candidate.get(key, 0.0))
        if drop > settings.max_subtask_drop:
            ok = False
            reasons.append(f"{key} drops {drop:.2f} > δ {settings.max_subtask_drop:g}")
    if ok:
        reasons.append(f"overall {cand_overall:.2f} vs production {prod_overall:.2f}: passes")
    return GateDecision(ok, reasons)


def _gate_settings() -> GateSettings:
    from qp_core.config import load_conf

    data = load_conf("training", required=False).get("gate") or {}
    return GateSettings.model_validate(data)


def _root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else registry_root()


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=2)
    os.replace(tmp, path)


def _new_version(profile: str, root: Path) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = f"{profile}-{stamp}"
    version, n = base, 1
    while (root / "models" / version).exists():
        n += 1
        version = f"{base}-{n}"
    return version


def register(
    model_dir: str | Path,
    meta: dict[str, Any],
    *,
    version: str | None = None,
    root: str | Path | None = None,
    copy: bool = True,
) -> ModelRecord:
    """Store ``model_dir`` under ``models/<version>/`` with ``meta``; returns the record.

    ``meta`` needs at least ``profile``; other keys fill the record (unknown keys land in ``extra``).
    ``copy=False`` records the model in place (no copy) — for large GPU checkpoints on shared storage.
    """
    reg = _root(root)
    profile = str(meta.get("profile") or "unknown")
    version = version or _new_version(profile, reg)
    dest = reg / "models" / version
    if dest.exists() and (dest / META_FILE).exists():
        raise RegistryError(f"version {version} already registered")
    dest.mkdir(parents=True, exist_ok=True)
    model_path = Path(model_dir).resolve()
    if copy:
        for item in model_path.iterdir():
            if item.name.startswith("checkpoint-") or item.name == META_FILE:
                continue  # trainer checkpoints are resumable state, not the model
            target = dest / item.name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
        stored = dest
    else:
        stored = model_path
    data = dict(meta)
    data.update(
        version=version,
        path=str(stored),
        profile=profile,
        created=meta.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    record = ModelRecord.from_json(data)
    _atomic_write_json(dest / META_FILE, record.to_json())
    logger.info("registered model %s at %s", version, stored)
    return record


def get(version: str, *, root: str | Path | None = None) -> ModelRecord:
    meta = _root(root) / "models" / version / META_FILE
    if not meta.exists():
        raise RegistryError(f"unknown model version {version!r} (no {meta})")
    return ModelRecord.from_json(json.loads(meta.read_text(encoding="utf-8")))


def list_models(*, root: str | Path | None = None) -> list[ModelRecord]:
    """All registered models, oldest first."""
    models = _root(root) / "models"
    if not models.exists():
        return []
    records = [get(p.name, root=root) for p in models.iterdir() if (p / META_FILE).exists()]
    return sorted(records, key=lambda r: (r.created, r.version))


def _pointer(root: str | Path | None) -> dict[str, Any] | None:
    path = _root(root) / POINTER_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def promotion(*, root: str | Path | None = None) -> dict[str, Any]:
    """How production was last set: ``version``, ``promoted_at``, ``forced``, ``gate`` reasons ({} if never)."""
    return _pointer(root) or {}


def production(*, root: str | Path | None = None) -> ModelRecord | None:
    """The production model's record, or None when nothing was ever promoted."""
    ptr = _pointer(root)
    return get(ptr["version"], root=root) if ptr and ptr.get("version") else None


def update_metrics(version: str, metrics: dict[str, Any], *, root: str | Path | None = None) -> ModelRecord:
    rec = get(version, root=root)
    rec.metrics = dict(metrics)
    _atomic_write_json(_root(root) / "models" / version / META_FILE, rec.to_json())
    return rec


def promote(
    version: str,
    *,
    force: bool = False,
    settings: GateSettings | None = None,
    root: str | Path | None = None,
    baseline: dict[str, Any] | None = None,
) -> GateDecision:
    """Point production at ``version`` if the gate passes (or ``force``); raises RegistryError when refused.

    Metrics are compared as stored in the records (both evaluated on the golden set by the chain).
    ``baseline``: metrics to gate against when there is no production model yet (the legacy pipeline's,
    on the same golden rows); without it a first promotion always passes.
    """
    cand = get(version, root=root)
    current = production(root=root)
    if current is not None and current.version == version:
        return GateDecision(True, [f"{version} is already production"])
    if current is not None and current.profile != cand.profile:
        logger.info("promoting across profiles: %s -> %s", current.profile, cand.profile)
    settings = settings or _gate_settings()
    reference = current.metrics if current else (baseline if settings.first_against_legacy else None)
    decision = gate(cand.metrics, reference, settings)
    if current is None and reference is not None:
        decision.reasons.insert(0, "no production model: gated against the legacy baseline")
    if not decision.ok and not force:
        raise RegistryError(f"promotion of {version} refused: " + "; ".join(decision.reasons))
    ptr = _pointer(root) or {}
    history = [*ptr.get("history", [])]
    if current is not None:
        history.append(current.version)
    _atomic_write_json(
        _root(root) / POINTER_FILE,
        {
            "version": version,
            "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "forced": bool(force and not decision.ok),
            "gate": decision.reasons,
            "history": history[-50:],
        },
    )
    logger.info("promoted %s (%s)", version, "; ".join(decision.reasons))
    return decision


def rollback(*, root: str | Path | None = None) -> ModelRecord:
    """Point production back at the previously promoted version (no gate: rollback must always work)."""
    ptr = _pointer(root)
    if not ptr or not ptr.get("history"):
        raise RegistryError("nothing to roll back to")
    history = [*ptr["history"]]
    previous = history.pop()
    get(previous, root=root)  # must exist
    _atomic_write_json(
        _root(root) / POINTER_FILE,
        {
            "version": previous,
            "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "forced": False,
            "gate": [f"rollback from {ptr['version']}"],
            "history": history,
        },
    )
    return get(previous, root=root)


# ``registry.list()`` reads naturally at call sites; functions above never call the builtin ``list``.
list = list_models  # noqa: A001
