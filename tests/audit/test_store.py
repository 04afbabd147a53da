from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import sqlalchemy as sa

from audit import AuditStore, build_decision_record, patient_key
from audit.store import records

from .conftest import AUDIT_KEY, raw_exec
from .fakes import Ruleset, result
from .legacy import load_format1_log

CANARY = "CANARY-TOKEN-7f3e9c"
JWT = ("eyJhbGciOiJSUzM4NCIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2Voci5leGFtcGxlIiwic3ViIjoi"
       + CANARY + "In0.c2lnbmF0dXJl")


def decision(hook_instance: str | None = None, patient: str = "pat-1") -> dict:
    return build_decision_record(result(patient), hook="patient-view",
                                 hook_instance=hook_instance or str(uuid.uuid4()),
                                 service_id="pacecds-patient-view", patient_id=patient,
                                 latency_ms=12.3456, key=AUDIT_KEY, ruleset=Ruleset())


# ---- the record ----------------------------------------------------------------------

def test_decision_record_holds_what_an_auditor_needs_and_no_more():
    rec = decision("hi-1")
    assert rec["hookInstance"] == "hi-1" and rec["hook"] == "patient-view"
    assert rec["serviceId"] == "pacecds-patient-view"
    assert rec["ruleset"] == {"name": "pacecds-msk", "version": "1.2.0", "sha256": "ab" * 32}
    assert {"id": "comorbidity.anaemia", "version": "2.1.0"} in rec["rulesEvaluated"]
    fired = rec["rulesFired"][0]
    assert fired["id"] == "pacing.boom-bust" and fired["version"] == "1.0.0"
    assert fired["facts"]["daily_steps_cv"]["value"] == 0.62
    assert fired["facts"]["daily_steps_cv"]["provenance"] == ["Observation/steps-1", "Observation/steps-2"]
    assert rec["cards"][0]["summary"] == "Consider pacing" and rec["cards"][0]["indicator"] == "info"
    assert rec["cards"][0]["rule"] == {"id": "pacing.boom-bust", "version": "1.0.0"}
    assert "detail" not in rec["cards"][0]
    assert rec["shadow"][0]["id"] == "pacing.new-draft"
    assert rec["latencyMs"] == 12.346
    # pseudonymous: a keyed hash, never the id itself
    assert "pat-1" not in json.dumps(rec)
    assert rec["patientKey"] == patient_key("pat-1", AUDIT_KEY)
    assert patient_key("pat-1", b"x" * 32) != rec["patientKey"]


def test_ruleset_falls_back_to_card_stamp():
    rec = build_decision_record(result(), hook="patient-view", hook_instance="h", service_id="s",
                                patient_id=None, latency_ms=1, key=AUDIT_KEY)
    assert rec["ruleset"]["sha256"] == "ab" * 32
    assert rec["patientKey"] == patient_key("pat-1", AUDIT_KEY)  # taken from result.patient_id


def test_short_key_refused():
    with pytest.raises(ValueError):
        build_decision_record(result(), hook="h", hook_instance="h", service_id="s", patient_id="p",
                              latency_ms=1, key=b"short")


# ---- storing and reading ---------------------------------------------------------------

def test_record_then_get(store):
    rec = decision("hook-abc")
    seq = store.record_evaluation(rec)
    assert seq == 1
    got = store.get("hook-abc")
    assert got["seq"] == 1 and got["rulesFired"] == rec["rulesFired"] and got["cards"] == rec["cards"]
    assert got["feedback"] == []
    assert store.get("no-such-hook") is None
    assert store.record_evaluation(decision()) == 2


def test_never_stores_tokens_jwts_or_request_bodies(store, store_url, tmp_path):
    rec = decision("hook-canary")
    # a careless caller passes credentials and the raw request along with the record
    rec["fhirAuthorization"] = {"access_token": CANARY, "token_type": "Bearer"}
    rec["request"] = {"context": {"patientId": "pat-1"}, "prefetch": {"x": CANARY}}
    rec["rulesFired"][0]["facts"]["note"] = {"value": "Bearer " + CANARY}
    rec["cards"][0]["summary"] = JWT
    store.record_evaluation(rec)
    store.record_feedback("svc", {"feedback": [{"card": rec["cards"][0]["uuid"], "outcome": "accepted",
                                                "authorization": "Bearer " + CANARY, "jwt": JWT}]})
    with store.engine.connect() as conn:
        dump = json.dumps([list(r) for r in conn.execute(sa.select(records))])
    assert CANARY not in dump and "eyJ" not in dump
    url, _ = store_url
    if url.startswith("sqlite"):
        store.close()
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))
        assert raw, "database file expected"
        assert CANARY.encode() not in raw


