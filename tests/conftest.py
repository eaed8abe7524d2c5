"""Shared test setup. Environment first (before any heavy import), then fixture plugins per component."""

from __future__ import annotations

import os
import tempfile

# Keep CPU work predictable on small machines and never touch a model hub.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# Every test run gets its own QP_HOME unless one is given, so tests never touch ./var.
os.environ.setdefault("QP_HOME", tempfile.mkdtemp(prefix="qp-test-home-"))

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.spark",
    "tests.fixtures.world",
    "tests.fixtures.engine",
    "tests.fixtures.tiny_model",
    "tests.fixtures.airflow",
]
