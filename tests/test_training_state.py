"""Crash safety of the chain's run state: a truncated stage marker and a half-written checkpoint
(what a kill -9 mid-write leaves) must not block or poison later runs (qp_core.training.state)."""

from __future__ import annotations

import json
import shutil

import pytest

from qp_core.training.state import (
    checkpoint_complete,
    latest_complete_checkpoint,
    read_json_marker,
    write_json_atomic,
)

LABEL = json.dumps(
    {"entities": [{"text": "雅诗兰黛", "type": "brand"}], "segments": ["雅诗兰黛", "粉底液"], "weights": [3, 2],
     "category": ["美妆/彩妆"], "intent_desc": "想买粉底液"},
    ensure_ascii=False, separators=(",", ":"),
)


def test_atomic_marker_write_and_truncated_marker(tmp_path):
    path = tmp_path / "stage" / "stage.json"
    write_json_atomic(path, {"model_dir": "/m", "wall_s": 1.5})
    assert read_json_marker(path) == {"model_dir": "/m", "wall_s": 1.5}
    assert [p.name for p in path.parent.iterdir()] == ["stage.json"]  # no temp file left behind
    # a kill in the middle of a plain write leaves a prefix of the JSON: read as "not done", moved aside
    full = path.read_text(encoding="utf-8")
    path.write_text(full[: len(full) // 2], encoding="utf-8")
    assert read_json_marker(path) is None
    assert not path.exists() and (path.parent / "stage.json.corrupt").exists()
    write_json_atomic(path, {"model_dir": "/m2"})  # the rerun writes a fresh marker
    assert read_json_marker(path) == {"model_dir": "/m2"}


def test_a_failed_write_keeps_the_old_marker(tmp_path):
    path = tmp_path / "stage.json"
    write_json_atomic(path, {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"v": object.__new__(type("X", (), {"__str__": None}))})  # fails mid-dump
    assert read_json_marker(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["stage.json"]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    from qp_core.training.modeling import create_base_model

    out = tmp_path_factory.mktemp("base") / "model"
    return create_base_model("tiny", ["雅诗兰黛粉底液", "兰蔻小黑瓶", LABEL, "粉底液推荐"] * 5, out, seed=0)


def test_interrupted_sft_stage_resumes_from_the_last_complete_checkpoint(base_model, tmp_path):
    """Real SFTTrainer checkpoints: a newer checkpoint killed while saving and a truncated stage.json."""
    from qp_core.training.config import load_training_settings
    from qp_core.training.data import unified_example
    from qp_core.training.sft import DONE_FILE, load_stage_result, train_sft

    rows = [{"query": "雅诗兰黛粉底液", "label": LABEL, "history": [], "notes": []}] * 4
    examples = [unified_example(r, "compact") for r in rows]
    out = tmp_path / "sft"
    st = load_training_settings("ci").sft1.model_copy(update={"max_steps": 2, "save_steps": 2, "batch_size": 2})
    first = train_sft(base_model, examples, out, st, threads=1)
    good = out / "checkpoint-2"
    assert first.extra["steps"] == 2 and checkpoint_complete(good)

    # the kill: stage.json half written, and checkpoint-4 has weights but a truncated trainer_state.json
    marker = (out / DONE_FILE).read_text(encoding="utf-8")
    (out / DONE_FILE).write_text(marker[:10], encoding="utf-8")
    shutil.rmtree(first.model_dir)
    half = out / "checkpoint-4"
    shutil.copytree(good, half)
    state = (half / "trainer_state.json").read_text(encoding="utf-8")
    (half / "trainer_state.json").write_text(state[: len(state) // 3], encoding="utf-8")
    assert not checkpoint_complete(half)
    assert latest_complete_checkpoint(out) == str(good)
    assert load_stage_result(out) is None  # unreadable marker = not done (the old code raised here)

    # the rerun continues from checkpoint-2 to 4 steps instead of crashing on checkpoint-4
    again = train_sft(base_model, examples, out, st.model_copy(update={"max_steps": 4}), threads=1)
    assert again.extra["steps"] == 4 and (again.model_dir / "config.json").exists()
    assert load_stage_result(out).extra["steps"] == 4


def test_checkpoint_without_weights_or_optimizer_is_incomplete(tmp_path):
    ck = tmp_path / "checkpoint-7"
    ck.mkdir()
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 7}), encoding="utf-8")
    assert not checkpoint_complete(ck)  # no weights yet
    (ck / "model.safetensors").write_bytes(b"x" * 16)
    assert not checkpoint_complete(ck)  # optimizer state missing: resuming would reset Adam
    assert checkpoint_complete(ck, need_optimizer=False)
    (ck / "optimizer.pt").write_bytes(b"x")
    assert checkpoint_complete(ck) and latest_complete_checkpoint(tmp_path) == str(ck)


def test_a_truncated_chain_marker_reruns_the_stage_instead_of_blocking(tmp_path, monkeypatch):
    """``run_stage`` on a stage whose stage.json a kill left half written: the stage runs again."""
    from qp_core.training import stages
    from qp_core.training.config import load_training_settings
    from qp_core.training.run import ChainContext, mark_done, stage_done

    ctx = ChainContext(load_training_settings("ci"), "t", tmp_path / "run", "2026-11-07", progress=lambda m: None)
    calls = []
    monkeypatch.setitem(stages.STAGE_FUNCS, "filter", lambda c: calls.append(1) or {"kept": 3})
    info = stages.run_stage(ctx, "filter")
    assert info["kept"] == 3 and calls == [1]
    assert stages.run_stage(ctx, "filter")["kept"] == 3 and calls == [1]  # done: skipped
    marker = ctx.stage_dir("filter") / "stage.json"
    marker.write_text(marker.read_text(encoding="utf-8")[:7], encoding="utf-8")  # the kill
    assert stage_done(ctx, "filter") is None
    assert stages.run_stage(ctx, "filter")["kept"] == 3 and calls == [1, 1]  # rerun, not a JSONDecodeError
    assert mark_done(ctx, "filter", {"extra": 1})["kept"] == 3
