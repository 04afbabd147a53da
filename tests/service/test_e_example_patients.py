"""Section E on real cards: every example patient of the knowledge base, sent through the service (patient-view,
order-select and order-sign).

The cases (tests/examples/cases.yaml) say which rules must fire; here the same patients arrive as CDS Hooks
requests (resources under EHR-chosen key names), and every response is checked for conformance, including the
suggestions' FHIR resources (E10-E14).
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
import yaml
from fhir.resources.R4B import get_fhir_model_class

from server import create_app
from service.config import ServiceConfig
from service.validation import is_valid, validator
from tests.service.conftest import FixedNowRuleset, walk

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CASES = yaml.safe_load((EXAMPLES / "cases.yaml").read_text())["cases"]
SERVICE_FOR = {"patient-view": "pacing-review", "order-select": "sedating-medication-safety",
               "order-sign": "sedating-medication-safety"}


def as_request(doc: dict) -> dict:
    if "hook" in doc:  # already a CDS Hooks request: rename its prefetch keys as another EHR might
        req = dict(doc, hookInstance=str(uuid.uuid4()))
        req["prefetch"] = {f"ehr-key-{i}": v for i, v in enumerate((doc.get("prefetch") or {}).values())}
        return req
    resources = [e["resource"] for e in doc["entry"]]
    pid = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    # Key names an EHR might choose; the cards must not depend on them.
    prefetch = {f"ehr-key-{i}": r for i, r in enumerate(resources)}
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/dr-1", "patientId": pid}, "prefetch": prefetch}


@pytest.mark.parametrize("case", CASES, ids=[c["name"][:60] for c in CASES])
def test_E7_E10_E11_E12_E13_E14_H14_example_patient_cards_through_the_service(case, bundled_ruleset, audit):
    now = dt.datetime.fromisoformat(case["now"].replace("Z", "+00:00"))
    app = create_app(ServiceConfig(env="test", ruleset=FixedNowRuleset(bundled_ruleset, now), audit_store=audit))
    bundle = json.loads((EXAMPLES / case["input"]).read_text())
    request = as_request(bundle)
    hook = case.get("hook", "patient-view")
    assert request["hook"] == hook
    resp = app.test_client().post(f"/cds-services/{SERVICE_FOR[hook]}", json=request)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()

    fired = {c["extension"]["pacecds.rule"]["id"] for c in body["cards"]}
    assert set(case.get("fires", [])) <= fired
    assert not set(case.get("does_not_fire", [])) & fired
    by_rule = {c["extension"]["pacecds.rule"]["id"]: c for c in body["cards"]}
    for rule_id, indicator in (case.get("indicators") or {}).items():
        assert by_rule[rule_id]["indicator"] == indicator
    for rule_id, text in (case.get("summary_contains") or {}).items():
        assert text in by_rule[rule_id]["summary"]

    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator("response").iter_errors(body)]
    assert not errors                                                          # E1, E4-E6, E8, E10, E13, E15-E19
    for path, value in walk(body):                                             # A3, A4
        assert value is not None and (value not in ("", [], {}) or path == "$.cards"), path
    uuids = []
    for card in body["cards"]:
        uuids.append(card["uuid"])                                             # E9
        suggestions = card.get("suggestions", [])
        if suggestions:
            assert card["selectionBehavior"] in ("at-most-one", "any")         # E10
            if card["selectionBehavior"] == "at-most-one":                     # E11
                assert sum(bool(s.get("isRecommended")) for s in suggestions) <= 1
        for s in suggestions:
            uuids.append(s["uuid"])                                            # E9
            for action in s.get("actions", []):                                # E12-E14
                assert action["type"] in ("create", "update", "delete") and action["description"]
                if action["type"] in ("create", "update"):
                    res = action["resource"]
                    get_fhir_model_class(res["resourceType"]).model_validate(res)   # a real FHIR resource
                    assert res["resourceType"] in ("Goal", "ServiceRequest", "CarePlan", "Task", "MedicationRequest",
                                                    "CommunicationRequest")
                    ref = (res.get("subject") or res.get("for") or {}).get("reference")
                    assert ref == f"Patient/{request['context']['patientId']}"   # for this patient only
    assert len(uuids) == len(set(uuids))
    for card in body["cards"]:                                                 # E6, E7, H14
        urls = [card["source"].get("url")] + [link["url"] for link in card.get("links", [])]
        for url in filter(None, urls):
            assert url.startswith("https://"), url
        # source.url names the organisation or evidence, never this patient's context (drill-down is links)
        assert request["context"]["patientId"] not in (card["source"].get("url") or "")
    assert is_valid(body, "response")
