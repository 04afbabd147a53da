"""Issue 14 item 4: what a writer to the database alone cannot do to the decision log undetected.

Every record is sealed (HMAC over its number and chain hash) with a key outside the database; verify checks the
card index and feedback links against the chained records and that times never go backwards; records written
before the seals (record format 1) stay verifiable across the change."""
from __future__ import annotations

import argparse
import json

import pytest
import sqlalchemy as sa

from audit import AuditStore
from audit.cli import register_audit_commands
from audit.record import RECORD_FORMAT, canonical_json, chain_hash
from audit.store import cards, records

from .conftest import AUDIT_KEY, raw_exec
from .legacy import load_format1_log
from .test_store import decision


def _fill(store, n=4):
    return [store.record_evaluation(decision(f"h{i + 1}")) for i in range(n)]


def _row(store, seq):
    with store.engine.connect() as conn:
        return conn.execute(sa.select(records).where(records.c.seq == seq)).one()


def _card_of(store, seq):
    return json.loads(_row(store, seq).body)["cards"][0]["uuid"]


def _problems(store, **kw):
    return [(p.seq, p.kind) for p in store.verify(**kw).problems]


def _forge_append(store, body: dict, *, seal_with=None, move_head=True) -> int:
    """Append a well-formed record after the head as a database writer would (no key: no seal)."""
    with store.engine.connect() as conn:
        head = conn.execute(sa.text("SELECT seq, hash FROM audit_chain_head")).one()
    text = canonical_json(body)
    h = chain_hash(head.hash, text)
    seq = head.seq + 1
    from audit.record import seal
    raw_exec(store, "INSERT INTO audit_record (seq, kind, recorded_at, hook_instance, hook, service_id, "
                    "patient_key, card_uuid, body, prev_hash, hash, seal) VALUES (:seq, :kind, :t, :hi, :hook, "
                    ":svc, :pk, :card, :b, :p, :h, :seal)",
             seq=seq, kind=body["type"], t=body["time"], hi=body.get("hookInstance"), hook=body.get("hook"),
             svc=body.get("serviceId"), pk=body.get("patientKey"), card=body.get("card"), b=text, p=head.hash,
             h=h, seal=seal(seal_with, seq, h) if seal_with else None)
    if move_head:
        raw_exec(store, "UPDATE audit_chain_head SET seq = :s, hash = :h", s=seq, h=h)
    return seq


def run(capsys, *argv):
    parser = argparse.ArgumentParser(prog="pacecds")
    register_audit_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


# ---- the card index and feedback ------------------------------------------------------------------------

def test_card_index_pointing_at_another_decision_fails_verify(store):
    _fill(store)
    card2 = _card_of(store, 2)
    # the index now says record 1 returned record 2's card (and so does its rule)
    raw_exec(store, "UPDATE audit_card SET seq = 1, rule_id = 'comorbidity.anaemia' WHERE card_uuid = :c", c=card2)
    rep = store.verify()
    assert not rep.ok
    assert (1, "changed") in _problems(store) and (2, "changed") in _problems(store)
    assert any("audit_card" in p.detail and card2 in p.detail for p in rep.problems)


def test_a_tampered_card_index_never_shows_or_links_the_wrong_decision(store):
    _fill(store)
    card2 = _card_of(store, 2)
    raw_exec(store, "UPDATE audit_card SET seq = 1 WHERE card_uuid = :c", c=card2)
    assert store.get_by_card(card2) is None            # not found, rather than record 1
    store.record_feedback("svc", {"card": card2, "outcome": "accepted"})
    fb = json.loads(_row(store, 5).body)
    assert fb["evaluationSeq"] is None and fb["rule"] is None   # not linked to record 1
    # the index put back, show and verify agree again; the unlinked feedback is named
    raw_exec(store, "UPDATE audit_card SET seq = 2 WHERE card_uuid = :c", c=card2)
    assert store.get_by_card(card2)["seq"] == 2
    rep = store.verify()
    assert [(p.seq, p.kind) for p in rep.problems] == [(5, "changed")] and "not linked to record 2" in rep.first_bad.detail


def test_deleted_and_extra_card_index_rows_fail_verify(store):
    _fill(store)
    raw_exec(store, "DELETE FROM audit_card WHERE seq = 3")
    raw_exec(store, "INSERT INTO audit_card (card_uuid, seq, rule_id, rule_version) VALUES ('ghost', 9, 'r', '1')")
    probs = store.verify().problems
    assert [(p.seq, p.kind) for p in probs] == [(3, "changed"), (9, "changed")]
    assert "lacks card" in probs[0].detail and "does not exist" in probs[1].detail


