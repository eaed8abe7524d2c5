"""ACL users of the KV store: a read-only reader for online services and a writer for the pipeline.

The rules are data, so the tests create exactly these users on real servers and
``docker/docker-compose.yml`` (checked by ``tests/test_kv_deploy.py``) configures the same ones. Neither user
can run dangerous commands (FLUSHALL, KEYS, CONFIG, DEBUG...). The reader's key permission is
``%R~`` (read only): even a write command it somehow got could not touch a key. Both may run the
few commands a client library needs to connect (HELLO, AUTH, CLIENT SETINFO, COMMAND) and to learn
a cluster's slots (CLUSTER SLOTS/SHARDS).
"""

from __future__ import annotations

_CONNECT = ["+@connection", "-@dangerous", "+cluster|slots", "+cluster|shards", "+cluster|info", "+readonly"]


def reader_rules(prefix: str = "qp") -> list[str]:
    """GET/MGET on ``<prefix>:*`` (results and the pointer), nothing else."""
    return ["resetkeys", f"%R~{prefix}:*", "resetchannels", "-@all", *_CONNECT, "+get", "+mget"]


def writer_rules(prefix: str = "qp") -> list[str]:
    """Everything non-dangerous on ``<prefix>:*`` (publish, Lua flips, SCAN, UNLINK) plus INFO."""
    return ["resetkeys", f"~{prefix}:*", "resetchannels", "-@all", "+@read", "+@write", "+@keyspace",
            "+@scripting", "+@transaction", *_CONNECT, "-@admin", "+info"]


def setuser_args(name: str, password: str, rules: list[str]) -> list[str]:
    """``ACL SETUSER`` arguments (also valid after ``--user`` on a server command line)."""
    return [name, "reset", "on", f">{password}", *rules]
