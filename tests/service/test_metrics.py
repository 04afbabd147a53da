"""GET /metrics (service/metrics.py): counters move for real requests, labels carry no patient data, access follows
the service's access model, and under gunicorn a scrape sums every worker."""
from __future__ import annotations

import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import (
    PUBLIC_URL,
    bearer,
    hb_observation,
    mint,
    patient_view_request,
    searchset,
    service_aud,
)
from tests.service.fhir_server import FhirTestServer

PID = "mx-7f3a9c2e"                       # patient id of the fixture: must never appear in /metrics
FAMILY, GIVEN = "Okonkwo-Lindqvist", "Marisol"
METRICS_TOKEN = "m" * 40


def metric_patient(pid: str = PID) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1970-03-01",
            "name": [{"family": FAMILY, "given": [GIVEN]}]}


def anaemic_request(pid: str = PID) -> dict:
    """patient-view for a named patient with a low hemoglobin (the anaemia rule fires)."""
    req = patient_view_request({"patient": metric_patient(pid),
                                "observations": searchset([hb_observation(f"hb-{pid}", 8.9, pid=pid)])})
    req["context"]["patientId"] = pid
    return req


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted label pairs) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(snapshot: dict, name: str, **labels) -> float:
    return snapshot.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client, headers=None) -> tuple[str, dict]:
    r = client.get("/metrics", headers=headers or {})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.mimetype == "text/plain"
    text = r.get_data(as_text=True)
    return text, samples(text)


def test_a_patient_view_moves_the_counters_and_no_label_names_the_patient(client):
    _, before = scrape(client)
    r = client.post("/cds-services/pacing-review", json=anaemic_request())
    assert r.status_code == 200
    rules = [c["extension"]["pacecds.rule"]["id"] for c in r.get_json()["cards"]]
    assert "anemia.low-hemoglobin" in rules
    text, after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    hook = dict(service="pacing-review", hook="patient-view")
    assert moved("pacecds_hook_request_seconds_count", **hook) == 1
    assert moved("pacecds_hook_request_seconds_sum", **hook) > 0
    assert moved("pacecds_hook_request_seconds_bucket", le="+Inf", **hook) == 1
    [card] = [c for c in r.get_json()["cards"] if c["extension"]["pacecds.rule"]["id"] == "anemia.low-hemoglobin"]
    assert moved("pacecds_cards_total", rule="anemia.low-hemoglobin", indicator=card["indicator"]) == 1
    assert sum(moved("pacecds_cards_total", rule=rid, indicator=c["indicator"])
               for rid, c in zip(rules, r.get_json()["cards"])) == len(rules)
    assert moved("pacecds_audit_append_seconds_count", kind="decision") == 1
    assert moved("pacecds_http_requests_total", route="/cds-services/<service_id>", status="200") == 1
    # the serving ruleset is named once, with value 1
    info = [k for k, v in after.items() if k[0] == "pacecds_ruleset_info" and v == 1]
    assert len(info) == 1 and dict(info[0][1])["sha256"] == client.get("/healthz").get_json()["ruleset"]["sha256"]

    # Nothing of the patient anywhere in the exposition: not the id, not the name, not the hookInstance.
    for secret in (PID, FAMILY, GIVEN, "8.9", anaemic_request()["hookInstance"][:8]):
        assert secret not in text


def test_unknown_services_and_bad_requests_add_no_label_values(client):
    _, before = scrape(client)
    assert client.post(f"/cds-services/{PID}", json=anaemic_request()).status_code == 404
    assert client.post("/cds-services/pacing-review", json={"hook": PID}).status_code == 400
    text, after = scrape(client)
    assert PID not in text
    assert value(after, "pacecds_http_requests_total", route="/cds-services/<service_id>", status="404") - \
        value(before, "pacecds_http_requests_total", route="/cds-services/<service_id>", status="404") == 1
    hook_series = {k for k in after if k[0] == "pacecds_hook_request_seconds_count"}
    assert all(dict(k[1])["service"] in ("pacing-review", "sedating-medication-safety") for k in hook_series)


def test_rejected_tokens_are_counted_by_reason(auth_client):
    c = auth_client
    url = "/cds-services/pacing-review"
    before = _inproc_snapshot()
    assert c.post(url, json=anaemic_request()).status_code == 401                       # no token
    expired = mint(service_aud("pacing-review"), claims={"exp": int(time.time()) - 3600,
                                                         "iat": int(time.time()) - 3700})
    assert c.post(url, json=anaemic_request(), headers=bearer(expired)).status_code == 401
    token = mint(service_aud("pacing-review"))
    assert c.post(url, json=anaemic_request(), headers=bearer(token)).status_code == 200
    assert c.post(url, json=anaemic_request(), headers=bearer(token)).status_code == 401  # replayed
    wrong_aud = mint(f"{PUBLIC_URL}/cds-services/other")
    assert c.post(url, json=anaemic_request(), headers=bearer(wrong_aud)).status_code == 401
    after = _inproc_snapshot()
    for reason in ("missing", "expired", "replayed", "audience"):
        assert value(after, "pacecds_rejected_tokens_total", reason=reason) - \
            value(before, "pacecds_rejected_tokens_total", reason=reason) == 1, reason