def test_feedback_linked_to_a_decision_without_its_card_fails_verify(store):
    """A sealed feedback record (the key holder's code) that names the wrong decision is still caught."""
    _fill(store)
    card2 = _card_of(store, 2)
    body = {"type": "feedback", "format": RECORD_FORMAT, "time": "2999-01-01T00:00:00.000000Z",
            "serviceId": "svc", "card": card2, "outcome": "accepted", "evaluationSeq": 1, "hookInstance": "h1",
            "rule": {"id": "pacing.boom-bust", "version": "1.0.0"}, "feedbackKey": None}
    seq = _forge_append(store, body, seal_with=store.seal_key)
    rep = store.verify()
    assert [(p.seq, p.kind) for p in rep.problems] == [(seq, "changed")]
    assert "refers to record 1, which did not return that card" in rep.first_bad.detail


# ---- a forged tail, a moved head, a rewritten chain -------------------------------------------------------

def test_forged_tail_with_moved_head_fails_verify_and_expect_head(store_url, tmp_path, monkeypatch, capsys):
    url, schema = store_url
    monkeypatch.setenv("PACECDS_AUDIT_KEY", AUDIT_KEY.decode())
    store = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY)
    _fill(store, 3)
    noted = store.head()[1]
    forged = {**json.loads(_row(store, 3).body), "hookInstance": "forged", "time": "2999-01-01T00:00:00.000000Z",
              "cards": []}
    seq = _forge_append(store, forged)
    assert _problems(store) == [(seq, "inserted")]
    assert "no seal" in store.verify().first_bad.detail
    if schema is None:   # the CLI reads the database the service uses (a schema is a test device)
        monkeypatch.setenv("PACECDS_DATABASE_URL", url)
        rc, out, _ = run(capsys, "audit", "verify", "--expect-head", noted)
        assert rc == 1 and "FAILED" in out
    store.close()


def test_forged_record_with_a_copied_seal_fails_verify(store):
    _fill(store, 3)
    forged = {**json.loads(_row(store, 3).body), "hookInstance": "forged", "cards": []}
    seq = _forge_append(store, forged)
    raw_exec(store, "UPDATE audit_record SET seal = (SELECT seal FROM audit_record WHERE seq = 3) WHERE seq = 4")
    assert _problems(store) == [(seq, "changed")]


def test_rewriting_the_chain_from_a_record_on_fails_verify(store):
    """Edit record 2, re-hash it and every later record, move the head: the chain is whole, the seals are not."""
    _fill(store, 4)
    prev = _row(store, 1).hash
    for seq in range(2, 5):
        row = _row(store, seq)
        body = row.body.replace("Consider pacing", "Nothing to see")
        h = chain_hash(prev, body)
        raw_exec(store, "UPDATE audit_record SET body = :b, prev_hash = :p, hash = :h WHERE seq = :s",
                 b=body, p=prev, h=h, s=seq)
        prev = h
    raw_exec(store, "UPDATE audit_chain_head SET hash = :h", h=prev)
    assert _problems(store)[0] == (2, "changed")
    assert "seal does not match" in store.verify().first_bad.detail
    # without the key only the chain is checked, and it is whole: the report says seals were not checked
    rep = store.verify(seals=False)
    assert rep.ok and not rep.seals_checked


def test_verify_with_the_head_row_deleted_reports_a_failure(store_url, monkeypatch, capsys):
    url, schema = store_url
    monkeypatch.setenv("PACECDS_AUDIT_KEY", AUDIT_KEY.decode())
    store = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY)
    _fill(store, 2)
    raw_exec(store, "DELETE FROM audit_chain_head")
    rep = store.verify()
    assert not rep.ok and rep.problems[0].seq is None and "chain head row" in rep.problems[0].detail
    assert rep.records == 2
    if schema is None:
        monkeypatch.setenv("PACECDS_DATABASE_URL", url)
        rc, out, err = run(capsys, "audit", "verify")
        assert rc == 1 and "FAILED" in out and "chain head row" in out and "Traceback" not in err
        rc, out, _ = run(capsys, "audit", "verify", "--json")
        assert rc == 1 and json.loads(out)["ok"] is False
    with pytest.raises(RuntimeError, match="chain head row is missing"):
        store.record_evaluation(decision("after"))
    store.close()


