"""Redis KV store of QP results: the storage format, the publisher, the reader (spec: docs/kv-spec.md).

    from qp_core.kv import QPClient
    QPClient().mget(["雅诗兰黛 粉底液", "iphone15"])   # -> [dict | None, ...]

Modules: ``layout`` (key names, namespace ids, value encoding), ``settings`` (conf/kv.yaml, URL
resolution, connections), ``admin`` (pointer, activation, rollback + pin, retirement), ``lease``
(one fenced publisher per namespace), ``janitor`` (deletes retired namespaces after their deadline),
``publisher``, ``client``, ``manifest`` (lake mirror for the Spark sample job, reconciled with
Redis), ``faults`` (named race/crash points for tests). Importing this package does not connect to anything.
"""

from qp_core.kv.admin import Activation, KVAdmin, KVError
from qp_core.kv.client import KVReadError, QPClient
from qp_core.kv.janitor import Janitor, JanitorReport
from qp_core.kv.layout import KV_FORMAT_VERSION, Keys, decode_value, encode_value, namespace_for
from qp_core.kv.lease import LeaseLost, PublishLease
from qp_core.kv.publisher import KVPublisher, PublishReport
from qp_core.kv.rows import check_row
from qp_core.kv.settings import (
    KVConfigError,
    KVSettings,
    connect,
    load_kv_settings,
    resolve_url,
    url_for_airflow_task,
    url_from_airflow_conn,
)

__all__ = [
    "KV_FORMAT_VERSION", "Activation", "Janitor", "JanitorReport", "KVAdmin", "KVConfigError", "KVError",
    "KVPublisher", "KVReadError", "KVSettings", "Keys", "LeaseLost", "PublishLease", "PublishReport", "QPClient",
    "check_row", "connect", "decode_value", "encode_value", "load_kv_settings",
    "namespace_for", "resolve_url", "url_for_airflow_task", "url_from_airflow_conn",
]
