"""A decision log written by pacecds before record format 2 (no seals, times taken before the chain lock),
loaded row by row as that code stored it (tests/audit/fixtures/decision-log-format1.json)."""
from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

FIXTURE = Path(__file__).parent / "fixtures" / "decision-log-format1.json"


def format1_log() -> dict:
    return json.loads(FIXTURE.read_text())


def load_format1_log(store) -> dict:
    """Write the fixture's rows into `store`, which must be at schema 0001 or 0002 (as the old code left it)."""
    data = format1_log()
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_card"))
        conn.execute(sa.text("DELETE FROM audit_record"))
        for row in data["audit_record"]:
            cols = ", ".join(row)
            conn.execute(sa.text(f"INSERT INTO audit_record ({cols}) VALUES ({', '.join(':' + c for c in row)})"),
                         row)
        for row in data["audit_card"]:
            conn.execute(sa.text("INSERT INTO audit_card (card_uuid, seq, rule_id, rule_version) "
                                 "VALUES (:card_uuid, :seq, :rule_id, :rule_version)"), row)
        head = data["audit_chain_head"]
        conn.execute(sa.text("UPDATE audit_chain_head SET seq = :seq, hash = :hash WHERE id = 1"), head)
    return data


FORMAT2 = Path(__file__).parent / "fixtures" / "decision-log-format2.json"


def load_format2_log(store) -> dict:
    """Write the rows of a log that pacecds wrote with record format 2 (sealed with key b"k" * 32) into `store`,
    at the current schema (format 3 changed the records, not the tables)."""
    data = json.loads(FORMAT2.read_text())
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_card"))
        conn.execute(sa.text("DELETE FROM audit_record"))
        for row in data["audit_record"]:
            cols = ", ".join(row)
            conn.execute(sa.text(f"INSERT INTO audit_record ({cols}) VALUES ({', '.join(':' + c for c in row)})"),
                         row)
        for row in data["audit_card"]:
            conn.execute(sa.text("INSERT INTO audit_card (card_uuid, seq, rule_id, rule_version) "
                                 "VALUES (:card_uuid, :seq, :rule_id, :rule_version)"), row)
        conn.execute(sa.text("UPDATE audit_chain_head SET seq = :seq, hash = :hash WHERE id = 1"),
                     data["audit_chain_head"])
    return data
