"""Checklist sections E (response body), F (feedback) and G (status codes)."""
from __future__ import annotations

import copy
import json
import re

import pytest

from service.validation import is_valid
from tests.service.conftest import (
    PATIENT_ID,
    PUBLIC_URL,
    bearer,
    fixture,
    full_prefetch,
    hb_observation,
    mint,
    order_request,
    patient,
    patient_view_request,
    walk,
)

PV = "/cds-services/pacing-review"
FB = "/cds-services/pacing-review/feedback"


def cards_for(client, observations):
    resp = client.post(PV, json=patient_view_request(full_prefetch(observations=observations)))
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


# --------------------------------------------------------------------------- E: response body

def test_E1_E2_response_schema_and_empty_guidance(client):
    body = cards_for(client, [hb_observation("hb", 13.4)])
    assert body == {"cards": []}
    assert is_valid(body, "response")
    assert fixture("spec-response-empty-cards.json") == body


def test_E1_E4_E5_E6_E8_E9_E15_E19_cards_from_the_bundled_rules_are_conformant(client):
    body = cards_for(client, [hb_observation("hb", 7.4)])   # severe: the critical variant
    assert is_valid(body, "response"), list(__import__("service.validation").validation.validator(
        "response").iter_errors(body))
    [card] = body["cards"]
    assert 1 <= len(card["summary"]) <= 139 and "\n" not in card["summary"]
    assert card["indicator"] == "critical"
    assert card["source"]["label"]
    assert re.match(r"^https://[^/\s]+", card["source"]["url"])
    assert card["detail"].strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", card["uuid"])
    assert all(r["display"] and r["code"] and r["system"] for r in card["overrideReasons"])
    assert all("." in k for k in card["extension"])
    assert card["extension"]["pacecds.rule"]["id"] == "anemia.low-hemoglobin"
    assert len(card["extension"]["pacecds.ruleset"]["sha256"]) == 64


def test_E9_card_uuids_unique_per_response_and_across_responses(client):
    seen = set()
    for _ in range(3):
        for card in cards_for(client, [hb_observation("hb", 10.0)])["cards"]:
            assert card["uuid"] not in seen
            seen.add(card["uuid"])
    assert len(seen) == 3


def test_E3_E5_published_defective_examples_fail_our_schema():
    assert is_valid(fixture("spec-card-response.json"), "response")
    assert not is_valid(fixture("spec-card-response-autolaunchable.json"), "response")  # no indicator
    assert not is_valid(fixture("spec-response-systemActions.json"), "response")        # action w/o description


@pytest.mark.parametrize("mutate", [
    lambda c: c.update(summary="x" * 140),                                   # E4
    lambda c: c.update(indicator="hard-stop"),                               # E5
    lambda c: c.update(source={}),                                           # E6
    lambda c: c.update(detail=""),                                           # E8
    lambda c: c.update(suggestions=[{"label": "Do it"}]),                    # E10 no selectionBehavior
    lambda c: c.update(overrideReasons=[{"code": "a", "system": "s"}]),      # E15 no display
    lambda c: c.update(overrideReasons=[{"display": "d", "system": "s"}]),   # E18 no code
    lambda c: c.update(source={"label": "l", "topic": {"code": "x"}}),       # E18 topic without system
    lambda c: c.update(links=[{"label": "l", "url": "https://x.org", "type": "absolute", "appContext": "a"}]),  # E16
    lambda c: c.update(extension={"nodot": 1}),                              # E19
    lambda c: c.update(links=[]),                                            # A4
    lambda c: c.update(uuid=None),                                           # A3
])
def test_E4_E5_E6_E8_E10_E15_E16_E18_E19_schema_catches_each_card_defect(mutate):
    card = {"uuid": "4e0a3a1e-3283-4575-ab82-028d55fe2719", "summary": "ok", "indicator": "info",
            "source": {"label": "pacecds"}}
    assert is_valid({"cards": [card]}, "response")
    bad = copy.deepcopy(card)
    mutate(bad)
    assert not is_valid({"cards": [bad]}, "response")


def test_E3_E13_action_shapes():
    def ok(action):
        card = {"summary": "s", "indicator": "info", "source": {"label": "l"}, "selectionBehavior": "any",
                "suggestions": [{"label": "x", "actions": [action]}]}
        return is_valid({"cards": [card]}, "response")
    assert ok(fixture("spec-action-create.json"))
    assert ok(fixture("spec-action-update.json"))
    assert ok(fixture("spec-action-delete.json"))
    assert not ok({"type": "create", "description": "d"})                          # create without resource
    assert not ok({"type": "delete", "description": "d", "resourceId": "nope"})    # not Type/id
    # systemActions: same Action shape, non-empty when present
    base = {"cards": []}
    assert is_valid({**base, "systemActions": [fixture("spec-action-update.json")]}, "response")
    assert not is_valid({**base, "systemActions": []}, "response")
    assert not is_valid({**base, "systemActions": [{"type": "update", "resource": {"resourceType": "X"}}]},
                        "response")