def test_feedback_is_idempotent_and_linked(store):
    rec = decision("hook-fb")
    store.record_evaluation(rec)
    uuid_ = rec["cards"][0]["uuid"]
    item = {"card": uuid_, "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:00:00Z",
            "overrideReason": {"reason": {"code": "not-relevant", "display": "Not relevant to this patient",
                                          "system": "https://pacecds.example/override"},
                               "userComment": "already pacing"}}
    assert store.record_feedback("pacecds-patient-view", {"feedback": [item]}) is True
    assert store.record_feedback("pacecds-patient-view", {"feedback": [item]}) is False
    assert store.record_feedback("pacecds-patient-view", dict(item)) is False  # bare item, same content
    assert store.count() == 2
    got = store.get("hook-fb")
    assert len(got["feedback"]) == 1
    fb = got["feedback"][0]
    assert fb["rule"] == {"id": "pacing.boom-bust", "version": "1.0.0"}
    assert fb["evaluationSeq"] == 1 and fb["hookInstance"] == "hook-fb"
    assert store.verify().ok


def test_feedback_for_unknown_card_is_kept_unlinked(store):
    assert store.record_feedback("svc", {"card": "nope", "outcome": "accepted"}) is True
    rec = store.stats()
    assert rec["rules"]["(unknown)"]["accepted"] == 1


def test_feedback_without_card_refused(store):
    with pytest.raises(ValueError):
        store.record_feedback("svc", {"feedback": [{"outcome": "accepted"}]})
    with pytest.raises(ValueError):
        store.record_evaluation({"hook": "x"})


def test_stats_per_rule(store):
    recs = [decision() for _ in range(3)]
    for r in recs:
        store.record_evaluation(r)
    store.record_feedback("s", {"card": recs[0]["cards"][0]["uuid"], "outcome": "accepted"})
    store.record_feedback("s", {"card": recs[1]["cards"][0]["uuid"], "outcome": "overridden",
                                "overrideReason": {"reason": {"code": "x", "display": "Patient declined"}}})
    store.record_feedback("s", {"card": recs[2]["cards"][0]["uuid"], "outcome": "overridden"})
    st = store.stats()
    assert st["evaluations"] == 3 and st["feedback"] == 3
    boom = st["rules"]["pacing.boom-bust"]
    assert (boom["evaluated"], boom["fired"], boom["cards"]) == (3, 3, 3)
    assert (boom["accepted"], boom["overridden"]) == (1, 2)
    assert boom["override_reasons"] == {"Patient declined": 1, "(no reason given)": 1}
    assert st["rules"]["comorbidity.anaemia"]["evaluated"] == 3
    assert st["rules"]["comorbidity.anaemia"]["fired"] == 0
    assert st["rules"]["pacing.new-draft"]["shadow_fired"] == 3
    # --since: only what was recorded from then on
    assert store.stats(since="2999-01-01")["evaluations"] == 0
    assert store.stats(since="2000-01-01")["evaluations"] == 3


# ---- tamper evidence -------------------------------------------------------------------

def _fill(store, n=5):
    for i in range(n):
        store.record_evaluation(decision(f"h{i + 1}"))


def test_verify_honest_log(store):
    _fill(store)
    rep = store.verify()
    assert rep.ok and rep.records == 5 and rep.head_seq == 5 and rep.first_bad is None


def test_verify_empty_log(store):
    assert store.verify().ok


def test_verify_names_edited_record(store):
    _fill(store)
    raw_exec(store, "UPDATE audit_record SET body = replace(body, 'info', 'critical') WHERE seq = 3")
    rep = store.verify()
    assert not rep.ok
    assert (rep.first_bad.seq, rep.first_bad.kind) == (3, "changed")


