"""Shared test setup. Environment first (before any heavy import), then fixture plugins per component."""

from __future__ import annotations

import os
import tempfile

from qp_core.ops.process import apply_env_defaults  # stdlib only: cheap, nothing heavy imported yet

# Keep CPU work predictable on small machines and never touch a model hub.
apply_env_defaults(OMP_NUM_THREADS="1", VLLM_CPU_KVCACHE_SPACE="1")
# Every test run gets its own empty QP_HOME, so tests never touch ./var (the Makefile exports QP_HOME=./var for
# the demo) and a second `make test` in the same checkout starts as clean as the first. QP_TEST_HOME picks one.
os.environ["QP_HOME"] = os.environ.get("QP_TEST_HOME") or tempfile.mkdtemp(prefix="qp-test-home-")

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.spark",
    "tests.fixtures.world",
    "tests.fixtures.engine",
    "tests.fixtures.tiny_model",
    "tests.fixtures.airflow",
]
