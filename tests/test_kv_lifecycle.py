"""KV namespace lifecycle under races and kill -9, against a real server (docs/kv-spec.md §5 invariants).

Each race is injected at the exact window with ``qp_core.kv.faults`` (another actor's operation runs
right there); each crash is a subprocess that SIGKILLs itself at a named point, followed by a rerun.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from qp_core.kv import Janitor, KVAdmin, KVError, KVPublisher, LeaseLost, PublishLease, faults
from qp_core.kv.manifest import DATA_FILE, manifest_dir, read_manifest, reconcile_manifest
from tests.test_kv_store import QUERIES, all_values, make_rows, settings

pytestmark = pytest.mark.redis
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATER = 10 ** 10  # "now" for a janitor run long after every deadline


@pytest.fixture()
def clean_redis(kv_redis):
    """Every race and crash here runs on a standalone server AND on a local 3-node cluster."""
    return kv_redis


def no_ttl_anywhere(r, admin: KVAdmin, ns: str) -> bool:
    return all(r.ttl(k) == -1 for k in all_values(r, ns)) and r.ttl(admin.keys.meta(ns)) == -1


def setup_a_active_b_filled(url, **kw):
    pub = KVPublisher(url, settings=settings(**kw))
    pub.publish(make_rows(QUERIES, "A"), "nsA", "2026-11-01")
    assert pub.activate("nsA").activated
    pub.publish(make_rows(QUERIES, "B"), "nsB", "2026-11-02")
    return pub, pub.admin


def run_killed(url: str, point: str, body: str, env: dict | None = None, settings_kw: dict | None = None,
               nth: int = 1) -> None:
    """Run ``body`` (with ``admin``/``s`` bound) in a subprocess that SIGKILLs itself the ``nth`` time ``point`` is hit."""
    code = textwrap.dedent(f"""
        import os, signal
        from qp_core.kv import KVAdmin, KVSettings, faults
        s = KVSettings(**{dict(batch_size=50, retired_ttl_s=3600, min_coverage=0.9, **(settings_kw or {}))!r})
        admin = KVAdmin({url!r}, settings=s)
        hits = []
        def die():
            hits.append(1)
            if len(hits) == {nth}:
                os.kill(os.getpid(), signal.SIGKILL)
        faults.set_hook({point!r}, die)
    """) + textwrap.dedent(body) + "\nraise SystemExit('the crash point was never reached')\n"
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
    proc = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])


# ---- pointer races ---------------------------------------------------------------------------------

def test_auto_activation_racing_an_operator_rollback_is_refused(clean_redis):
    pub, admin = setup_a_active_b_filled(clean_redis)
    assert admin.activate("nsB").activated
    pub.publish(make_rows(QUERIES, "C"), "nsC", "2026-11-03")
    other = KVAdmin(settings=settings(), redis=pub.r)
    with faults.injected("activate.before_flip", lambda: other.rollback(reason="bad model B")):
        act = admin.activate("nsC")  # the daily run measured coverage against nsB, then the operator rolled back
    assert not act.activated and act.reason.startswith("conflict"), act
    assert admin.active() == "nsA" and admin.pinned()["ns"] == "nsA"
    assert [admin.status(n) for n in ("nsA", "nsB", "nsC")] == ["active", "retired", "filling"]
    assert pub.r.zrange(admin.keys.retiring, 0, -1) == ["nsB"] and admin.history() == []
    assert no_ttl_anywhere(pub.r, admin, "nsA")


def test_two_operators_flipping_at_once_serialise(clean_redis):
    pub, admin = setup_a_active_b_filled(clean_redis)
    pub.publish(make_rows(QUERIES, "C"), "nsC", "2026-11-03")
    other = KVAdmin(settings=settings(), redis=pub.r)
    with faults.injected("activate.before_flip", lambda: other.activate("nsC")):
        act = admin.activate("nsB")
    assert not act.activated and "pointer is nsC" in act.reason
    assert admin.active() == "nsC" and admin.history() == ["nsA"]
    assert [admin.status(n) for n in ("nsA", "nsB", "nsC")] == ["retired", "filling", "active"]
    # a pin set between coverage and flip is honoured too
    with faults.injected("activate.before_flip", lambda: other.pin(reason="freeze")):
        act = admin.activate("nsB")
    assert not act.activated and act.reason.startswith("pinned") and admin.active() == "nsC"
    assert admin.activate("nsB", unpin=True).activated and admin.pinned() is None


# ---- janitor races and crashes ------------------------------------------------------------------------

def test_janitor_never_deletes_a_namespace_reactivated_under_it(clean_redis):
    pub, admin = setup_a_active_b_filled(clean_redis)
    assert admin.activate("nsB").activated  # nsA retired
    with faults.injected("janitor.before_claim", lambda: KVAdmin(settings=settings(), redis=pub.r).rollback()):
        report = Janitor(admin, jitter_ms=0).run(now=LATER)
    assert report.deleted == [] and report.skipped == {"nsA": "active"}
    assert admin.active() == "nsA" and len(all_values(pub.r, "nsA")) == len(QUERIES)
    assert no_ttl_anywhere(pub.r, admin, "nsA") and pub.r.zrange(admin.keys.retiring, 0, -1) == ["nsB"]


def test_namespace_being_deleted_cannot_be_activated_revived_or_published(clean_redis):
    pub, admin = setup_a_active_b_filled(clean_redis)
    admin.activate("nsB")
    refusals = []

    def operator():
        refusals.append(admin.activate("nsA", force=True, unpin=True).reason)
        with pytest.raises(KVError, match="DELETING"):
            admin.revive("nsA")
        with pytest.raises(KVError, match="DELETING"):
            PublishLease(admin, "nsA").acquire()

    with faults.injected("janitor.after_claim", operator):
        report = Janitor(admin, jitter_ms=0).run(now=LATER)
    assert refusals and refusals[0].startswith("deleting")
    assert report.deleted == ["nsA"] and admin.active() == "nsB" and not admin.exists("nsA")
    assert all_values(pub.r, "nsA") == {} and "nsA" not in admin.namespaces()
    assert admin.history() == [], "a deleted namespace leaves the rollback stack"


def test_janitor_skips_a_namespace_under_a_publish_lease(clean_redis):
    pub, admin = setup_a_active_b_filled(clean_redis)
    admin.activate("nsB")
    with PublishLease(admin, "nsA"):
        assert Janitor(admin).run(now=LATER).skipped == {"nsA": "leased"}
    assert len(all_values(pub.r, "nsA")) == len(QUERIES)
    assert Janitor(admin, jitter_ms=0).run(now=LATER).deleted == ["nsA"]


def test_killed_janitor_is_resumed_by_the_next_run(clean_redis):
    pub, admin = setup_a_active_b_filled(clean_redis)
    admin.activate("nsB")
    run_killed(clean_redis, "janitor.after_batch", f"""
        from qp_core.kv import Janitor
        Janitor(admin, batch=50, jitter_ms=0).run(now={LATER})
    """)
    left = len(all_values(pub.r, "nsA"))
    assert 0 < left < len(QUERIES) and admin.status("nsA") == "deleting"
    assert admin.activate("nsA", force=True, unpin=True).reason.startswith("deleting"), "half-deleted stays dead"
    report = Janitor(admin, batch=50, jitter_ms=0).run()  # the real clock: resumed although the deadline is ahead
    assert report.deleted == ["nsA"] and report.unlinked == left
    assert all_values(pub.r, "nsA") == {} and not admin.exists("nsA") and pub.r.zcard(admin.keys.retiring) == 0
    assert Janitor(admin).run(now=LATER).deleted == []  # idempotent


def test_killed_janitor_before_finalize(clean_redis):
    pub, admin = setup_a_active_b_filled(clean_redis)
    admin.activate("nsB")
    # the second full SCAN pass finds nothing: kill right after the last UNLINK batch of the first pass
    run_killed(clean_redis, "janitor.after_batch", f"""
        from qp_core.kv import Janitor
        Janitor(admin, batch=1000, jitter_ms=0).run(now={LATER})
    """)
    assert all_values(pub.r, "nsA") == {} and admin.status("nsA") == "deleting"
    assert Janitor(admin, jitter_ms=0).run(now=LATER).deleted == ["nsA"] and not admin.exists("nsA")


# ---- publish fencing, crash + rerun ----------------------------------------------------------------------

def write_partition(lake, dt: str, rows) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = lake / "curated" / "qp_results" / f"dt={dt}"
    part.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), part / "part-00000.parquet")
    (part / "_quality.json").write_text(json.dumps({"passed": True}))


@pytest.fixture()
def lake(tmp_path, monkeypatch, clean_redis):
    monkeypatch.setenv("QP_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("QP_REDIS_URL", clean_redis)
    return tmp_path / "lake"


def wait_lease_gone(admin: KVAdmin, ns: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while admin.r.exists(admin.keys.lease(ns)):
        assert time.monotonic() < deadline, "a lease never expired"
        time.sleep(0.05)


def daily(ns: str, dt: str, **kw):
    from qp_core.nearline.publish import publish_day

    return publish_day(dt, ns, settings=settings(**kw))


@pytest.mark.parametrize("point,nth", [("publish.batch", 2), ("daily.before_manifest", 1)])
def test_killed_publish_rerun_leaves_exact_key_count_and_manifest(lake, clean_redis, point, nth):
    write_partition(lake, "2026-11-01", make_rows(QUERIES, "A"))
    run_killed(clean_redis, point, """
        from qp_core.nearline.publish import publish_day
        publish_day("2026-11-01", "nsA", settings=s)
    """, env={"QP_LAKE_ROOT": str(lake)}, settings_kw={"lease_ttl_s": 5.0}, nth=nth)
    admin = KVAdmin(settings=settings(), redis=KVPublisher(clean_redis, settings=settings()).r)
    assert admin.meta("nsA").get("publish_token"), "the crash leaves the unfinished-publish marker"
    with pytest.raises(KVError, match="LEASED"):  # the dead publisher's lease still fences a retry...
        daily("nsA", "2026-11-01")
    wait_lease_gone(admin, "nsA")  # ...until it expires (lease_ttl_s)
    out = daily("nsA", "2026-11-01")
    assert out.extra["key_count_recounted"] == len(QUERIES)
    assert admin.meta("nsA")["key_count"] == str(len(QUERIES)) and "publish_token" not in admin.meta("nsA")
    assert len(read_manifest("nsA")) == len(QUERIES) and admin.active() == "nsA"
    again = daily("nsA", "2026-11-01")  # a clean rerun: no recount, same count
    assert "key_count_recounted" not in again.extra and admin.meta("nsA")["key_count"] == str(len(QUERIES))


def test_second_publisher_is_fenced_and_a_zombie_stops(lake, clean_redis):
    write_partition(lake, "2026-11-01", make_rows(QUERIES, "A"))
    refused = []

    def second():
        with pytest.raises(KVError, match="LEASED"):
            daily("nsA", "2026-11-01")
        refused.append(True)

    with faults.injected("publish.batch", second):
        daily("nsA", "2026-11-01")
    assert refused
    admin = KVAdmin(settings=settings(), redis=KVPublisher(clean_redis, settings=settings()).r)
    zombie = PublishLease(admin, "nsZ", ttl_s=0.2)
    zombie.acquire()
    time.sleep(0.3)  # the zombie stalls past its lease
    with PublishLease(admin, "nsZ") as fresh:
        assert fresh.previous_unfinished == zombie.token
        with pytest.raises(LeaseLost):
            KVPublisher(clean_redis, settings=settings()).publish(make_rows(QUERIES, "Z"), "nsZ", "2026-11-01",
                                                                   fence=zombie.renew)
    assert all_values(admin.r, "nsZ") == {}, "the fenced zombie wrote nothing"


# ---- manifest: crash-safe and reconciled -----------------------------------------------------------------

def test_manifest_survives_a_kill_before_its_replace(lake, clean_redis):
    write_partition(lake, "2026-11-01", make_rows(QUERIES[:40], "A"))
    daily("nsA", "2026-11-01")
    day1 = read_manifest("nsA")
    assert len(day1) == 40
    write_partition(lake, "2026-11-02", make_rows(QUERIES[40:], "A"))
    run_killed(clean_redis, "manifest.before_replace", """
        from qp_core.nearline.publish import publish_day
        publish_day("2026-11-02", "nsA", settings=s)
    """, env={"QP_LAKE_ROOT": str(lake)}, settings_kw={"lease_ttl_s": 0.5})
    assert read_manifest("nsA") == day1, "the old manifest is whole after the kill"
    assert [p.name for p in manifest_dir("nsA").iterdir() if p.name.startswith(".")], "temp file left by the kill"
    wait_lease_gone(KVAdmin(clean_redis, settings=settings()), "nsA")
    daily("nsA", "2026-11-02")
    assert len(read_manifest("nsA")) == len(QUERIES)
    assert sorted(p.name for p in manifest_dir("nsA").iterdir()) == [DATA_FILE], "the next writer cleans up"


def promote_model(tmp_path, monkeypatch, name: str) -> str:
    """A (dummy) model registered and forced to production in a registry under tmp_path (the real registry code)."""
    from qp_core import registry

    monkeypatch.setenv("QP_REGISTRY", str(tmp_path / "registry"))
    model = tmp_path / "models" / name
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text("{}")
    record = registry.register(model, {"profile": name, "rules_version": "r" * 16, "stage": "test"})
    registry.promote(record.version, force=True)
    return record.version


def test_manifest_entries_lost_in_redis_are_dropped_so_they_are_selected_again(lake, clean_redis, tmp_path,
                                                                                 monkeypatch):
    from qp_core.nearline.publish import reconcile_target
    from qp_core.kv.layout import Keys
    from qp_core.nearline.steps import resolve_target

    promote_model(tmp_path, monkeypatch, "tiny")
    ns = resolve_target().namespace
    write_partition(lake, "2026-11-01", make_rows(QUERIES, "A"))
    daily(ns, "2026-11-01")
    r = KVPublisher(clean_redis, settings=settings()).r
    lost = sorted(all_values(r, ns))[:7]  # a failover that lost writes
    r.delete(*lost)
    assert resolve_target().namespace == ns  # the next day's first task reconciles before the sample runs
    held = read_manifest(ns)
    assert len(held) == len(QUERIES) - 7 and not {k.rsplit(":", 1)[1] for k in lost} & set(held)
    assert reconcile_manifest(ns, r, Keys("qp")) == {"kept": len(QUERIES) - 7, "dropped": 0}
    r.flushdb()  # the whole store lost: the manifest empties, the sample regenerates everything
    assert reconcile_target(ns, clean_redis, settings())["kept"] == 0 and read_manifest(ns) == {}


# ---- rollback that sticks ------------------------------------------------------------------------------

def test_daily_run_after_a_rollback_does_not_flip_back(lake, clean_redis, tmp_path, monkeypatch):
    promote_model(tmp_path, monkeypatch, "modelb")
    write_partition(lake, "2026-11-01", make_rows(QUERIES, "A"))
    daily("nsA", "2026-11-01")
    write_partition(lake, "2026-11-02", make_rows(QUERIES, "B"))
    assert daily("nsB", "2026-11-02").active_after == "nsB"
    from typer.testing import CliRunner

    from qp_core.cli import app

    assert CliRunner().invoke(app, ["kv", "rollback", "--reason", "B answers are bad"]).exit_code == 0
    admin = KVAdmin(settings=settings(), redis=KVPublisher(clean_redis, settings=settings()).r)
    assert admin.pinned()["registry_version"].startswith("modelb")
    out = daily("nsB", "2026-11-02")  # the next run, same production model
    assert out.active_after == "nsA" and not out.activation["activated"]
    assert "pinned to nsA" in out.extra["pin"] and admin.pinned()["ns"] == "nsA"
    admin.unpin()
    assert daily("nsB", "2026-11-02").active_after == "nsB", "unpinned: the gate decides again"
    assert CliRunner().invoke(app, ["kv", "rollback"]).exit_code == 0
    pinned_b = admin.pinned()["registry_version"]
    promote_model(tmp_path, monkeypatch, "modelc")  # a new promotion lifts the pin...
    write_partition(lake, "2026-11-04", make_rows(QUERIES, "C"))
    # ...but not an operator's pin set while the run was deciding
    with faults.injected("daily.before_unpin", lambda: admin.pin(reason="hold on")):
        out = daily("nsC", "2026-11-04")
    assert out.active_after == "nsA" and "pin changed" in out.extra["pin"] and admin.pinned()["reason"] == "hold on"
    with pytest.raises(KVError, match="only pin the active"):
        admin.pin("nsC")
    assert CliRunner().invoke(app, ["kv", "pin", "--reason", "old model"]).exit_code == 0
    assert admin.pinned()["registry_version"].startswith("modelc")
    admin.pin(reason="the rollback's pin again", registry_version=pinned_b, by="rollback")
    out = daily("nsC", "2026-11-04")
    assert out.active_after == "nsC" and "pin lifted" in out.extra["pin"] and admin.pinned() is None


def test_cli_lifecycle_commands(lake, clean_redis):
    from typer.testing import CliRunner

    from qp_core.cli import app

    runner = CliRunner()

    def qp(*args, code=0):
        res = runner.invoke(app, ["kv", *args])
        assert res.exit_code == code, res.output
        return res.stdout

    write_partition(lake, "2026-11-01", make_rows(QUERIES, "A"))
    daily("nsA", "2026-11-01")
    write_partition(lake, "2026-11-02", make_rows(QUERIES, "B"))
    daily("nsB", "2026-11-02")
    qp("rollback", "--reason", "bad B")
    info = json.loads(qp("info", "--json"))
    assert info["active"] == "nsA" and info["pinned"]["reason"] == "bad B" and "pinned" in qp("info")
    qp("activate", "nsB", code=1)  # refused: pinned
    assert json.loads(qp("unpin"))["unpinned"]["ns"] == "nsA"
    qp("pin", "--reason", "freeze")
    assert json.loads(qp("retire", "nsB", "--ttl", "1"))["retire_deadline"] >= int(time.time())  # whole seconds
    assert json.loads(qp("revive", "nsB"))["status"] == "filling"
    qp("retire", "nsA", code=2)  # the active one
    qp("retire", "nsB", "--ttl", "1")
    time.sleep(1.1)
    assert json.loads(qp("janitor"))["deleted"] == ["nsB"]
    assert json.loads(qp("reconcile", "nsB")) == {"kept": 0, "dropped": len(QUERIES)}
    assert json.loads(qp("reconcile", "nsA")) == {"kept": len(QUERIES), "dropped": 0}
