"""Spark plumbing for the nearline jobs: one way to get a session, run a SQL file, build a spark-submit command.

Why one module: jobs, the DAG, ``qp backfill`` and the tests must agree on the master, on keeping ``dt`` a
string (``partitionColumnTypeInference`` off) and on the interpreter the executors run, or a job that works
in a test silently behaves differently under ``spark-submit``. Settings live in ``conf/spark.yaml``
(``QP__SPARK__MASTER=...`` overrides the master), so moving to YARN/Kubernetes is configuration only.

PySpark is imported inside the functions: importing this module costs nothing (DAG files import it).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from qp_core.config import Settings, load_settings
from qp_core.paths import REPO_ROOT

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

SQL_DIR = REPO_ROOT / "sql"
JOBS_DIR = REPO_ROOT / "jobs"

#: Settings no configuration may turn off: the lake contract depends on them.
REQUIRED_CONF = {
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
}


class SparkSettings(Settings):
    """``conf/spark.yaml``."""

    master: str = "local[*]"
    log_level: str = "WARN"
    conf: dict[str, Any] = Field(default_factory=dict)
    submit_args: list[str] = Field(default_factory=list)

    def spark_conf(self) -> dict[str, str]:
        """All ``spark.*`` settings as strings, with the lake-contract settings forced."""
        out = {str(k): _conf_str(v) for k, v in self.conf.items()}
        out.update(REQUIRED_CONF)
        return out


def _conf_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_spark_settings(**overrides: Any) -> SparkSettings:
    return load_settings("spark", SparkSettings, **overrides)


def _under_spark_submit() -> bool:
    """True when this Python process was launched by spark-submit (the JVM already exists and owns --master)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_session(app_name: str, settings: SparkSettings | None = None) -> "SparkSession":
    """The SparkSession for a job or a test (``getOrCreate``: an active session is reused).

    Under ``spark-submit`` the master given on its command line wins; otherwise the configured one
    (``local[*]`` by default). The executors' Python is this interpreter unless PYSPARK_PYTHON says otherwise.
    """
    from pyspark.sql import SparkSession

    settings = settings or load_spark_settings()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if not _under_spark_submit():
        builder = builder.master(settings.master)
    for key, value in settings.spark_conf().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    _quiet_known_warnings(spark)
    # getOrCreate may hand back a session built elsewhere: the lake contract must still hold.
    for key, value in REQUIRED_CONF.items():
        spark.conf.set(key, value)
    return spark


#: Loggers whose warnings are expected here: the top-k selection and the shard numbering are global
#: orderings over a set capped by the daily budget, so "no partition defined for window" is by design.
_QUIET_LOGGERS = ("org.apache.spark.sql.execution.window.WindowExec",)


def _quiet_known_warnings(spark: "SparkSession") -> None:
    try:
        jvm = spark.sparkContext._jvm
        level = jvm.org.apache.logging.log4j.Level.ERROR
        for name in _QUIET_LOGGERS:
            jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, level)
    except Exception:  # pragma: no cover - a logging nicety must never fail a job
        logger.debug("could not lower log levels of %s", _QUIET_LOGGERS, exc_info=True)


_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def sql_text(name: str) -> str:
    """Text of ``sql/<name>.sql``."""
    path = SQL_DIR / f"{name}.sql"
    if not path.exists():
        raise FileNotFoundError(f"no SQL file {path}")
    return path.read_text(encoding="utf-8")


def run_sql(spark: "SparkSession", name: str, **params: Any) -> "DataFrame":
    """Run ``sql/<name>.sql`` with named parameters.

    A DataFrame parameter is referenced in the file as ``{name}`` (registered as a temporary view for the
    query); any other value is a bound SQL parameter ``:name`` (never string-formatted into the text, so
    values cannot inject SQL). Parameters the file does not use are an error: a typo would otherwise run a
    different query than intended.

    Why not ``spark.sql(text, **frames)``: PySpark drops the views it registered with
    ``Catalog.dropTempView``, and dropping a temporary view uncaches its plan — the very DataFrame that was
    passed in. Every frame a step had cached (the normalised day, the BM25 postings, ...) silently stopped
    being cached the moment it went through a SQL file, and each later use recomputed it, Python passes
    included. Here the views are removed from the session catalog without touching the cache.
    """
    from pyspark.sql import DataFrame

    text = sql_text(name)
    frames = {k: v for k, v in params.items() if isinstance(v, DataFrame)}
    values = {k: v for k, v in params.items() if not isinstance(v, DataFrame)}
    used_values = set(_PARAM.findall(_strip_comments(text)))
    unknown = set(values) - used_values
    missing = used_values - set(values)
    if unknown or missing:
        raise ValueError(f"sql/{name}.sql: unknown parameters {sorted(unknown)}, missing {sorted(missing)}")
    for key in frames:
        if "{" + key + "}" not in text:
            raise ValueError(f"sql/{name}.sql does not reference {{{key}}}")
    views = {key: f"_qp_{key}_{uuid.uuid4().hex}" for key in frames}
    for key, frame in frames.items():
        frame.createOrReplaceTempView(views[key])
    try:
        # The result is analysed here (views resolved into its plan), so the views can go right after.
        return spark.sql(text.format(**views), args=values or None)
    finally:
        catalog = spark._jsparkSession.sessionState().catalog()  # SessionCatalog: drops without uncaching
        for view in views.values():
            catalog.dropTempView(view)


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def spark_submit_path() -> str:
    """The ``spark-submit`` of the installed PySpark (so it matches the library version), else one on PATH."""
    try:
        import pyspark  # noqa: PLC0415  (light: does not start a JVM)

        candidate = Path(pyspark.__file__).parent / "bin" / "spark-submit"
        if candidate.exists():
            return str(candidate)
    except ImportError:  # pragma: no cover - spark extra not installed
        pass
    found = shutil.which("spark-submit")
    if not found:
        raise FileNotFoundError("spark-submit not found: install the 'spark' extra")
    return found


