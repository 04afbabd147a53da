"""Issue 14, item 9: in local mode (no trusted issuers) a web page cannot make the service work for it:
a foreign Origin, a foreign Host (DNS rebinding) and a POST that is not JSON (a CORS "simple request") are
refused, so a page cannot make a developer's service call an attacker's fhirServer."""
from __future__ import annotations

import json

import pytest

from tests.service.conftest import patient, patient_view_request

PV = "/cds-services/pacing-review"


def _body(fhir_server: str = "http://127.0.0.1:9/fhir") -> bytes:
    req = patient_view_request({"patient": patient()}, fhirServer=fhir_server,
                               fhirAuthorization={"access_token": "t", "token_type": "Bearer",
                                                  "expires_in": 300, "scope": "patient/*.read", "subject": "x"})
    return json.dumps(req).encode()


@pytest.mark.parametrize("origin", ["https://evil.example", "http://evil.example:8080", "null",
                                    "http://localhost:9999"])
def test_item9_foreign_origin_is_refused(client, origin):
    resp = client.post(PV, data=_body(), content_type="application/json", headers={"Origin": origin})
    assert resp.status_code == 403, resp.get_json()
    assert client.get("/cds-services", headers={"Origin": origin}).status_code == 403


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example",
                                  "localhost:9999", "10.0.0.1"])
def test_item9_dns_rebinding_foreign_host_is_refused(client, host):
    resp = client.post(PV, data=_body(), content_type="application/json", headers={"Host": host})
    assert resp.status_code == 403, resp.get_json()
    assert client.get("/cds-services", headers={"Host": host}).status_code == 403


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_item9_simple_request_content_types_are_refused(client, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    resp = client.post(PV, data=_body(), headers=headers)
    assert resp.status_code in (403, 415), resp.get_json()


def test_item9_same_origin_and_configured_origins_still_work(client, make_app):
    for host, origin in (("localhost", None), ("127.0.0.1", "http://127.0.0.1"), ("[::1]", "http://[::1]"),
                         ("localhost:80", "http://localhost")):
        headers = {"Host": host}
        if origin:
            headers["Origin"] = origin
        assert client.get("/cds-services", headers=headers).status_code == 200, (host, origin)
    sandbox = make_app(cors_origins=("https://sandbox.cds-hooks.org",)).test_client()
    resp = sandbox.get("/cds-services", headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://sandbox.cds-hooks.org"


def test_item9_with_issuers_the_jwt_decides_not_the_origin(auth_client):
    # the checks are for local mode only: with issuers every call needs a signed JWT anyway
    assert auth_client.get("/cds-services", headers={"Origin": "https://evil.example"}).status_code == 401
