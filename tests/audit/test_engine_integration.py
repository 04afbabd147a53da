"""The decision record built from the real engine's EvaluationResult, and `audit show` on it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit import AuditStore, build_decision_record
from audit.cli import format_decision

from .conftest import AUDIT_KEY

ROOT = Path(__file__).resolve().parents[2]
engine = pytest.importorskip("engine")
if not hasattr(engine, "load_ruleset"):
    pytest.skip("the rules engine is not in this tree", allow_module_level=True)


@pytest.fixture(scope="module")
def rs():
    return engine.load_ruleset(ROOT / "rules")


def evaluate(rs, name):
    import datetime as dt
    bundle = json.loads((ROOT / "tests" / "examples" / "patients" / name).read_text())
    return rs.evaluate(bundle, now=dt.datetime(2026, 11, 1, 12, tzinfo=dt.timezone.utc), hook="patient-view")


def test_record_from_engine_result_explains_every_rule(rs, tmp_path):
    result = evaluate(rs, "anemia-woman-low-gdl.json")
    assert any(f.rule_id == "anemia.low-hemoglobin" for f in result.fired)
    rec = build_decision_record(result, hook="patient-view", hook_instance="int-1", service_id="pacecds-patient-view",
                                patient_id=result.patient_id, latency_ms=4.2, key=AUDIT_KEY, ruleset=rs)
    assert rec["ruleset"] == {"name": rs.name, "version": rs.version, "sha256": rs.sha256}
    fired = {f["id"]: f for f in rec["rulesFired"]}
    hb = fired["anemia.low-hemoglobin"]
    assert hb["version"] == next(r.version for r in rs.rules if r.id == "anemia.low-hemoglobin")
    assert hb["facts"]["hemoglobin"]["values"]["value"] == pytest.approx(10.8)
    assert hb["facts"]["hemoglobin"]["provenance"], "the matched facts must name their resources"
    assert hb["cardUuid"] == rec["cards"][0]["uuid"]
    # explained: every rule evaluated for the hook, fired or not, with the value each condition saw
    explained = {r["id"]: r for r in rec["explanation"]["rules"]}
    assert set(explained) == {e["id"] for e in rec["rulesEvaluated"]}
    assert explained["anemia.low-hemoglobin"]["fired"] is True
    text = json.dumps(explained["anemia.low-hemoglobin"]["condition"])
    assert "10.8" in text and "hemoglobin" in text

    store = AuditStore.from_config(f"sqlite:///{tmp_path}/int.db", key=AUDIT_KEY)
    store.record_evaluation(rec)
    shown = format_decision(store.get("int-1"))
    store.close()
    assert "anemia.low-hemoglobin" in shown
    assert "(saw 10.8)" in shown
    assert "no per-condition explanation" not in shown
    assert "pt-anna" not in json.dumps(rec)  # pseudonymous, provenance included
    assert "Patient/[this patient]" in hb["facts"]["age"]["provenance"]


def test_record_without_ruleset_object_still_stores(rs):
    result = evaluate(rs, "anemia-stale.json")
    rec = build_decision_record(result, hook="patient-view", hook_instance="int-2", service_id="s",
                                patient_id=result.patient_id, latency_ms=1, key=AUDIT_KEY)
    assert "explanation" not in rec and rec["ruleset"]["sha256"] == rs.sha256
