"""C9: a chart remembered as validated never lets an invalid draft order skip validation.

ResourceValidator remembers a validated chart by digest; the draft orders of context.draftOrders must be
part of what it remembers. Real example patient, real Flask test client, real order hooks.
"""
from __future__ import annotations

import copy
import uuid

import pytest

from tests.conftest import load_example
from tests.service.conftest import draft_medication_request

ORDERS = "/cds-services/sedating-medication-safety"
CHART = "meds-opioid-benzo"       # an opioid and a benzodiazepine on the medication list
PATIENT = "pt-ob"

# (how the draft order is broken, the field the 400 names)
BROKEN = [({"status": 42}, "status"),                  # wrong-typed
          ({"status": " draft"}, "status"),            # not a FHIR code
          ({"dosageInstruction": "5 mg"}, "dosageInstruction")]


def order_request(hook: str, drafts: list[dict]) -> dict:
    ctx = {"userId": "PractitionerRole/123", "patientId": PATIENT,
           "draftOrders": {"resourceType": "Bundle", "type": "collection",
                           "entry": [{"resource": d} for d in drafts]}}
    if hook == "order-select":
        ctx["selections"] = [f"MedicationRequest/{d['id']}" for d in drafts]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": ctx,
            "prefetch": {"chart": copy.deepcopy(load_example(CHART))}}


def draft(mid: str, **change) -> dict:
    d = draft_medication_request(mid, pid=PATIENT)
    d.update(change)
    return d


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
@pytest.mark.parametrize("change,field", BROKEN, ids=["status-int", "status-code", "dosage-string"])
def test_C9_cached_chart_never_skips_validating_a_draft_order(client, hook, change, field):
    ok = client.post(ORDERS, json=order_request(hook, [draft("draft-ok")]))
    assert ok.status_code == 200, ok.get_json()
    assert ok.get_json()["cards"]   # the chart was read (and so validated and remembered)

    resp = client.post(ORDERS, json=order_request(hook, [draft("draft-bad", **change)]))
    assert resp.status_code == 400, resp.get_json()
    text = resp.get_json()["issue"][0]["diagnostics"]
    assert "context.draftOrders.entry[0] (MedicationRequest/draft-bad)" in text and f"'{field}'" in text

    # the invalid order next to the valid one that was validated with this chart before
    resp = client.post(ORDERS, json=order_request(hook, [draft("draft-ok"), draft("draft-bad", **change)]))
    assert resp.status_code == 400
    assert "context.draftOrders.entry[1] (MedicationRequest/draft-bad)" in resp.get_json()["issue"][0]["diagnostics"]

    # and the refusals did not spoil the remembered chart
    assert client.post(ORDERS, json=order_request(hook, [draft("draft-ok")])).status_code == 200


@pytest.mark.parametrize("change,field", BROKEN, ids=["status-int", "status-code", "dosage-string"])
def test_C9_ruleset_evaluate_never_skips_validating_a_draft_order(change, field):
    from engine import load_ruleset
    from fhir_adapter.resources import InputError
    from tests.conftest import NOW, RULES

    ruleset = load_ruleset(RULES)   # its own validator cache: nothing remembered from other tests
    result = ruleset.evaluate(order_request("order-sign", [draft("draft-ok")]), now=NOW)
    assert result.cards
    with pytest.raises(InputError) as exc:
        ruleset.evaluate(order_request("order-sign", [draft("draft-bad", **change)]), now=NOW)
    assert "context.draftOrders.entry[0] (MedicationRequest/draft-bad)" in str(exc.value)
    assert f"invalid field '{field}" in str(exc.value)
    assert ruleset.evaluate(order_request("order-sign", [draft("draft-ok")]), now=NOW).cards