def test_verify_names_record_edited_and_rehashed(store):
    from audit.record import chain_hash
    _fill(store)
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(records).where(records.c.seq == 2)).one()
    body = row.body.replace("Consider pacing", "Nothing to see")
    raw_exec(store, "UPDATE audit_record SET body = :b, hash = :h WHERE seq = 2",
             b=body, h=chain_hash(row.prev_hash, body))
    rep = store.verify()
    assert (rep.first_bad.seq, rep.first_bad.kind) == (2, "changed")


def test_verify_names_edited_index_column(store):
    _fill(store)
    raw_exec(store, "UPDATE audit_record SET hook_instance = 'forged' WHERE seq = 4")
    rep = store.verify()
    assert (rep.first_bad.seq, rep.first_bad.kind) == (4, "changed")
    assert "hook_instance" in rep.first_bad.detail


def test_verify_names_deleted_record(store):
    _fill(store)
    raw_exec(store, "DELETE FROM audit_record WHERE seq = 3")
    rep = store.verify()
    assert (rep.first_bad.seq, rep.first_bad.kind) == (3, "deleted")


def test_verify_names_deleted_first_and_last_records(store):
    _fill(store)
    raw_exec(store, "DELETE FROM audit_record WHERE seq IN (1, 5)")
    probs = [(p.seq, p.kind) for p in store.verify().problems]
    assert probs == [(1, "deleted"), (5, "deleted")]


def test_verify_names_inserted_record(store):
    _fill(store, 3)
    with store.engine.connect() as conn:
        last = conn.execute(sa.select(records).where(records.c.seq == 3)).one()
    # a forger who knows the hash scheme appends a well-formed record but cannot move the head
    from audit.record import canonical_json, chain_hash
    body = canonical_json({**json.loads(last.body), "hookInstance": "forged"})
    raw_exec(store, "INSERT INTO audit_record (seq, kind, recorded_at, hook_instance, hook, service_id, "
                    "patient_key, body, prev_hash, hash) SELECT 4, kind, recorded_at, 'forged', hook, "
                    "service_id, patient_key, :b, :p, :h FROM audit_record WHERE seq = 3",
             b=body, p=last.hash, h=chain_hash(last.hash, body))
    rep = store.verify()
    assert (rep.first_bad.seq, rep.first_bad.kind) == (4, "inserted")


def test_verify_names_record_inserted_in_the_middle(store):
    from audit.record import canonical_json, chain_hash
    _fill(store, 4)
    # make room: renumber 3,4 -> 4,5 and move the head, then slip a well-formed record in at 3
    raw_exec(store, "UPDATE audit_record SET seq = seq + 10 WHERE seq >= 3")
    raw_exec(store, "UPDATE audit_record SET seq = seq - 9 WHERE seq >= 13")
    with store.engine.connect() as conn:
        two = conn.execute(sa.select(records).where(records.c.seq == 2)).one()
        last = conn.execute(sa.select(records).where(records.c.seq == 5)).one()
    body = canonical_json({**json.loads(two.body), "hookInstance": "forged"})
    raw_exec(store, "INSERT INTO audit_record (seq, kind, recorded_at, hook_instance, hook, service_id, "
                    "patient_key, body, prev_hash, hash) SELECT 3, kind, recorded_at, 'forged', hook, "
                    "service_id, patient_key, :b, :p, :h FROM audit_record WHERE seq = 2",
             b=body, p=two.hash, h=chain_hash(two.hash, body))
    raw_exec(store, "UPDATE audit_chain_head SET seq = 5, hash = :h", h=last.hash)
    rep = store.verify()
    assert (rep.first_bad.seq, rep.first_bad.kind) == (3, "inserted")


# ---- concurrency and durability --------------------------------------------------------

def _writer(url, schema, n, q, barrier=None):
    try:
        s = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY)
        if barrier is not None:
            barrier.wait(60)  # all writers start appending at the same moment
        t0 = time.monotonic()
        for i in range(n):
            s.record_evaluation(decision(f"{os.getpid()}-{i}"))
        t1 = time.monotonic()
        s.close()
        q.put((None, t0, t1))
    except Exception as e:  # report to the parent instead of dying silently
        q.put((repr(e), 0, 0))


