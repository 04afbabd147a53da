"""Issue 14, items 5, 6 and 7: odd but signed input is a 4xx, never a 500; token lifetime is measured from iat;
chunked bodies respect the body limit."""
from __future__ import annotations

import json
import time

import pytest

from tests.service.conftest import PUBLIC_URL, bearer, fixture, mint, patient_view_request

FB = "/cds-services/pacing-review/feedback"


def _feedback(comment: str) -> bytes:
    doc = fixture("spec-feedback-overridden-with-reason.json")
    doc["feedback"][0]["overrideReason"]["userComment"] = "PLACEHOLDER"
    # json.dumps escapes a lone surrogate and NUL as \ud800 and \u0000, as a client's JSON encoder would
    return json.dumps(doc).replace('"PLACEHOLDER"', json.dumps(comment)).encode()


@pytest.mark.parametrize("comment", ["\ud800", "x\ud800y", "\udfff", "a\x00b", "\x00"],
                         ids=["lone-high-surrogate", "embedded-surrogate", "lone-low-surrogate", "nul", "only-nul"])
def test_item5_feedback_with_a_lone_surrogate_or_nul_is_400_not_500(client, comment):
    resp = client.post(FB, data=_feedback(comment), content_type="application/json")
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["resourceType"] == "OperationOutcome"


def test_item5_a_surrogate_or_nul_anywhere_in_a_hook_request_is_400(client):
    req = patient_view_request({"patient": {"resourceType": "Patient", "id": "pace-1",
                                            "name": [{"text": "PLACEHOLDER"}]}})
    for bad in ("\ud800", "a\x00"):
        body = json.dumps(req).replace('"PLACEHOLDER"', json.dumps(bad)).encode()
        resp = client.post("/cds-services/pacing-review", data=body, content_type="application/json")
        assert resp.status_code == 400, resp.get_json()


@pytest.mark.parametrize("claims", [
    {"exp": str(int(time.time()) + 300)},                      # a string of digits
    {"iat": str(int(time.time()))},
    {"exp": float("1e300")},
    {"exp": True},
], ids=["exp-digit-string", "iat-digit-string", "exp-huge", "exp-bool"])
def test_item5_signed_token_with_odd_numeric_claims_is_401_not_500(auth_client, claims):
    aud = f"{PUBLIC_URL}/cds-services"
    resp = auth_client.get("/cds-services", headers=bearer(mint(aud, claims=claims)))
    assert resp.status_code == 401, resp.get_json()


def test_item6_token_lifetime_is_measured_from_iat(auth_client):
    aud = f"{PUBLIC_URL}/cds-services"
    now = int(time.time())
    old = mint(aud, claims={"iat": now - 10 * 86400, "exp": now + 300})
    assert auth_client.get("/cds-services", headers=bearer(old)).status_code == 401
    # exp - iat longer than the longest lifetime (3600 s by default), even though exp is close
    long_lived = mint(aud, claims={"iat": now - 3500, "exp": now + 300})
    assert auth_client.get("/cds-services", headers=bearer(long_lived)).status_code == 401
    fresh = mint(aud, claims={"iat": now - 30, "exp": now + 300})
    assert auth_client.get("/cds-services", headers=bearer(fresh)).status_code == 200


def _chunked(body: bytes, size: int = 4096):
    for i in range(0, len(body), size):
        yield body[i:i + size]


def test_item7_chunked_body_over_the_limit_is_413(make_app):
    app = make_app(max_body_bytes=2000)
    client = app.test_client()
    big = json.dumps(patient_view_request({"patient": {"resourceType": "Patient", "id": "pace-1",
                                                       "name": [{"text": "x" * 5000}]}})).encode()
    resp = client.post("/cds-services/pacing-review", input_stream=_stream(big),
                       headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})  # as gunicorn says of a chunked body
    assert resp.status_code == 413, resp.get_json()
    assert resp.get_json()["issue"][0]["code"] == "too-long"
    # and with Content-Length, as before
    resp = client.post("/cds-services/pacing-review", data=big, content_type="application/json")
    assert resp.status_code == 413


def _stream(data: bytes):
    import io
    return io.BytesIO(data)
