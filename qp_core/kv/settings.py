"""KV configuration (``conf/kv.yaml``), URL resolution and connections.

The URL is resolved in one documented order so that every caller — a downstream service, a
job, the CLI in the demo shell — finds the same server without flags:
explicit argument → env ``QP_REDIS_URL`` → ``conf/kv.yaml`` ``url`` (or ``QP__KV__URL``) →
``$QP_HOME/run/redis.url`` (written by ``qp redis start``). Airflow tasks call
:func:`url_for_airflow_task` (the connection ``qp_redis`` first, through :func:`url_from_airflow_conn`,
which imports Airflow lazily so ``qp_core`` never does at import time).
"""

from __future__ import annotations

import os
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import Field

from qp_core.config import Settings, load_settings
from qp_core.paths import redis_url_file as url_file


class KVConfigError(RuntimeError):
    """No Redis URL could be resolved, or the configuration is unusable."""


class SSLSettings(Settings):
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    cert_reqs: Literal["required", "optional", "none"] = "required"
    check_hostname: bool = True


class KVSettings(Settings):
    """Typed ``conf/kv.yaml``; every field is documented in that file and in docs/kv-spec.md."""

    url: str | None = None
    airflow_conn_id: str | None = "qp_redis"
    prefix: str = Field("qp", pattern=r"^[A-Za-z0-9_.-]+$")
    batch_size: int = Field(1000, ge=1)
    publish_workers: int = Field(1, ge=1)
    mget_chunk: int = Field(500, ge=1)
    retired_ttl_s: int = Field(7 * 86400, ge=1)
    min_coverage: float = Field(0.95, ge=0.0, le=1.0)
    coverage_sample: int = Field(200_000, ge=1)
    activate_after_publish: bool = True
    history_max: int = Field(50, ge=1)
    # lifecycle (kv.lease, kv.janitor): publish lease expiry, janitor batch size, pause and time budget
    lease_ttl_s: float = Field(120.0, gt=0)
    janitor_batch: int = Field(1000, ge=1)
    janitor_jitter_ms: float = Field(50.0, ge=0)
    janitor_budget_s: float = Field(600.0, gt=0)
    socket_timeout_s: float = Field(5.0, gt=0)
    # the reader (QPClient) sits on a request path: short timeouts, no retries, all-None on an outage
    reader_timeout_s: float = Field(0.1, gt=0)
    reader_outage_backoff_s: float = Field(0.5, ge=0)
    ssl: SSLSettings = Field(default_factory=SSLSettings)


def load_kv_settings(**overrides: Any) -> KVSettings:
    return load_settings("kv", KVSettings, **overrides)


def resolve_url(explicit: str | None = None, settings: KVSettings | None = None) -> str:
    """The Redis URL by the documented order; raises ``KVConfigError`` naming what to do if none."""
    if explicit:
        return explicit
    env = os.environ.get("QP_REDIS_URL")
    if env:
        return env
    settings = settings or load_kv_settings()
    if settings.url:
        return settings.url
    path = url_file()
    if path.exists():
        url = path.read_text().strip()
        if url:
            return url
    raise KVConfigError(
        "no Redis URL: pass --url, set QP_REDIS_URL or conf/kv.yaml `url`, or run `qp redis start` "
        f"(which writes {path})"
    )