def test_E20_each_response_stands_alone_for_one_id_two_hooks(client):
    a = client.post("/cds-services/sedating-medication-safety", json=order_request("order-select"))
    b = client.post("/cds-services/sedating-medication-safety", json=order_request("order-sign"))
    assert a.status_code == b.status_code == 200
    assert is_valid(a.get_json(), "response") and is_valid(b.get_json(), "response")


def test_E19_D8_missing_data_named_in_a_namespaced_extension(client):
    body = client.post(PV, json=patient_view_request({"patient": patient()})).get_json()
    assert body["cards"] == []
    assert is_valid(body, "response")
    advertised = next(s for s in client.get("/cds-services").get_json()["services"] if s["id"] == "pacing-review")
    optional = sorted(k for k in advertised["prefetch"] if k != "patient")
    assert "observations" in optional and "conditions" in optional
    assert sorted(body["extension"]["org.pacecds.missing-data"]) == [
        f"{k} (no fhirServer in the request)" for k in optional]


# --------------------------------------------------------------------------- F: feedback

def evaluated_card(client):
    [card] = cards_for(client, [hb_observation("hb", 10.0)])["cards"]
    return card


def test_F1_F4_spec_feedback_examples_accepted(client):
    for name in ("spec-feedback-accepted.json", "spec-feedback-overridden-no-reason.json",
                 "spec-feedback-overridden-with-reason.json"):
        resp = client.post(FB, json=fixture(name))
        assert resp.status_code == 200, (name, resp.get_json())
        assert resp.get_json() == {"recorded": 1, "duplicates": 0}


def test_F2_batched_and_duplicate_feedback_is_idempotent(client, audit):
    card = evaluated_card(client)
    items = [{"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:05:31Z",
              "overrideReason": {"reason": card["overrideReasons"][0], "userComment": "on iron already"}},
             {"card": "f6b95768-b1c8-40dc-8385-bf3504b82ffb", "outcome": "overridden",
              "outcomeTimestamp": "2026-11-26T10:06:00Z"}]
    before = audit.count()
    assert client.post(FB, json={"feedback": items}).get_json() == {"recorded": 2, "duplicates": 0}
    assert client.post(FB, json={"feedback": items}).get_json() == {"recorded": 0, "duplicates": 2}
    assert client.post(FB, json={"feedback": items[:1]}).status_code == 200
    assert audit.count() == before + 2
    stats = audit.stats()
    assert "anemia.low-hemoglobin" in json.dumps(stats)