def test_concurrent_writers_keep_one_chain(store_url):
    url, schema = store_url
    AuditStore.from_config(url, schema=schema, key=AUDIT_KEY).close()
    ctx = mp.get_context("fork")  # separate processes; fork avoids re-importing the engine
    q = ctx.Queue()
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_writer, args=(url, schema, 25, q, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert [r[0] for r in results] == [None] * 4
    # the writers really contended: every one was still appending when the last one started
    assert max(r[1] for r in results) < min(r[2] for r in results)
    s = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY)
    rep = s.verify()
    assert rep.ok, rep.problems
    assert rep.records == 100 and s.head()[0] == 100
    with s.engine.connect() as conn:
        hooks = list(conn.execute(sa.select(records.c.hook_instance).order_by(records.c.seq)).scalars())
    assert len(set(hooks)) == 100
    s.close()


def test_concurrent_first_start_migrates_once(store_url):
    """Several workers opening a brand-new database at once all succeed."""
    url, schema = store_url
    ctx = mp.get_context("fork")  # separate processes; fork avoids re-importing the engine
    q = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, schema, 2, q)) for _ in range(3)]
    for p in procs:
        p.start()
    errors = [q.get(timeout=120)[0] for _ in procs]
    for p in procs:
        p.join(60)
    assert errors == [None] * 3
    s = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY)
    assert s.schema_revision() == AuditStore.head_revision() and s.verify().ok and s.count() == 6
    s.close()


KILLER = r"""
import os, signal, sys, uuid
sys.path.insert(0, sys.argv[3])
from audit import AuditStore
s = AuditStore.from_config(sys.argv[1], schema=(sys.argv[2] or None), key=b"k" * 32)
for i in range(20):
    s.record_evaluation({"hookInstance": f"kill-{i}", "hook": "patient-view"})
    print(f"kill-{i}", flush=True)   # acknowledged only after the commit returned
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_record_survives_sigkill_right_after_commit(store_url):
    url, schema = store_url
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = subprocess.run([sys.executable, "-c", KILLER, url, schema or "", root],
                       capture_output=True, text=True, timeout=120, env=os.environ)
    assert p.returncode == -signal.SIGKILL, p.stderr
    acked = p.stdout.split()
    assert len(acked) == 20
    s = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY)
    for h in acked:
        assert s.get(h) is not None, h
    assert s.verify().ok
    s.close()


def test_record_result_uses_the_store_key(store):
    seq = store.record_result(result("pat-9"), hook="patient-view", hook_instance="rr-1", service_id="svc",
                              patient_id="pat-9", latency_ms=3.0, ruleset=Ruleset())
    got = store.get("rr-1")
    assert got["seq"] == seq and got["patientKey"] == patient_key("pat-9", AUDIT_KEY)


def test_generated_key_file_is_private_and_stable(tmp_path, monkeypatch):
    from audit.config import load_audit_key
    monkeypatch.delenv("PACECDS_AUDIT_KEY", raising=False)
    monkeypatch.setenv("PACECDS_VAR_DIR", str(tmp_path / "v"))
    k1 = load_audit_key()
    assert load_audit_key() == k1 and len(k1) >= 32
    assert (tmp_path / "v" / "pacecds-audit.key").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("PACECDS_AUDIT_KEY", "configured-key-0123456789")
    assert load_audit_key() == b"configured-key-0123456789"
    monkeypatch.setenv("PACECDS_AUDIT_KEY", "short")
    with pytest.raises(ValueError):
        load_audit_key()


def test_default_store_is_sqlite_wal_under_var(tmp_path, monkeypatch):
    monkeypatch.delenv("PACECDS_DATABASE_URL", raising=False)
    monkeypatch.setenv("PACECDS_VAR_DIR", str(tmp_path / "var"))
    s = AuditStore.from_config(key=AUDIT_KEY)
    try:
        assert (tmp_path / "var" / "pacecds-audit.db").exists()
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert s.schema_revision() == AuditStore.head_revision()
    finally:
        s.close()


def test_retried_hook_instance_is_noted(store):
    store.record_evaluation(decision("retry-1"))
    second = decision("retry-1")
    seq = store.record_evaluation(second)
    got = store.get("retry-1")
    assert got["seq"] == seq and got["sameHookInstance"] == 1


def test_verify_finds_insertions_beyond_its_memory(store, monkeypatch):
    """Old hashes leave verify's memory; a splice far back is still called an insertion."""
    from audit import store as store_mod
    monkeypatch.setattr(store_mod._RecentHashes, "LIMIT", 1)  # forces the database look-up
    test_verify_names_record_inserted_in_the_middle(store)


