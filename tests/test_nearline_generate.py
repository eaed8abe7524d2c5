"""Generation through the real vLLM CPU engine (one engine for the whole run) and the resumable shard writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from qp_core import paths
from qp_core.engines import Generation
from qp_core.lake import generation_shard as shard_path
from qp_core.nearline.generate import GENERATION_COLUMNS, run_generation
from qp_core.nearline.settings import GenerationSettings
from tests.fixtures.engine import engine_settings, write_prompt_shards
from tests.fixtures.tiny_model import SAMPLE_TEXTS

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

QUERIES = [f"{q} {i}" for i, q in enumerate(SAMPLE_TEXTS)]


def _settings(**engine) -> GenerationSettings:
    return GenerationSettings(engine=engine_settings(**engine))


def _read_all(dt: str, version: str):
    import pyarrow.dataset as ds

    folder = paths.partition("curated/generations", dt) / f"model={version}"
    files = sorted(str(p) for p in folder.glob("shard=*.parquet"))
    return ds.dataset(files, format="parquet").to_table().to_pylist() if files else []


def test_structured_output_is_schema_valid_json(vllm_engine):
    import jsonschema

    from qp_core.prompt import build_messages
    from qp_core.schema import json_schema

    msgs = [build_messages(q, rules_mode="compact") for q in QUERIES]
    gens = vllm_engine.generate(msgs, max_tokens=400)
    assert len(gens) == len(msgs) and all(isinstance(g, Generation) for g in gens)
    finished = [g for g in gens if g.finish_reason == "stop"]
    assert finished, [g.finish_reason for g in gens]
    problems = []
    for g in finished:  # random weights, yet every finished answer is JSON of our schema
        try:
            jsonschema.validate(json.loads(g.text), json_schema())
        except (ValueError, jsonschema.ValidationError) as exc:
            problems.append((g.text[:300], str(exc)[:300]))
    assert not problems, problems
    for g in gens:
        assert g.error is None and g.prompt_tokens > 0 and g.completion_tokens > 0 and g.latency_s > 0, g
        if g.finish_reason == "length":
            assert g.completion_tokens == 400


def _query_grammar_outputs_validate(engine, max_tokens: int):
    """Random weights, yet with its query's grammar every finished answer passes the whole contract."""
    from qp_core.parse import parse_output
    from qp_core.prompt import build_messages

    queries = QUERIES[:6] + ['a"b \\c', "🔥平价 苹果"]
    gens = engine.generate([build_messages(q, rules_mode="compact") for q in queries], max_tokens=max_tokens,
                           queries=queries)
    finished = [(q, g) for q, g in zip(queries, gens) if g.finish_reason == "stop"]
    assert len(finished) >= len(queries) // 2, [g.finish_reason for g in gens]
    failed = [(q, g.text, parse_output(g.text, q).error) for q, g in finished if parse_output(g.text, q).result is None]
    assert not failed, failed


def test_query_grammar_makes_every_finished_output_valid(vllm_engine):
    _query_grammar_outputs_validate(vllm_engine, max_tokens=400)


def test_query_grammar_in_the_transformers_engine(tiny_model_dir):
    from qp_core.engines import make_engine

    with make_engine(tiny_model_dir, engine_settings(backend="hf", hf_batch_size=4)) as engine:
        _query_grammar_outputs_validate(engine, max_tokens=400)


def test_over_long_prompt_is_flagged_per_row(vllm_engine):
    from qp_core.prompt import build_messages

    long_msgs = [{"role": "system", "content": "规" * 3000}, {"role": "user", "content": "q"}]
    gens = vllm_engine.generate([build_messages("猫粮", rules_mode="compact"), long_msgs,
                                 build_messages("火锅", rules_mode="compact")], max_tokens=8)
    assert [g.error for g in gens] == [None, "prompt_too_long", None]
    assert gens[1].text == "" and gens[1].prompt_tokens > 1536 and gens[1].finish_reason == "error"
    assert gens[0].completion_tokens > 0 and gens[2].completion_tokens > 0