def test_F3_feedback_linked_to_the_card_and_its_rule(client, audit):
    card = evaluated_card(client)
    fb = {"feedback": [{"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-26T10:05:31Z",
                        "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}]}]}
    assert client.post(FB, json=fb).status_code == 200
    assert audit.verify().ok


@pytest.mark.parametrize("item", [
    {"outcome": "accepted", "outcomeTimestamp": "2026-11-26T10:05:31Z", "acceptedSuggestions": [{"id": "a"}]},
    {"card": "c1", "outcome": "ignored", "outcomeTimestamp": "2026-11-26T10:05:31Z"},
    {"card": "c1", "outcome": "accepted", "outcomeTimestamp": "2026-11-26T10:05:31Z"},
    {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "yesterday"},
    {"card": "c1", "outcome": "overridden"},
    {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:05:31Z",
     "acceptedSuggestions": [{"id": "a"}]},
    {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:05:31Z",
     "overrideReason": {"reason": {"code": "x"}}},
])
def test_F3_invalid_feedback_is_400(client, audit, item):
    before = audit.count()
    resp = client.post(FB, json={"feedback": [item]})
    assert resp.status_code == 400
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    assert audit.count() == before
    assert client.post(FB, json={"feedback": []}).status_code == 400
    assert client.post(FB, json={"notfeedback": 1}).status_code == 400


def test_F1_feedback_for_unknown_service_404_and_get_405(client):
    assert client.post("/cds-services/nope/feedback", json=fixture("spec-feedback-accepted.json")).status_code == 404
    assert client.get(FB).status_code == 405


def test_F5_feedback_aud_is_the_feedback_url(auth_client):
    fb = fixture("spec-feedback-accepted.json")
    assert auth_client.post(FB, json=fb, headers=bearer(mint(f"{PUBLIC_URL}{FB}"))).status_code == 200
    for aud in (f"{PUBLIC_URL}{PV}", f"{PUBLIC_URL}/cds-services"):   # the service's own URL is another endpoint
        assert auth_client.post(FB, json=fb, headers=bearer(mint(aud))).status_code == 401


def test_F6_feedback_on_an_unknown_card_is_accepted_and_stored_unlinked(client, audit):
    fb = {"feedback": [{"card": "never-issued", "outcome": "overridden",
                        "outcomeTimestamp": "2026-11-26T10:05:31Z"}]}
    assert client.post(FB, json=fb).get_json() == {"recorded": 1, "duplicates": 0}
    assert audit.verify().ok


def test_F_feedback_refused_when_no_store(make_app):
    app = make_app(audit_store=None, audit=False)
    resp = app.test_client().post(FB, json=fixture("spec-feedback-accepted.json"))
    assert resp.status_code == 503
    assert resp.get_json()["resourceType"] == "OperationOutcome"


# --------------------------------------------------------------------------- G: status codes and errors

@pytest.mark.parametrize("body,ctype", [
    (b"{", "application/json"), (b"[]", "application/json"), (b"", "application/json"),
    (b'{"a": NaN}', "application/json"), (b"\xff\xfe", "application/json"), (b"[" * 5000 + b"]" * 5000, None),
    (b"null", "application/json"), (b'"string"', "application/json"),
])
def test_G_malformed_bodies_are_400_never_500(client, body, ctype):
    for path in (PV, FB):
        resp = client.post(path, data=body, content_type=ctype or "application/json")
        assert resp.status_code == 400, (path, body[:20], resp.status_code)
        assert resp.get_json()["resourceType"] == "OperationOutcome"
        assert "Traceback" not in resp.get_data(as_text=True)


def test_G_415_for_non_json_content_type_and_json_variants_accepted(client):
    body = json.dumps(patient_view_request(full_prefetch()))
    assert client.post(PV, data=body, content_type="text/plain").status_code == 415
    for ctype in ("application/json; charset=utf-8", "application/fhir+json", "application/cds-hooks+json"):
        assert client.post(PV, data=body, content_type=ctype).status_code == 200, ctype


def test_G_413_body_too_large_is_configurable(make_app):
    c = make_app(max_body_bytes=2048).test_client()
    big = patient_view_request(full_prefetch(observations=[hb_observation(f"o{i}", 13.0) for i in range(30)]))
    resp = c.post(PV, json=big)
    assert resp.status_code == 413
    issue = resp.get_json()["issue"][0]
    assert issue["code"] == "too-long" and "2048" in issue["diagnostics"]
    assert c.post(FB, data=b"x" * 4096, content_type="application/json").status_code == 413


def test_G_unexpected_failure_is_an_opaque_500_operation_outcome(make_app, caplog):
    class Broken:
        name, version, sha256 = "broken", "0", "0" * 64

        def data_requirements(self, hook):
            return []

        def evaluate(self, *a, **k):
            raise RuntimeError("secret internal detail tok-CANARY")

    c = make_app(ruleset=Broken()).test_client()
    resp = c.post(PV, json=patient_view_request({"patient": patient()}))
    assert resp.status_code == 500
    text = resp.get_data(as_text=True)
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    assert "secret" not in text and "Traceback" not in text
    assert "tok-CANARY" not in caplog.text  # exception text stays out of the error log
    assert "unexpected error: RuntimeError at" in caplog.text  # but operators learn what and where


def test_G_404_unknown_paths_are_operation_outcomes(client):
    for path in ("/", "/cds-services/a/b/c", "/nope"):
        resp = client.get(path)
        assert resp.status_code == 404 and resp.get_json()["resourceType"] == "OperationOutcome"


def test_G_healthz_names_the_serving_ruleset(client, bundled_ruleset):
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["ruleset"]["sha256"] == bundled_ruleset.sha256


def test_design_patient_isolation_under_concurrency(make_app):
    """16 threads, each its own patient with its own hemoglobin: no card ever shows another patient's value."""
    import threading

    from tests.service.conftest import searchset

    app = make_app()
    errors = []

    def worker(i):
        c = app.test_client()
        pid, value = f"iso-{i}", round(8.1 + i * 0.2, 1)
        pf = {"patient": patient(pid), "observations": searchset([hb_observation(f"hb-{i}", value, pid=pid)]),
              "conditions": searchset([]), "goals": searchset([])}
        for _ in range(8):
            req = patient_view_request(pf)
            req["context"]["patientId"] = pid
            body = c.post(PV, json=req).get_json()
            summaries = [card["summary"] for card in body.get("cards", [])]
            if not any(f"{value:.1f} g/dL" in s for s in summaries) or \
                    any(f"{round(8.1 + j * 0.2, 1):.1f} g/dL" in s for s in summaries for j in range(16) if j != i):
                errors.append((i, summaries))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_rules_source_attributes_served_read_only(auth_client, bundled_ruleset):
    """HTI-1 source attributes (issue 5) at /rules and /rules/{id}: no PHI, so no JWT needed."""
    body = auth_client.get("/rules").get_json()
    assert body["ruleset"]["sha256"] == bundled_ruleset.sha256
    ids = [r["id"] for r in body["rules"]]
    assert "anemia.low-hemoglobin" in ids and ids == sorted(ids)
    for path, value in walk(body):
        assert value is not None and value not in ("", [], {}), path
    one = auth_client.get("/rules/anemia.low-hemoglobin").get_json()
    assert one["version"] == bundled_ruleset.rule("anemia.low-hemoglobin").version
    assert one["bibliography"][0]["url"].startswith("https://")
    assert auth_client.get("/rules/no.such.rule").status_code == 404
    assert auth_client.post("/rules").status_code == 405


def test_F2_feedback_item_with_an_extra_member_named_feedback_is_stored(client, audit):
    """Found by schemathesis: an item may carry extra members; one named "feedback" made the store read the
    item as a whole body and answer 500."""
    item = {"card": "f6b95768-b1c8-40dc-8385-bf3504b82ffc", "outcome": "overridden",
            "outcomeTimestamp": "2026-11-26T10:05:31Z", "feedback": [1]}
    before = audit.count()
    resp = client.post(FB, json={"feedback": [item]})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"recorded": 1, "duplicates": 0}
    assert audit.count() == before + 1


# --------------------------------------------------------------------------- alert burden: override suppression

def test_an_overridden_card_is_not_shown_again_on_the_same_data_and_the_audit_keeps_it(client, audit):
    """Issue 11 (alert burden): the clinician overrode the card; the same chart opened again gives no card,
    the audit record keeps the decision as suppressed; new data behind the rule brings the card back."""
    hb = [hb_observation("hb", 10.0)]
    card = cards_for(client, hb)["cards"][0]
    fb = {"feedback": [{"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-26T10:05:31Z",
                        "overrideReason": {"reason": card["overrideReasons"][0]}}]}
    assert client.post(FB, json=fb).status_code == 200

    again = cards_for(client, hb)
    assert [c for c in again.get("cards", []) if c["extension"]["pacecds.rule"]["id"] == card["extension"]["pacecds.rule"]["id"]] == []
    [latest] = audit.find(patient_id=PATIENT_ID, limit=1)
    rec = audit.get(latest["hookInstance"])
    assert [s["rule"]["id"] for s in rec["suppressed"]] == ["anemia.low-hemoglobin"]
    assert "overridden by the clinician" in rec["suppressed"][0]["reason"]
    assert [f["id"] for f in rec["rulesFired"]] == ["anemia.low-hemoglobin"]  # the decision itself is kept

    changed = cards_for(client, hb + [hb_observation("hb-new", 9.8)])  # a new result: the data changed
    assert [c["extension"]["pacecds.rule"]["id"] for c in changed["cards"]] == ["anemia.low-hemoglobin"]


def test_override_suppression_can_be_turned_off(make_app, audit):
    client = make_app(override_suppress_days=0).test_client()
    hb = [hb_observation("hb", 10.0)]
    card = cards_for(client, hb)["cards"][0]
    client.post(FB, json={"feedback": [{"card": card["uuid"], "outcome": "overridden",
                                        "outcomeTimestamp": "2026-11-26T10:05:31Z"}]})
    assert len(cards_for(client, hb)["cards"]) == 1


def test_override_suppression_days_from_the_environment():
    from service.config import ConfigError, ServiceConfig

    assert ServiceConfig.from_env({}).override_suppress_days == 7
    assert ServiceConfig.from_env({"PACECDS_OVERRIDE_SUPPRESS_DAYS": "0"}).override_suppress_days == 0
    with pytest.raises(ConfigError):
        ServiceConfig.from_env({"PACECDS_OVERRIDE_SUPPRESS_DAYS": "-3"})
