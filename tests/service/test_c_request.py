"""Checklist section C: request handling of POST /cds-services/{id}."""
from __future__ import annotations

import pytest

from tests.service.conftest import fixture, full_prefetch, order_request, patient, patient_view_request

PV = "/cds-services/pacing-review"
ORDERS = "/cds-services/sedating-medication-safety"


def issue(resp):
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]


def test_C1_post_fixture_ok_other_methods_405_unknown_404(client):
    assert client.post(PV, json=patient_view_request(full_prefetch())).status_code == 200
    for method in ("get", "put", "delete", "patch"):
        resp = getattr(client, method)(PV)
        assert resp.status_code == 405, method
        assert issue(resp)["code"] == "not-supported"
        assert "POST" in resp.headers["Allow"]
    resp = client.post("/cds-services/no-such-service", json=patient_view_request(full_prefetch()))
    assert resp.status_code == 404 and issue(resp)["code"] == "not-found"


def test_C1_spec_patient_view_example_is_accepted(client):
    # The spec's own request: fhirServer is http and its token cannot reach anything here, but its
    # prefetch (under the EHR's own key name) holds the patient, so the required data is there.
    resp = client.post(PV, json=fixture("spec-patient-view-request-with-prefetch.json"))
    assert resp.status_code == 200, resp.get_json()


@pytest.mark.parametrize("member", ["hook", "hookInstance", "context"])
def test_C2_each_required_member_missing_is_400(client, member):
    req = patient_view_request(full_prefetch())
    del req[member]
    resp = client.post(PV, json=req)
    assert resp.status_code == 400
    assert issue(resp)["expression"] == [member]
    assert member in issue(resp)["diagnostics"]


@pytest.mark.parametrize("member,value", [("hook", 7), ("hookInstance", "not-a-uuid"), ("context", []),
                                          ("prefetch", []), ("fhirServer", "ftp://x"), ("prefetch", {"p": "123"})])
def test_C2_ill_typed_members_are_400(client, member, value):
    req = patient_view_request(full_prefetch())
    req[member] = value
    resp = client.post(PV, json=req)
    assert resp.status_code == 400, resp.get_json()
    assert issue(resp)["expression"][0].startswith(member)


def test_C3_hook_mismatch_400(client):
    req = patient_view_request(full_prefetch(), hook="order-sign")
    resp = client.post(PV, json=req)
    assert resp.status_code == 400
    assert issue(resp)["expression"] == ["hook"]
    req["hook"] = "encounter-start"
    assert client.post(PV, json=req).status_code == 400


def test_C4_repeated_hook_instance_gets_the_same_answer(client):
    from tests.service.conftest import hb_observation
    req = patient_view_request(full_prefetch(observations=[hb_observation("hb1", 10.1)]))
    a = client.post(PV, json=req).get_json()
    b = client.post(PV, json=req).get_json()
    strip = lambda r: [{k: v for k, v in c.items() if k != "uuid"} for c in r["cards"]]  # noqa: E731
    assert strip(a) == strip(b) and len(a["cards"]) == 1


def test_C5_fhir_authorization_requires_fhir_server(client):
    req = patient_view_request(full_prefetch(), fhirAuthorization=fixture("spec-fhirAuthorization.json")["fhirAuthorization"])
    resp = client.post(PV, json=req)
    assert resp.status_code == 400
    assert "fhirServer" in issue(resp)["diagnostics"]


@pytest.mark.parametrize("change", [{"token_type": "MAC"}, {"access_token": None}, {"expires_in": "300"},
                                    {"scope": ""}, {"subject": None}])
def test_C6_fhir_authorization_shape(client, change):
    auth = fixture("spec-fhirAuthorization.json")["fhirAuthorization"]
    auth["access_token"] = "tok-CANARY-C6"
    for k, v in change.items():
        if v is None:
            del auth[k]
        else:
            auth[k] = v
    req = patient_view_request(full_prefetch(), fhirServer="https://ehr.example.org/fhir", fhirAuthorization=auth)
    resp = client.post(PV, json=req)
    assert resp.status_code == 400
    assert issue(resp)["expression"][0].startswith("fhirAuthorization")
    assert "tok-CANARY-C6" not in resp.get_data(as_text=True)  # errors never echo the token


def test_C6_smart_v1_and_v2_scopes_accepted(client):
    for scope in ("user/Patient.read user/Observation.read", "user/Patient.rs user/Observation.rs"):
        auth = dict(fixture("spec-fhirAuthorization.json")["fhirAuthorization"], scope=scope)
        req = patient_view_request(full_prefetch(), fhirServer="https://ehr.example.org/fhir",
                                   fhirAuthorization=auth)
        assert client.post(PV, json=req).status_code == 200


