"""Generation step: ``curated/prompts/dt=D/shard=N`` → engine → ``curated/generations/dt=D/model=V/shard=N.parquet``.

Resumable by construction:

* one output file per input shard, written to a hidden temporary file and renamed into place
  (``os.replace`` is atomic), so a shard file is either complete or absent — a kill never leaves half a shard;
* a shard whose output exists *and* was made from the same input (a fingerprint of the prompts, stored in the
  Parquet metadata) is skipped, so a rerun after a kill does only the missing shards: no duplicates, no losses.
  If the prompts step reran and changed a shard, the fingerprint differs and the shard is regenerated;
* the engine starts only when some shard has work, so rerunning a finished date costs seconds.

Shards are independent, so the DAG maps them over workers (``--shard N``); each record carries the model,
rules and prompt versions, token counts, finish reason and latency. Errors are per row (``error``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from qp_core.engines.base import GenerationEngine
from qp_core.engines.factory import engine_settings_for
from qp_core.lake import generation_shard, generations_dir, prompt_shard_dir, prompt_shards
from qp_core.nearline.settings import GenerationSettings, load_generation_settings

logger = logging.getLogger(__name__)

FINGERPRINT_KEY = b"qp.input_fingerprint"
GENERATION_COLUMNS = (
    "query_key", "query_norm", "text", "prompt_tokens", "completion_tokens", "finish_reason", "error",
    "model_version", "rules_version", "prompt_version", "latency_s", "reason", "prefix_hash", "shard", "pos",
)


@dataclass
class ShardReport:
    shard: int
    rows: int = 0
    skipped: bool = False
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0


@dataclass
class GenerationReport:
    dt: str
    model_version: str
    out_dir: str
    shards: list[ShardReport] = field(default_factory=list)
    engine_start_s: float | None = None

    @property
    def rows_generated(self) -> int:
        return sum(s.rows for s in self.shards if not s.skipped)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        gen = [s for s in self.shards if not s.skipped]
        wall = sum(s.wall_s for s in gen)
        d.update(
            shards_done=len(gen),
            shards_skipped=sum(s.skipped for s in self.shards),
            rows_generated=self.rows_generated,
            generations_per_s=round(self.rows_generated / wall, 2) if wall else None,
            completion_tokens_per_s=round(sum(s.completion_tokens for s in gen) / wall, 1) if wall else None,
        )
        return d


# ------------------------------------------------------------------------------------------ inputs


def read_prompt_shard(dt: str, shard: int) -> list[dict[str, Any]]:
    """Rows of one prompts shard in prompt order (``pos``)."""
    import pyarrow.parquet as pq

    path = prompt_shard_dir(dt, shard)
    if not path.exists():
        raise FileNotFoundError(f"prompts shard {path} does not exist")
    table = pq.read_table(str(path))
    if "pos" in table.column_names:
        table = table.sort_by("pos")
    return table.to_pylist()


def fingerprint(rows: Iterable[dict[str, Any]]) -> str:
    """Digest of a shard's prompts (key + messages, in order): same input ⇔ same fingerprint."""
    h = hashlib.sha256()
    for r in rows:
        h.update(str(r.get("query_key")).encode())
        h.update(b"\x00")
        h.update(str(r.get("messages_json")).encode("utf-8"))
        h.update(b"\x01")
    return h.hexdigest()[:32]


