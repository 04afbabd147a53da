"""Checklist sections A (JSON transport) and B (discovery)."""
from __future__ import annotations

import datetime as dt
import json
import re
from urllib.parse import parse_qsl, urlsplit

from service.services import build_prefetch
from service.validation import is_valid
from tests.service.conftest import fixture, full_prefetch, order_request, patient, patient_view_request, walk

ALLOWED_EMPTY = {"$.cards", "$.services"}


def assert_no_null_no_empty(doc):
    for path, value in walk(doc):
        assert value is not None, f"null at {path}"
        if value in ("", [], {}) and not isinstance(value, bool):
            assert path in ALLOWED_EMPTY, f"empty value at {path}"


def exchanges(client):
    """(name, response) for every endpoint and its main error paths."""
    pv = patient_view_request({"patient": patient()})
    fb = fixture("spec-feedback-accepted.json")
    return [
        ("discovery", client.get("/cds-services")),
        ("invoke", client.post("/cds-services/pacing-review", json=pv)),
        ("feedback", client.post("/cds-services/pacing-review/feedback", json=fb)),
        ("malformed", client.post("/cds-services/pacing-review", data="{not json",
                                  content_type="application/json")),
        ("not-json", client.post("/cds-services/pacing-review", data="hook=patient-view",
                                 content_type="application/x-www-form-urlencoded")),
        ("unknown", client.post("/cds-services/nope", json=pv)),
        ("method", client.get("/cds-services/pacing-review")),
        ("412", client.post("/cds-services/pacing-review", json=patient_view_request())),
    ]


def test_A1_json_in_and_out_on_every_endpoint_and_error(client):
    for name, resp in exchanges(client):
        assert resp.mimetype == "application/json", name
        # cards carry PHI: never cached by an intermediary, never sniffed as another type
        assert resp.headers["Cache-Control"] == "no-store" and resp.headers["X-Content-Type-Options"] == "nosniff"
        json.loads(resp.get_data(as_text=True))
        assert resp.status_code < 500, name
    statuses = {name: resp.status_code for name, resp in exchanges(client)}
    assert statuses == {"discovery": 200, "invoke": 200, "feedback": 200, "malformed": 400, "not-json": 415,
                        "unknown": 404, "method": 405, "412": 412}


def test_A3_A4_no_nulls_no_empty_values_anywhere(client):
    for name, resp in exchanges(client):
        assert_no_null_no_empty(resp.get_json())
    # an empty card list is the one allowed empty array
    assert client.post("/cds-services/pacing-review",
                       json=patient_view_request(full_prefetch())).get_json() == {"cards": []}


# --------------------------------------------------------------------------- B: discovery

def test_B1_B2_discovery_with_and_without_trailing_slash(client):
    a = client.get("/cds-services")
    b = client.get("/cds-services/")
    assert a.status_code == b.status_code == 200
    assert a.get_json() == b.get_json()


def test_B3_B4_discovery_schema_and_titles(client):
    doc = client.get("/cds-services").get_json()
    assert is_valid(doc, "discovery")
    for s in doc["services"]:
        assert s["title"] and s["description"] and s["id"] and s["hook"]
    assert {(s["id"], s["hook"]) for s in doc["services"]} == {
        ("pacing-review", "patient-view"),
        ("sedating-medication-safety", "order-select"),
        ("sedating-medication-safety", "order-sign"),
    }


def _fixture_for(hook):
    if hook == "patient-view":
        return patient_view_request({"patient": patient()})
    return order_request(hook)


def test_B5_every_advertised_id_answers_its_hook(client):
    for s in client.get("/cds-services").get_json()["services"]:
        assert re.fullmatch(r"[^/?#\s]+", s["id"])
        resp = client.post(f"/cds-services/{s['id']}", json=_fixture_for(s["hook"]))
        assert resp.status_code == 200, (s, resp.get_json())


def test_B6_one_id_two_hooks_routes_on_hook(client, ruleset):
    for hook in ("order-select", "order-sign"):
        resp = client.post("/cds-services/sedating-medication-safety", json=_fixture_for(hook))
        assert resp.status_code == 200
        assert ruleset.calls[-1].hook == hook
    # a hook the id does not serve -> 400 naming what it serves
    resp = client.post("/cds-services/sedating-medication-safety", json=_fixture_for("patient-view"))
    assert resp.status_code == 400
    assert "order-select" in resp.get_json()["issue"][0]["diagnostics"]


def test_B7_B8_B9_prefetch_templates_lint(client):
    token_ok = re.compile(r"^(context\.(userId|patientId|encounterId)|userPractitionerId|userPractitionerRoleId|"
                          r"userPatientId|userRelatedPersonId)$")
    for s in client.get("/cds-services").get_json()["services"]:
        assert s["prefetch"], s["id"]
        for key, template in s["prefetch"].items():
            assert isinstance(template, str) and template
            for token in re.findall(r"\{\{(.*?)\}\}", template):
                assert token_ok.match(token.strip()), (key, token)
            assert "draftOrders" not in template and "selections" not in template  # not prefetch tokens


SUBSET_PARAMS = {"patient", "code", "date", "status", "clinical-status", "lifecycle-status", "_count", "_sort"}


def test_B10_templates_use_the_query_subset(client):
    for s in client.get("/cds-services").get_json()["services"]:
        for template in s["prefetch"].values():
            u = urlsplit(template)
            assert re.fullmatch(r"[A-Z][A-Za-z]+(/\{\{context\.patientId\}\})?", u.path), template
            for name, value in parse_qsl(u.query):
                assert name in SUBSET_PARAMS, (template, name)
                if name == "date":
                    assert re.fullmatch(r"(eq|lt|gt|ge|le)\d{4}-\d{2}-\d{2}", value), template
                assert ":" not in name  # no modifiers such as sort:desc


def test_B7_templates_ask_only_for_what_the_rules_read():
    reqs = [{"resourceType": "Observation", "codes": ["http://loinc.org|718-7", "http://loinc.org|3016-3"]},
            {"resourceType": "Observation", "codes": ["http://loinc.org|41950-7"]},
            {"resourceType": "Condition", "codes": []},
            {"resourceType": "MedicationRequest", "codes": ["http://www.nlm.nih.gov/research/umls/rxnorm|1"]}]
    specs = {s.key: s for s in build_prefetch(reqs, lookback_days=30, today=dt.date(2026, 11, 26))}
    assert specs["patient"].template == "Patient/{{context.patientId}}" and specs["patient"].required
    obs = specs["observations"].template
    assert obs.startswith("Observation?patient={{context.patientId}}&code=")
    assert set(dict(parse_qsl(urlsplit(obs).query))["code"].split(",")) == {
        "http://loinc.org|718-7", "http://loinc.org|3016-3", "http://loinc.org|41950-7"}
    assert obs.endswith("&date=ge2026-10-27")
    assert specs["conditions"].template == \
        "Condition?patient={{context.patientId}}&clinical-status=active,recurrence,relapse"
    assert "status=active" in specs["medications"].template
    assert not any(s.required for k, s in specs.items() if k != "patient")
    # A value set too large for a URL drops the code filter rather than producing an unusable URL.
    big = [{"resourceType": "Condition", "codes": [f"http://snomed.info/sct|{i:09d}" for i in range(500)]}]
    assert "code=" not in {s.key: s for s in build_prefetch(big, 30)}["conditions"].template


def test_B5_discovery_is_get_only(client):
    assert client.post("/cds-services", json={}).status_code == 405
