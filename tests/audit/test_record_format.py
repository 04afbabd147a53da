"""Record format 3 (each fact once) next to records of format 2: one chain, verified across the change, and
every reader (audit show, the console's decision page) reads both."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from audit import AuditStore
from audit.cli import format_decision
from audit.record import (
    RECORD_FORMAT,
    canonical_json,
    compact_record,
    decision_body,
    decode_refs,
    encode_refs,
    expand_record,
)

from .conftest import AUDIT_KEY
from .legacy import load_format2_log

ROOT = Path(__file__).resolve().parents[2]
engine = pytest.importorskip("engine")
NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def rs():
    return engine.load_ruleset(ROOT / "rules")


def _evaluate(rs, name="anemia-woman-low-gdl.json"):
    bundle = json.loads((ROOT / "tests" / "examples" / "patients" / name).read_text())
    return rs.evaluate(bundle, now=NOW, hook="patient-view")


def _kw(rs, result, hook_instance="f3-1"):
    return dict(hook="patient-view", hook_instance=hook_instance, service_id="pacing-review",
                patient_id=result.patient_id, latency_ms=4.0, key=AUDIT_KEY, ruleset=rs)


def _leaves(node):
    if isinstance(node, dict) and "children" in node:
        for c in node["children"]:
            yield from _leaves(c)
    elif isinstance(node, dict):
        yield node


def test_front_coded_references_come_back_exactly():
    refs = ["Observation/pat-obs-10", "Observation/pat-obs-11", "Observation/pat-obs-2", "Patient/p", "7:odd",
            "\\odd", "Observation/pat-obs-11"]
    coded = encode_refs(refs)
    assert coded[1] == "21:1" and coded[4] == "\\7:odd" and coded[5] == "\\\\odd"
    assert decode_refs(coded) == refs


def test_format3_names_each_fact_once_and_expands_to_what_format2_held(rs):
    result = _evaluate(rs)
    body = decision_body(result, **_kw(rs, result))
    assert body["format"] == RECORD_FORMAT == 3
    text = canonical_json(body)
    # the hemoglobin observation is named once although several conditions and a fired rule use it
    hb_refs = list(result.facts["hemoglobin"].provenance)
    assert hb_refs and text.count(hb_refs[0].split("/")[-1]) == 1
    assert result.patient_id not in text
    full = expand_record(body)
    fired = {f["id"]: f for f in full["rulesFired"]}
    assert fired["anemia.low-hemoglobin"]["facts"]["hemoglobin"]["provenance"] == hb_refs
    assert fired["anemia.low-hemoglobin"]["facts"]["hemoglobin"]["values"]["value"] == pytest.approx(10.8)
    hb_leaves = [leaf for r in full["explanation"]["rules"] for leaf in _leaves(r["condition"])
                 if leaf.get("test", "").startswith("hemoglobin.")]
    assert hb_leaves and all(leaf["provenance"] == hb_refs for leaf in hb_leaves)
    assert {"id": "anemia.low-hemoglobin", "version": fired["anemia.low-hemoglobin"]["version"]} \
        in full["rulesEvaluated"]
    # the engine's own explanation, condition by condition (results, values seen, provenance)
    explained = rs.explain_result(result)["rules"]
    for mine, theirs in zip(full["explanation"]["rules"], explained):
        assert mine["id"] == theirs["id"] and mine["fired"] == theirs["fired"]
        assert [(x["test"], x["result"], x["value"], x["provenance"]) for x in _leaves(mine["condition"])] == \
            [(x["test"], x["result"], x["value"], [p if "Patient/" not in p else "Patient/[this patient]"
                                                  for p in x["provenance"]]) for x in _leaves(theirs["condition"])]


def test_a_fact_that_differs_between_rules_stays_inline():
    rec = {"type": "evaluation", "hookInstance": "h", "rulesEvaluated": [{"id": "a", "version": "1"}],
           "rulesFired": [{"id": "a", "version": "1", "facts": {"x": {"value": 1, "provenance": ["Observation/1"]}}},
                          {"id": "b", "version": "1", "facts": {"x": {"value": 2, "provenance": ["Observation/2"]}}}],
           "shadow": [], "cards": []}
    full = expand_record(compact_record(rec))
    assert [f["facts"]["x"]["value"] for f in full["rulesFired"]] == [1, 2]
    assert full["rulesEvaluated"] == rec["rulesEvaluated"]


def test_a_format2_log_verifies_across_the_change_and_every_reader_reads_both(rs, store_url, monkeypatch):
    url, schema = store_url
    store = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY)
    data = load_format2_log(store)
    old_card = data["audit_card"][1]["card_uuid"]
    result = _evaluate(rs)
    seq = store.record_result(result, **{k: v for k, v in _kw(rs, result, "format3-1").items() if k != "key"})
    store.record_feedback("pacing-review", {"card": old_card, "outcome": "accepted"})
    rep = store.verify()
    assert rep.ok and rep.seals_checked and rep.records == len(data["audit_record"]) + 2, rep.problems
    formats = [r["record"].get("format") for r in store.export()]
    assert formats == [2] * len(data["audit_record"]) + [3, 3]
    old, new = store.get("format2-0"), store.get("format3-1")
    assert new["seq"] == seq and new["format"] == 3
    for rec in (old, new):
        assert rec["rulesFired"] and all(isinstance(f["facts"], dict) for f in rec["rulesFired"])
        assert rec["explanation"]["rules"]
        shown = format_decision(rec)
        assert "no per-condition explanation" not in shown and "from Observation/" in shown
    card_seq = data["audit_card"][1]["seq"]
    assert store.get_by_card(old_card)["hookInstance"] == data["audit_record"][card_seq - 1]["hook_instance"]
    stats = store.stats()
    assert stats["evaluations"] == 4 and stats["rules"]["anemia.low-hemoglobin"]["fired"] >= 1
    assert [d["hookInstance"] for d in store.find(limit=2)] == ["format3-1", "format2-2"]
    # a format 2 record appended after format 3 records is named (formats never go back)
    from .test_integrity import _forge_append
    forged = dict(json.loads(data["audit_record"][0]["body"]), hookInstance="old-code", cards=[])
    bad = _forge_append(store, forged, seal_with=store.seal_key)
    assert store.verify().first_bad.seq == bad and "format 2 after format 3" in store.verify().first_bad.detail
    store.close()


def test_the_console_decision_page_shows_both_formats(rs, tmp_path):
    from server import create_app
    from service.config import ServiceConfig
    store = AuditStore.from_config(f"sqlite:///{tmp_path}/audit.db", key=AUDIT_KEY)
    load_format2_log(store)
    result = _evaluate(rs)
    store.record_result(result, **{k: v for k, v in _kw(rs, result, "format3-1").items() if k != "key"})
    client = create_app(ServiceConfig(env="test", ruleset=rs, audit_store=store)).test_client()
    for hi in ("format2-0", "format3-1"):
        page = client.get(f"/console/audit/decision/{hi}")
        assert page.status_code == 200, page.data[:300]
        html = page.get_data(as_text=True)
        assert "No per-condition explanation" not in html and "from Observation/" in html
    store.close()