@pytest.mark.parametrize("hook,field", [("patient-view", "userId"), ("patient-view", "patientId"),
                                        ("order-select", "userId"), ("order-select", "patientId"),
                                        ("order-select", "selections"), ("order-select", "draftOrders"),
                                        ("order-sign", "userId"), ("order-sign", "patientId"),
                                        ("order-sign", "draftOrders")])
def test_C7_required_context_fields(client, hook, field):
    req = patient_view_request(full_prefetch()) if hook == "patient-view" else order_request(hook)
    del req["context"][field]
    resp = client.post(PV if hook == "patient-view" else ORDERS, json=req)
    assert resp.status_code == 400
    assert issue(resp)["expression"] == [f"context.{field}"]


def test_C7_context_types(client):
    req = order_request("order-sign")
    req["context"]["draftOrders"] = [{"resourceType": "MedicationRequest"}]
    assert client.post(ORDERS, json=req).status_code == 400
    req = order_request("order-sign")
    req["context"]["draftOrders"] = {"resourceType": "MedicationRequest", "id": "x"}
    assert client.post(ORDERS, json=req).status_code == 400
    req = order_request("order-select")
    req["context"]["userId"] = "Patient/123"   # order hooks are for practitioners
    assert client.post(ORDERS, json=req).status_code == 400
    req = patient_view_request(full_prefetch())
    req["context"]["userId"] = "dr-1"          # must be Type/id
    assert client.post(PV, json=req).status_code == 400


def test_C7_selections_must_name_draft_orders(client):
    req = order_request("order-select")
    req["context"]["selections"] = ["MedicationRequest/not-in-the-bundle"]
    resp = client.post(ORDERS, json=req)
    assert resp.status_code == 400
    assert issue(resp)["expression"] == ["context.selections[0]"]


def test_C7_spec_extension_request_without_patient_id_is_400(client):
    resp = client.post(PV, json=fixture("spec-request-extension.json"))
    assert resp.status_code == 400
    assert issue(resp)["expression"] == ["context.patientId"]


def test_C8_extension_and_unknown_members_accepted(client):
    req = patient_view_request(full_prefetch())
    req["extension"] = {"com.example.timestamp": "2017-11-27T22:13:25Z"}
    req["somethingNew"] = {"x": 1}
    req["context"]["extraContext"] = "ok"
    assert client.post(PV, json=req).status_code == 200
    req["extension"] = {"notnamespaced": 1}
    assert client.post(PV, json=req).status_code == 400


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_C9_published_order_examples_are_not_valid_R4_and_get_400(client, hook):
    """The Library's "R4" order examples carry STU3 shapes (dosageInstruction.doseQuantity, no
    NutritionOrder.intent): the service says exactly which entry and field, instead of guessing."""
    req = fixture(f"composed-{hook}-request.json")
    req["prefetch"] = {"patient": patient(req["context"]["patientId"])}
    resp = client.post(ORDERS, json=req)
    assert resp.status_code == 400
    text = issue(resp)["diagnostics"]
    assert "context.draftOrders.entry[" in text and "invalid field" in text


def test_C9_dstu2_resource_type_is_400(client):
    req = order_request("order-sign")
    req["context"]["draftOrders"]["entry"].append({"resource": {
        "resourceType": "MedicationOrder", "id": "dstu2", "status": "draft",
        "patient": {"reference": "Patient/pace-1"}}})
    resp = client.post(ORDERS, json=req)
    assert resp.status_code == 400
    assert "MedicationOrder" in issue(resp)["diagnostics"]


def test_C7_draft_orders_about_another_patient_are_400(client):
    from tests.service.conftest import draft_medication_request
    req = order_request("order-sign")
    req["context"]["draftOrders"]["entry"].append({"resource": draft_medication_request("theirs", pid="other")})
    resp = client.post(ORDERS, json=req)
    assert resp.status_code == 400
    assert issue(resp)["expression"] == ["context.draftOrders.entry[1]"]


def test_C9_invalid_fhir_in_prefetch_is_400_naming_the_callers_key_and_entry(client):
    from tests.service.conftest import hb_observation, searchset
    bad = hb_observation("hb-bad", 10.0)
    bad["valueQuantity"]["value"] = "ten"
    pf = full_prefetch()
    pf["labResults"] = searchset([hb_observation("hb-ok", 13.0), bad])
    resp = client.post(PV, json=patient_view_request(pf))
    assert resp.status_code == 400
    text = issue(resp)["diagnostics"]
    assert "prefetch.labResults.entry[1]" in text and "Observation/hb-bad" in text and "valueQuantity" in text