def test_cli_verify_needs_the_key_or_says_it_did_not_check_seals(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PACECDS_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PACECDS_DATABASE_URL", f"sqlite:///{tmp_path}/k.db")
    monkeypatch.delenv("PACECDS_AUDIT_KEY", raising=False)
    s = AuditStore.from_config(key=AUDIT_KEY)
    _fill(s, 2)
    s.close()
    rc, out, err = run(capsys, "audit", "verify")
    assert rc == 2 and out == "" and "cannot check the records' seals" in err and "--no-seals" in err
    rc, out, _ = run(capsys, "audit", "verify", "--no-seals")
    assert rc == 0 and out.startswith("OK: 2 records") and "seals NOT checked" in out
    monkeypatch.setenv("PACECDS_AUDIT_KEY", AUDIT_KEY.decode())
    rc, out, _ = run(capsys, "audit", "verify")
    assert rc == 0 and "every record is sealed with the audit key" in out
    monkeypatch.setenv("PACECDS_AUDIT_KEY", "another-key-0123456789abcdef")
    rc, out, _ = run(capsys, "audit", "verify")
    assert rc == 1 and "seal does not match" in out


# ---- times ----------------------------------------------------------------------------------------------

def test_record_times_never_go_backwards(store):
    store.record_evaluation({**decision("late"), "time": "2030-01-01T00:00:00.000000Z"})
    store.record_evaluation({**decision("early"), "time": "2020-01-01T00:00:00.000000Z"})  # a slower clock
    store.record_feedback("svc", {"card": _card_of(store, 1), "outcome": "accepted"})
    times = [json.loads(_row(store, s).body)["time"] for s in (1, 2, 3)]
    assert times == sorted(times) and times[1] >= "2030-01-01T00:00:00.000000Z"
    assert store.verify().ok


def test_verify_names_a_record_whose_time_goes_backwards(store):
    _fill(store, 2)
    body = {**json.loads(_row(store, 2).body), "hookInstance": "past", "time": "2001-01-01T00:00:00.000000Z",
            "cards": []}
    seq = _forge_append(store, body, seal_with=store.seal_key)   # even the key holder's code may not
    rep = store.verify()
    assert [(p.seq, p.kind) for p in rep.problems] == [(seq, "changed")] and "backwards" in rep.first_bad.detail


# ---- across the record format change ------------------------------------------------------------------

def test_records_written_before_the_change_stay_verifiable(store_url, monkeypatch, capsys):
    url, schema = store_url
    old = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY, migrate=False)
    old.migrate("0002")                        # the schema the old code left
    data = load_format1_log(old)               # ... and the records it wrote
    old.close()
    store = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY)   # upgrade: seals the old records once
    assert store.schema_revision() == AuditStore.head_revision()
    legacy_card = data["audit_card"][1]["card_uuid"]
    store.record_evaluation(decision("after-1"))
    store.record_feedback("svc", {"card": legacy_card, "outcome": "overridden"})
    store.record_evaluation(decision("after-2"))
    rep = store.verify()
    assert rep.ok and rep.records == len(data["audit_record"]) + 3 and rep.seals_checked, rep.problems
    formats = [json.loads(_row(store, s).body).get("format", 1) for s in range(1, rep.records + 1)]
    assert formats == [1] * len(data["audit_record"]) + [3, 3, 3]
    assert [_row(store, s).hash for s in range(1, 5)] == [r["hash"] for r in data["audit_record"]]  # unchanged
    assert store.get_by_card(legacy_card)["hookInstance"] == "legacy-1"
    fb = json.loads(_row(store, 6).body)
    assert fb["evaluationSeq"] == 2 and fb["rule"] == {"id": "pacing.boom-bust", "version": "1.0.0"}
    # an old-format record added afterwards (old code still running, or a forger) is named
    forged = {k: v for k, v in json.loads(_row(store, 1).body).items() if k != "format"}
    seq = _forge_append(store, {**forged, "hookInstance": "old-code", "cards": []}, seal_with=store.seal_key)
    assert _problems(store) == [(seq, "changed")] and "format 1 after format 3" in store.verify().first_bad.detail
    # a legacy record edited after the upgrade is still found by its hash
    raw_exec(store, "UPDATE audit_record SET body = replace(body, 'legacy-2', 'legacy-X') WHERE seq = 3")
    raw_exec(store, "UPDATE audit_record SET hook_instance = 'legacy-X' WHERE seq = 3")
    assert _problems(store)[0] == (3, "changed")
    store.close()


def test_the_card_index_has_the_cards_of_every_record(store):
    _fill(store, 3)
    with store.engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(cards)).scalar_one()
    assert n == 3 and store.verify().ok


def test_an_export_carries_the_seals_and_verify_file_checks_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PACECDS_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PACECDS_DATABASE_URL", f"sqlite:///{tmp_path}/e.db")
    monkeypatch.setenv("PACECDS_AUDIT_KEY", AUDIT_KEY.decode())
    s = AuditStore.from_config(key=AUDIT_KEY)
    _fill(s, 3)
    s.close()
    out = tmp_path / "log.jsonl"
    assert run(capsys, "audit", "export", "-o", str(out))[0] == 0
    rc, text, _ = run(capsys, "audit", "verify", "--file", str(out))
    assert rc == 0 and "every record is sealed" in text
    # a whole export re-chained by someone without the key: every hash fits, the seals do not
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    prev = lines[0]["prevHash"]
    for line in lines:
        line["record"]["hookInstance"] = "rewritten"
        line["prevHash"], line["hash"] = prev, chain_hash(prev, canonical_json(line["record"]))
        prev = line["hash"]
    forged = tmp_path / "forged.jsonl"
    forged.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rc, text, _ = run(capsys, "audit", "verify", "--file", str(forged))
    assert rc == 1 and "record 1: changed: its seal does not match" in text
    rc, text, _ = run(capsys, "audit", "verify", "--file", str(forged), "--no-seals")
    assert rc == 0 and "seals NOT checked" in text