def shard_fingerprint(path: Path) -> str | None:
    """The input fingerprint stored in a finished shard file; None if unreadable (then it is redone)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(str(path)).metadata or {}
    except Exception:
        return None
    value = meta.get(FINGERPRINT_KEY)
    return value.decode() if value else None


def model_version_of(model_dir: str | Path) -> str:
    """The registry version in ``meta.json`` when the model came from the registry, else the folder name."""
    meta = Path(model_dir) / "meta.json"
    if meta.exists():
        try:
            version = json.loads(meta.read_text(encoding="utf-8")).get("version")
            if version:
                return str(version)
        except ValueError:
            pass
    return Path(model_dir).resolve().name


# ----------------------------------------------------------------------------------------- writing


def _write_atomic(table, path: Path) -> None:
    """Write ``table`` next to ``path`` under a hidden name, fsync, then rename into place."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        pq.write_table(table, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _remove_stale_tmp(path: Path) -> None:
    """Temporary files a killed run left for this shard (dead pid on this host) are removed."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except (ValueError, ProcessLookupError):
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            logger.info("removing leftover temporary file %s", tmp)
            tmp.unlink(missing_ok=True)


def _records_table(rows: list[dict[str, Any]], gens: list, model_version: str, shard: int, fp: str):
    import pyarrow as pa

    cols: dict[str, list] = {c: [] for c in GENERATION_COLUMNS}
    for r, g in zip(rows, gens):
        cols["query_key"].append(r.get("query_key"))
        cols["query_norm"].append(r.get("query_norm"))
        cols["text"].append(g.text)
        cols["prompt_tokens"].append(int(g.prompt_tokens))
        cols["completion_tokens"].append(int(g.completion_tokens))
        cols["finish_reason"].append(g.finish_reason)
        cols["error"].append(g.error)
        cols["model_version"].append(model_version)
        cols["rules_version"].append(r.get("rules_version"))
        cols["prompt_version"].append(r.get("prompt_version"))
        cols["latency_s"].append(float(g.latency_s))
        cols["reason"].append(r.get("reason"))
        cols["prefix_hash"].append(r.get("prefix_hash"))
        cols["shard"].append(shard)
        cols["pos"].append(r.get("pos", len(cols["pos"])))
    schema = pa.schema(
        [
            ("query_key", pa.string()), ("query_norm", pa.string()), ("text", pa.string()),
            ("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32()), ("finish_reason", pa.string()),
            ("error", pa.string()), ("model_version", pa.string()), ("rules_version", pa.string()),
            ("prompt_version", pa.string()), ("latency_s", pa.float64()), ("reason", pa.string()),
            ("prefix_hash", pa.string()), ("shard", pa.int32()), ("pos", pa.int64()),
        ],
        metadata={FINGERPRINT_KEY: fp.encode()},
    )
    return pa.table(cols, schema=schema)


# ------------------------------------------------------------------------------------------ running


def run_generation(
    dt: str,
    model_dir: str | Path,
    model_version: str | None = None,
    shards: Iterable[int] | None = None,
    settings: GenerationSettings | None = None,
    *,
    engine: GenerationEngine | None = None,
    progress: bool = True,
    profile: str | None = None,
) -> GenerationReport:
    """Generate every (or the given) prompt shard of ``dt`` that has no up-to-date output yet.

    ``profile``: the model's profile as resolved with the target (default: read from the model's ``meta.json``).
    ``engine``: an already started engine (tests share one); otherwise one is started on ``model_dir`` with
    ``settings.engine`` + the model profile's overrides, only if some shard needs work, and closed at the end.
    """
    settings = settings or load_generation_settings()
    model_version = model_version or model_version_of(model_dir)
    wanted = sorted(set(shards)) if shards is not None else prompt_shards(dt, required=True)
    report = GenerationReport(dt, model_version, str(generations_dir(dt, model_version)))
    todo: list[tuple[int, list[dict[str, Any]], str]] = []
    for shard in wanted:
        rows = read_prompt_shard(dt, shard)
        fp = fingerprint(rows)
        out = generation_shard(dt, model_version, shard)
        _remove_stale_tmp(out)
        if out.exists() and shard_fingerprint(out) == fp:
            logger.info("dt=%s model=%s shard %05d: up to date, skipped", dt, model_version, shard)
            report.shards.append(ShardReport(shard, rows=len(rows), skipped=True))
            continue
        todo.append((shard, rows, fp))
    if not todo:
        logger.info("dt=%s model=%s: all %d shards up to date", dt, model_version, len(wanted))
        return report

    own_engine = engine is None
    if own_engine:
        from qp_core.engines import make_engine

        eng_settings = engine_settings_for(model_dir, settings.engine, profile=profile)
        started = time.perf_counter()
        engine = make_engine(model_dir, eng_settings)
        report.engine_start_s = round(time.perf_counter() - started, 2)
    try:
        _generate_shards(dt, model_version, todo, engine, settings, report, progress)
    finally:
        if own_engine:
            engine.close()
    return report


def _generate_shards(dt, model_version, todo, engine, settings, report, progress) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total_rows = sum(len(rows) for _, rows, _ in todo)
    with Progress(
        TextColumn("[bold]generate[/] dt={task.fields[dt]} shard {task.fields[shard]}"),
        BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[rate]}"),
        disable=not progress, transient=False,
    ) as bar:
        task = bar.add_task("rows", total=total_rows, dt=dt, shard="-", rate="")
        for shard, rows, fp in todo:
            started = time.perf_counter()
            bar.update(task, shard=f"{shard:05d}")
            gens = []
            for i in range(0, len(rows), settings.chunk_rows):
                chunk = rows[i : i + settings.chunk_rows]
                gens.extend(_generate_chunk(engine, chunk))
                bar.advance(task, len(chunk))
            wall = time.perf_counter() - started
            table = _records_table(rows, gens, model_version, shard, fp)
            _write_atomic(table, generation_shard(dt, model_version, shard))
            rep = ShardReport(
                shard, rows=len(rows), errors=sum(g.error is not None for g in gens),
                prompt_tokens=sum(g.prompt_tokens for g in gens),
                completion_tokens=sum(g.completion_tokens for g in gens), wall_s=round(wall, 3),
            )
            report.shards.append(rep)
            rate = f"{len(rows) / wall:.1f} gen/s, {rep.completion_tokens / wall:.0f} tok/s" if wall else ""
            bar.update(task, rate=rate)
            logger.info("dt=%s model=%s shard %05d: %d rows (%d errors) in %.1fs — %s",
                        dt, model_version, shard, len(rows), rep.errors, wall, rate)


def _messages(row: dict[str, Any]) -> list[dict[str, str]] | None:
    try:
        msgs = json.loads(row.get("messages_json") or "null")
    except ValueError:
        return None
    ok = isinstance(msgs, list) and msgs and all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs)
    return msgs if ok else None


def _generate_chunk(engine: GenerationEngine, rows: list[dict[str, Any]]) -> list:
    """Generations for ``rows`` in order; a row whose messages don't parse gets an error, not the engine."""
    from qp_core.engines.base import Generation

    messages = [_messages(r) for r in rows]
    good = [m for m in messages if m is not None]
    queries = [r.get("query_norm") or "" for r, m in zip(rows, messages) if m is not None]
    out = iter(engine.generate(good, queries=queries) if good else [])
    return [next(out) if m is not None else Generation("", 0, 0, "error", "bad_messages_json") for m in messages]