def submit_command(job: str, args: list[str], settings: SparkSettings | None = None) -> list[str]:
    """``spark-submit --master M --conf ... jobs/<job>.py args`` with the executors on this interpreter.

    The DAG and ``qp backfill`` run this list (``subprocess.run(cmd, env=submit_env())``); PYSPARK_PYTHON is
    passed both as ``--conf spark.pyspark.python`` (travels with the command) and in ``submit_env``.
    """
    settings = settings or load_spark_settings()
    script = JOBS_DIR / f"{job}.py"
    if not script.exists():
        raise FileNotFoundError(f"no job script {script}")
    cmd = [spark_submit_path(), "--master", settings.master, "--name", f"qp-{job}"]
    conf = settings.spark_conf()
    conf.setdefault("spark.log.level", settings.log_level)  # quiet from the first line, not only after start
    conf.setdefault("spark.pyspark.python", sys.executable)
    conf.setdefault("spark.pyspark.driver.python", sys.executable)
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd += list(settings.submit_args)
    cmd += [str(script), *[str(a) for a in args]]
    return cmd


def submit_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a spark-submit subprocess: PYSPARK_PYTHON = this interpreter, repo on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    paths = [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    env.pop("PYSPARK_GATEWAY_SECRET", None)
    return env


def path_exists(path: Path | str) -> bool:
    """True when a local lake path holds any data file (a directory with only ``_SUCCESS`` counts as empty)."""
    p = Path(path)
    if not p.exists():
        return False
    if p.is_file():
        return True
    return any(f.suffix == ".parquet" for f in p.rglob("*.parquet"))


class session_scope:  # noqa: N801 - used as `with session_scope(...) as spark`
    """A job's session: reuse the one given (tests, an outer driver) or create one and stop it at the end."""

    def __init__(self, app_name: str, spark: "SparkSession | None" = None):
        self.app_name = app_name
        self.given = spark
        self.spark: "SparkSession | None" = None

    def __enter__(self) -> "SparkSession":
        self.spark = self.given or get_session(self.app_name)
        return self.spark

    def __exit__(self, *exc: object) -> None:
        if self.given is None and self.spark is not None:
            self.spark.stop()


def global_rank(df: "DataFrame", order: list, name: str, cached: list | None = None) -> "DataFrame":
    """``df`` plus ``name`` = 1-based position in the global ``order`` (a dense ``row_number`` over everything).

    Why not ``row_number() OVER (ORDER BY ...)``: a window without ``PARTITION BY`` moves every row into one
    task, which does not scale with the day. Here the sort is range-partitioned (parallel); each row's
    position inside its partition comes from ``monotonically_increasing_id`` (consecutive within a
    partition, ``partition_id << 33`` at its start) and the partitions' offsets from their row counts — a
    collect of one small row per partition, never of the data. The sorted frame is persisted so both
    passes see the same partitioning; it is appended to ``cached`` for the caller to unpersist.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sorted_ = (
        df.orderBy(*order)
        .withColumn("_qp_part", F.spark_partition_id())
        .withColumn("_qp_local", F.monotonically_increasing_id().bitwiseAND(F.lit((1 << 33) - 1)))
        .persist()
    )
    if cached is not None:
        cached.append(sorted_)
    counts = sorted_.groupBy("_qp_part").count().collect()
    spark = df.sparkSession
    if not counts:
        return sorted_.withColumn(name, F.lit(None).cast("long")).drop("_qp_part", "_qp_local")
    sizes = spark.createDataFrame([(int(r["_qp_part"]), int(r["count"])) for r in counts], "_qp_part int, n long")
    offsets = sizes.withColumn(
        "_qp_offset", F.sum("n").over(Window.orderBy("_qp_part").rowsBetween(Window.unboundedPreceding, -1))
    ).select("_qp_part", F.coalesce("_qp_offset", F.lit(0)).alias("_qp_offset"))
    return (
        sorted_.join(F.broadcast(offsets), "_qp_part")
        .withColumn(name, F.col("_qp_offset") + F.col("_qp_local") + 1)
        .drop("_qp_part", "_qp_local", "_qp_offset")
    )