def test_run_generation_writes_versions_and_skips_finished_shards(vllm_engine, tmp_path):
    dt = "2026-11-02"
    rows = write_prompt_shards(dt, QUERIES[:7], shard_size=3, bad_rows={5: "not json"})
    rep = run_generation(dt, vllm_engine.model_dir, "v-test", settings=_settings(), engine=vllm_engine, progress=False)
    assert [s.shard for s in rep.shards] == [0, 1, 2] and rep.rows_generated == 7
    out = _read_all(dt, "v-test")
    assert sorted(r["query_key"] for r in out) == sorted(r["query_key"] for r in rows)
    assert set(out[0]) >= set(GENERATION_COLUMNS)
    for r in out:
        assert r["model_version"] == "v-test" and r["rules_version"] == rows[0]["rules_version"]
        assert r["prompt_version"] == rows[0]["prompt_version"] and r["finish_reason"] in {"stop", "length", "error"}
    bad = [r for r in out if r["error"]]
    assert [(r["pos"], r["error"]) for r in bad] == [(5, "bad_messages_json")]

    # a rerun finds every shard up to date and never starts an engine (the model path does not even exist)
    mtimes = {s: shard_path(dt, "v-test", s).stat().st_mtime_ns for s in range(3)}
    again = run_generation(dt, tmp_path / "no-such-model", "v-test", settings=_settings(), progress=False)
    assert all(s.skipped for s in again.shards) and again.engine_start_s is None
    assert {s: shard_path(dt, "v-test", s).stat().st_mtime_ns for s in range(3)} == mtimes

    # changed prompts in a shard (prompts step rerun) -> only that shard is regenerated
    write_prompt_shards(dt, QUERIES[:6] + ["全新的查询"], shard_size=3)
    third = run_generation(dt, vllm_engine.model_dir, "v-test", settings=_settings(), engine=vllm_engine, progress=False)
    assert [(s.shard, s.skipped) for s in third.shards] == [(0, True), (1, False), (2, False)]
    assert "全新的查询" in {r["query_norm"] for r in _read_all(dt, "v-test")}


def test_killed_run_resumes_exactly_once(vllm_engine, tiny_model_dir):
    """Kill a real generate job (hf backend: seconds to start) mid-run, then finish with the vLLM engine."""
    dt = "2026-11-03"
    queries = [f"{q} 第{i}次" for i, q in enumerate(SAMPLE_TEXTS * 2)]  # 24 rows, 8 shards
    rows = write_prompt_shards(dt, queries, shard_size=3)
    version = "v-kill"
    folder = paths.partition("curated/generations", dt) / f"model={version}"
    # a temporary file left by an earlier killed process (pid that cannot exist) must be cleaned up
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / ".shard=00007.parquet.999999999.tmp"
    stale.write_bytes(b"half a file")

    env = dict(os.environ, QP_HOME=str(paths.qp_home()), OMP_NUM_THREADS="1",
               PYTHONPATH=str(paths.REPO_ROOT))
    cmd = [sys.executable, "-m", "jobs.generate", "--dt", dt, "--model-dir", str(tiny_model_dir),
           "--model-version", version, "--backend", "hf", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=str(paths.REPO_ROOT), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None and not shard_path(dt, version, 0).exists():
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert shard_path(dt, version, 0).exists(), err.decode()[-2000:]
    done_before = {s for s in range(8) if shard_path(dt, version, s).exists()}
    assert len(done_before) < 8, "the job finished before it could be killed"
    mtimes = {s: shard_path(dt, version, s).stat().st_mtime_ns for s in done_before}

    rep = run_generation(dt, tiny_model_dir, version, settings=_settings(), engine=vllm_engine, progress=False)
    assert {s.shard for s in rep.shards if s.skipped} == done_before
    assert {s.shard for s in rep.shards if not s.skipped} == set(range(8)) - done_before
    out = _read_all(dt, version)
    keys = [r["query_key"] for r in out]
    assert len(keys) == len(set(keys)) == len(rows)  # exactly once: no duplicates, no losses
    assert set(keys) == {r["query_key"] for r in rows}
    assert {s: shard_path(dt, version, s).stat().st_mtime_ns for s in done_before} == mtimes
    assert not stale.exists()
    assert not list(folder.glob(".*.tmp"))
