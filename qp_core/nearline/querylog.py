"""The query log's contract (``raw/query_log``, docs/ARCHITECTURE.md) and the one reader that enforces it.

Why check the files and not just let Spark read them: upstream schemas drift, and Spark turns a drifted
column into nonsense instead of failing — an int ``query`` becomes ``"1"``, a binary one ``"b'iphone'"``, a
list ``"['a', 'b']"`` (the normaliser stringifies whatever it gets), a duplicated name resolves to one of
the two columns. Those rows would then be generated and published as queries. Spark also infers a
partition's schema from one file's footer, so a second file of another type is not even seen. So every data
file's footer in every partition a step reads is checked first (footers only: cheap on the driver), and
the step stops with a message naming the file, the column and what is wrong, before it writes anything.

Rows are a different matter: one row whose ``query`` bytes are not UTF-8 is quarantined by the normaliser
(``qp_core.nearline.text``, reason ``undecodable``), not fatal to the day.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from qp_core.lake import QUERY_LOG, dataset, partition
from qp_core.ops.spark import path_exists

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

#: Documented columns and their logical types (docs/ARCHITECTURE.md, lake table). Extra columns are allowed.
LOG_COLUMNS = {"user_id": "string", "session_id": "string", "event_time": "timestamp", "query": "string",
               "platform": "string"}
#: What each step reads (the sample step: queries and users; the context step: sessions in time order).
SAMPLE_NEEDS = ("user_id", "query")
CONTEXT_NEEDS = ("session_id", "event_time", "query")


class LogSchemaError(ValueError):
    """A query-log partition does not hold the columns a step needs, with the documented types."""


def _type_ok(arrow_type: "pa.DataType", logical: str) -> bool:
    import pyarrow as pa

    if logical == "string":
        return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or (
            hasattr(pa.types, "is_string_view") and pa.types.is_string_view(arrow_type))
    if logical == "timestamp":
        return pa.types.is_timestamp(arrow_type)
    raise ValueError(f"unknown logical type {logical!r}")


def data_files(part: Path) -> list[Path]:
    """The Parquet data files of a partition (Spark's ``_SUCCESS``/``.crc`` and hidden files left out)."""
    return sorted(f for f in Path(part).rglob("*.parquet")
                  if not any(name.startswith(("_", ".")) for name in f.relative_to(part).parts))


def schema_problems(schema: "pa.Schema", needs: Iterable[str]) -> list[str]:
    """What is wrong with one file's schema for a step that reads ``needs`` (empty when nothing).

    Names must match exactly; a name repeated in the file, even in another case, is an error whatever the
    column (Spark resolves names case-insensitively, so it could not tell the two apart either).
    """
    problems = []
    seen: dict[str, list[str]] = {}
    for name in schema.names:
        seen.setdefault(name.lower(), []).append(name)
    for names in seen.values():
        if len(names) > 1:
            problems.append(f"column {names[0]!r} is duplicated ({len(names)} columns: {', '.join(names)})")
    for col in needs:
        if len(seen.get(col.lower(), ())) > 1:
            continue  # already reported
        if col not in schema.names:
            problems.append(f"column {col!r} is missing (has {', '.join(schema.names) or 'no columns'})")
        elif not _type_ok(schema.field(col).type, LOG_COLUMNS[col]):
            problems.append(f"column {col!r} has type {schema.field(col).type}, expected {LOG_COLUMNS[col]}")
    return problems


def check_partition(part: Path, needs: Iterable[str]) -> None:
    """Raise ``LogSchemaError`` naming the partition, file and column when a data file breaks the contract."""
    import pyarrow.parquet as pq

    needs = tuple(needs)
    errors = []
    for f in data_files(part):
        try:
            schema = pq.read_schema(f)
        except Exception as exc:  # noqa: BLE001 - an unreadable footer is a contract breach too
            errors.append(f"{f.name}: unreadable Parquet footer ({exc})")
            continue
        errors += [f"{f.name}: {p}" for p in schema_problems(schema, needs)]
    if errors:
        raise LogSchemaError(f"{QUERY_LOG} partition {part}: " + "; ".join(errors)
                             + f" — documented schema: {LOG_COLUMNS} (docs/ARCHITECTURE.md)")


def read(spark: "SparkSession", dts: Iterable[str], needs: Iterable[str]) -> tuple["DataFrame | None", list[str]]:
    """The log partitions of ``dts`` that exist, checked, as one DataFrame (``dt`` dropped), and their dates.

    Every partition is checked before Spark reads any of them, so a bad one stops the step with nothing
    written.
    """
    found = [(d, partition(QUERY_LOG, d)) for d in dts]
    found = [(d, p) for d, p in found if path_exists(p)]
    if not found:
        return None, []
    for _, part in found:
        check_partition(part, needs)
    df = spark.read.option("basePath", str(dataset(QUERY_LOG))).parquet(*[str(p) for _, p in found])
    return (df.drop("dt") if "dt" in df.columns else df), [d for d, _ in found]