def split_cluster_flag(url: str) -> tuple[str, bool]:
    """(url without ``cluster=``, whether it names a Redis Cluster). ``?cluster=true`` marks a cluster URL:
    the URL alone then says how to connect, wherever it comes from (env, conf, Airflow connection)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flags = [v for k, v in query if k == "cluster"]
    cluster = bool(flags) and flags[-1].lower() in {"1", "true", "yes"}
    rest = urlencode([(k, v) for k, v in query if k != "cluster"])
    path = "" if cluster else parts.path  # a cluster has only db 0
    return urlunsplit((parts.scheme, parts.netloc, path, rest, parts.fragment)), cluster


def connect(url: str | None = None, settings: KVSettings | None = None, *, timeout_s: float | None = None,
            retries: int | None = None, decode_responses: bool = True):
    """A ``redis.Redis`` (or ``redis.RedisCluster`` for a ``?cluster=true`` URL) for the resolved URL.

    Password/ACL user come from the URL, TLS options from ``settings.ssl`` for rediss://. ``timeout_s`` and
    ``retries`` override the defaults (the reader passes short ones; redis-py's default is 3 retries).
    hiredis, when installed (it is pinned), parses replies and packs commands in C: redis-py picks it up.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    settings = settings or load_kv_settings()
    resolved, cluster = split_cluster_flag(resolve_url(url, settings))
    timeout = timeout_s if timeout_s is not None else settings.socket_timeout_s
    kwargs: dict[str, Any] = {
        "decode_responses": decode_responses,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    if retries is not None:
        kwargs["retry"] = Retry(NoBackoff(), retries)
    if urlsplit(resolved).scheme == "rediss":
        ssl = settings.ssl
        kwargs.update(
            ssl_cert_reqs=ssl.cert_reqs,
            ssl_check_hostname=ssl.check_hostname and ssl.cert_reqs != "none",
        )
        if ssl.ca_certs:
            kwargs["ssl_ca_certs"] = ssl.ca_certs
        if ssl.certfile:
            kwargs["ssl_certfile"] = ssl.certfile
        if ssl.keyfile:
            kwargs["ssl_keyfile"] = ssl.keyfile
    if cluster:
        return redis.RedisCluster.from_url(resolved, **kwargs)
    return redis.Redis.from_url(resolved, **kwargs)


def url_from_connection_fields(
    host: str | None, port: int | None, login: str | None, password: str | None, schema: str | None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Build a redis:// or rediss:// URL from Airflow-style connection fields (pure, testable)."""
    extra = extra or {}
    tls = str(extra.get("ssl", extra.get("tls", False))).lower() in {"1", "true", "yes"}
    cluster = str(extra.get("cluster", False)).lower() in {"1", "true", "yes"}
    scheme = "rediss" if tls else "redis"
    auth = ""
    if login or password:
        auth = quote(login or "", safe="") + (":" + quote(password, safe="") if password else "") + "@"
    db = schema or str(extra.get("db", 0))
    return f"{scheme}://{auth}{host or 'localhost'}:{port or 6379}/{db or 0}" + ("?cluster=true" if cluster else "")


def url_from_airflow_conn(conn_id: str | None = None) -> str:
    """Redis URL from an Airflow connection. Call ONLY from inside an Airflow task (imports Airflow)."""
    from airflow.sdk import Connection  # noqa: PLC0415 - lazy by design

    conn_id = conn_id or load_kv_settings().airflow_conn_id
    if not conn_id:
        raise KVConfigError("no Airflow connection id configured (conf/kv.yaml airflow_conn_id)")
    conn = Connection.get(conn_id)
    return url_from_connection_fields(
        conn.host, conn.port, conn.login, conn.password, conn.schema, conn.extra_dejson
    )


def url_for_airflow_task(conn_id: str | None = None) -> str:
    """For DAG tasks: the Airflow connection if it is defined, else :func:`resolve_url` (demo, laptops).

    Call inside the task; pass the result to job subprocesses as ``QP_REDIS_URL``. A missing connection
    is logged, not fatal, so the demo works without one; a defined but broken one still fails later.
    """
    import logging

    settings = load_kv_settings()
    conn_id = conn_id or settings.airflow_conn_id
    if conn_id:
        try:
            return url_from_airflow_conn(conn_id)
        except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException and friends
            logging.getLogger(__name__).warning("Airflow connection %r not usable (%s); using resolve_url()",
                                                conn_id, type(exc).__name__)
    return resolve_url(settings=settings)
