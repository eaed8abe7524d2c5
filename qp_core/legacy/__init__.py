"""The legacy QP pipeline: isolated per-task discriminative models (baseline, aux pseudo-labels, fallback)."""

from qp_core.legacy.pipeline import (
    LEGACY_VERSION,
    EmptyQueryError,
    LegacyPipeline,
    load_or_train,
    read_annotations,
    training_examples,
    training_hash,
)

__all__ = [
    "LEGACY_VERSION",
    "EmptyQueryError",
    "LegacyPipeline",
    "load_or_train",
    "read_annotations",
    "training_examples",
    "training_hash",
]