def test_upgrade_from_first_schema_keeps_the_chain(store_url):
    url, schema = store_url
    s = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY, migrate=False)
    s.migrate("0001")
    assert s.schema_revision() == "0001"
    load_format1_log(s)   # records as the code of that schema wrote them
    s.migrate()
    assert s.schema_revision() == AuditStore.head_revision() != "0001"
    long_id = "urn:uuid:" + "x" * 300   # longer than the first schema's VARCHAR(128)
    s.record_evaluation(decision(long_id))
    assert s.get(long_id)["hookInstance"] == long_id
    assert s.get("legacy-0") is not None and s.verify().ok
    s.close()


@pytest.mark.parametrize("text, redacted", [
    ("Bearer abc.def", True), ("see: BeArEr\ttok", True), ("x-bearer token", True), ("bearer", False),
    ("abearer token", False), ("eyJhbGciOi.eyJzdWIiOi.sig", True), ("eyJab.cd.ef", False),
    ("Observation/steps-1", False), ("Patient/[this patient]", False),
])
def test_scrub_redacts_jwt_and_bearer_strings_and_forbidden_keys(text, redacted):
    from audit.record import REDACTED, scrub

    clean, removed = scrub({"summary": text, "Access_Token": "x", "nested": [{"note": text}]})
    assert "Access_Token" not in clean and removed == 1 + 2 * redacted
    assert (clean["summary"] == REDACTED) == redacted and (clean["nested"][0]["note"] == REDACTED) == redacted


def test_stats_per_release_and_cards_per_patient(store):
    old = [decision(patient="pat-1"), decision(patient="pat-2")]
    new = decision(patient="pat-1")
    new["ruleset"] = {"name": "pacecds-msk", "version": "1.3.0", "sha256": "cd" * 32}
    for rec in old + [new]:
        store.record_evaluation(rec)
    store.record_feedback("s", {"card": old[0]["cards"][0]["uuid"], "outcome": "overridden",
                                "overrideReason": {"reason": {"code": "x", "display": "Patient declined"}}})
    store.record_feedback("s", {"card": new["cards"][0]["uuid"], "outcome": "accepted"})
    everything = store.stats()
    assert {(r["version"], r["evaluations"]) for r in everything["releases"]} == {("1.2.0", 2), ("1.3.0", 1)}
    boom = everything["rules"]["pacing.boom-bust"]
    assert (boom["cards"], boom["patients"], boom["accepted"], boom["overridden"]) == (3, 2, 1, 1)
    assert everything["cards_per_patient"] == {"patients": 2, "cards": 3, "mean": 1.5, "max": 2,
                                               "histogram": {"0": 0, "1": 1, "2": 1, "3": 0, "4": 0, "5+": 0}}
    first = store.stats(release="ab" * 32)
    assert first["evaluations"] == 2 and first["feedback"] == 1
    boom = first["rules"]["pacing.boom-bust"]
    assert (boom["cards"], boom["patients"], boom["accepted"], boom["overridden"]) == (2, 2, 0, 1)
    assert boom["override_reasons"] == {"Patient declined": 1}
    assert first["cards_per_patient"]["histogram"]["1"] == 2
    assert len(first["releases"]) == 2  # every release stays choosable
    second = store.stats(release="cd" * 32)
    assert second["evaluations"] == 1 and second["rules"]["pacing.boom-bust"]["accepted"] == 1
    assert store.stats(release="no-such-release")["evaluations"] == 0
