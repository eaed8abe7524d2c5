"""Crash-safe run state of the training chain: stage markers and the checkpoint a stage resumes from.

Why: a stage's ``stage.json`` says "done, skip me" and a ``checkpoint-*`` folder says "resume from here".
Both must survive a kill -9 at any instant:

* markers are written atomically (temp file in the same folder, fsync, ``os.replace``, fsync of the
  folder), so a reader sees the old marker or the new one, never half of one; a marker that is
  nevertheless unreadable (a truncated file left by an older version, a disk error) is moved aside
  to ``<name>.corrupt`` and read as "not done", so it costs a rerun of that stage, never a blocked chain;
* a checkpoint counts only when complete: transformers' ``Trainer._save_checkpoint`` writes the weights,
  then optimizer/scheduler/RNG state, and ``trainer_state.json`` last, so a checkpoint is complete when
  ``trainer_state.json`` parses and the weights (and, unless the run saves the model only, the optimizer
  state) are present. A half-written newest checkpoint is skipped in favour of the previous complete one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "adapter_model.safetensors")
OPTIMIZER_FILE = "optimizer.pt"


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that a reader, or a crash, never sees a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, ensure_ascii=False, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover - platforms without directory fsync
        pass


def read_json_marker(path: str | Path) -> dict[str, Any] | None:
    """The marker at ``path``; None when absent or unreadable (an unreadable one is moved to ``*.corrupt``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return data
    except ValueError as exc:
        aside = path.with_name(path.name + ".corrupt")
        logger.warning("unreadable stage marker %s (%s): moved to %s, the stage counts as not done",
                       path, exc, aside)
        try:
            os.replace(path, aside)
        except OSError:
            pass
        return None


def checkpoint_complete(path: str | Path, *, need_optimizer: bool = True) -> bool:
    """Whether a ``checkpoint-*`` folder was written to the end (see module docstring)."""
    path = Path(path)
    try:
        state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or "global_step" not in state:
        return False
    if not any((path / name).is_file() and (path / name).stat().st_size > 0 for name in WEIGHT_FILES):
        return False
    return not need_optimizer or (path / OPTIMIZER_FILE).is_file()


def latest_complete_checkpoint(out_dir: str | Path, *, need_optimizer: bool = True) -> str | None:
    """The newest complete ``checkpoint-<step>`` under ``out_dir`` (incomplete ones are skipped, with a warning)."""
    def step(p: Path) -> int:
        tail = p.name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    for ck in sorted(Path(out_dir).glob("checkpoint-*"), key=step, reverse=True):
        if step(ck) < 0 or not ck.is_dir():
            continue
        if checkpoint_complete(ck, need_optimizer=need_optimizer):
            return str(ck)
        logger.warning("checkpoint %s is incomplete (killed while saving?): not resuming from it", ck)
    return None