def _inproc_snapshot() -> dict:
    from service.metrics import metrics
    body, _ = metrics().exposition()
    return samples(body.decode())


def test_metrics_access_follows_the_service_access_model(make_app, issuers):
    # With trusted issuers and no metrics token: disabled (behind the proxy every caller looks local).
    with_issuers = make_app(public_url=PUBLIC_URL, trusted_issuers=issuers).test_client()
    r = with_issuers.get("/metrics")
    assert r.status_code == 403 and "PACECDS_METRICS_TOKEN" in r.get_json()["issue"][0]["diagnostics"]
    # With a metrics token: that bearer token and nothing else (not a CDS Hooks JWT either).
    guarded = make_app(public_url=PUBLIC_URL, trusted_issuers=issuers, metrics_token=METRICS_TOKEN).test_client()
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers=bearer("x" * 40)).status_code == 401
    assert guarded.get("/metrics", headers=bearer(mint(service_aud("pacing-review")))).status_code == 401
    scrape(guarded, bearer(METRICS_TOKEN))
    # Local mode: loopback callers only, like every other endpoint.
    local = make_app().test_client()
    scrape(local)
    assert local.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 403


def test_a_short_metrics_token_is_refused():
    from service.config import ConfigError, ServiceConfig
    with pytest.raises(ConfigError, match="PACECDS_METRICS_TOKEN must be at least"):
        ServiceConfig.from_env({"PACECDS_METRICS_TOKEN": "secret"})


def test_fhir_fallback_fetches_and_their_failures(make_app):
    with FhirTestServer([metric_patient(), hb_observation("hb-f", 8.9, pid=PID)]) as fhir:
        fhir.fail["Condition"] = 500
        client = make_app(fhir_budget_s=3.0).test_client()
        before = _inproc_snapshot()
        req = patient_view_request(fhirServer=fhir.base_url,
                                   fhirAuthorization={"access_token": "tok-" + uuid.uuid4().hex, "token_type": "Bearer",
                                                      "expires_in": 300, "scope": "patient/*.read",
                                                      "subject": "cds-service"})
        req["context"]["patientId"] = PID
        r = client.post("/cds-services/pacing-review", json=req)
        assert r.status_code == 200, r.get_json()
        after = _inproc_snapshot()
    ok = value(after, "pacecds_fhir_fetches_total", result="ok") - value(before, "pacecds_fhir_fetches_total", result="ok")
    failed = value(after, "pacecds_fhir_fetches_total", result="failed") - \
        value(before, "pacecds_fhir_fetches_total", result="failed")
    assert ok >= 2 and failed == 1
    assert value(after, "pacecds_fhir_fetch_failures_total", reason="http_status") - \
        value(before, "pacecds_fhir_fetch_failures_total", reason="http_status") == 1


def test_feedback_is_counted(client):
    r = client.post("/cds-services/pacing-review", json=anaemic_request())
    card = r.get_json()["cards"][0]
    item = {"card": card["uuid"], "outcome": "overridden",
            "overrideReason": {"reason": {"code": "other", "system": "http://example.org/reasons"}},
            "outcomeTimestamp": "2026-11-30T10:00:00Z"}
    before = _inproc_snapshot()
    assert client.post("/cds-services/pacing-review/feedback", json={"feedback": [item]}).status_code == 200
    assert client.post("/cds-services/pacing-review/feedback", json={"feedback": [item]}).status_code == 200
    after = _inproc_snapshot()
    labels = dict(service="pacing-review", outcome="overridden")
    assert value(after, "pacecds_feedback_items_total", result="recorded", **labels) - \
        value(before, "pacecds_feedback_items_total", result="recorded", **labels) == 1
    assert value(after, "pacecds_feedback_items_total", result="duplicate", **labels) - \
        value(before, "pacecds_feedback_items_total", result="duplicate", **labels) == 1
    assert value(after, "pacecds_audit_append_seconds_count", kind="feedback") - \
        value(before, "pacecds_audit_append_seconds_count", kind="feedback") == 2


def test_reloads_and_the_serving_version(tmp_path, audit):
    import shutil

    from server import create_app
    from service.config import ServiceConfig
    from tests.service.conftest import RULES_DIR
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    app = create_app(ServiceConfig(env="test", rules_dir=str(rules), audit_store=audit, dev=True))
    c = app.test_client()
    holder = app.extensions["pacecds"]._ruleset_source
    first = c.get("/healthz").get_json()["ruleset"]["sha256"]
    _, before = scrape(c)
    rule = rules / "anemia" / "low-hemoglobin.yaml"
    rule.write_text(rule.read_text().replace("title: Hemoglobin below", "title: Haemoglobin below"))
    assert holder.reload(force=True)
    (rules / "anemia" / "broken.yaml").write_text("id: [unclosed\n")
    assert not holder.reload(force=True)
    second = c.get("/healthz").get_json()["ruleset"]["sha256"]
    _, after = scrape(c)
    for result in ("ok", "refused"):
        assert value(after, "pacecds_ruleset_reloads_total", result=result) - \
            value(before, "pacecds_ruleset_reloads_total", result=result) == 1
    info = {dict(k[1])["sha256"]: v for k, v in after.items() if k[0] == "pacecds_ruleset_info"}
    assert info[second] == 1 and info[first] == 0
