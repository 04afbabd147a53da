"""Checklist section H: JWT client authentication, trust lists, CORS (and A2/H2 production guards)."""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.auth import load_trusted_issuers
from service.config import ConfigError, ServiceConfig
from tests.service.conftest import (
    ISS,
    KID,
    PUBLIC_JWKS,
    PUBLIC_URL,
    bearer,
    fixture,
    mint,
    patient,
    patient_view_request,
    service_aud,
)

DISCOVERY_AUD = f"{PUBLIC_URL}/cds-services"
PV = "pacing-review"


def call(client, token, service=PV, body=None):
    body = body or patient_view_request({"patient": patient()})
    return client.post(f"/cds-services/{service}", json=body, headers=bearer(token) if token else {})


def assert_401_no_detail(resp):
    assert resp.status_code == 401
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    # One fixed message whatever the reason: a caller learns nothing about why.
    assert body["issue"][0]["diagnostics"] == "Authentication required"
    assert resp.headers["WWW-Authenticate"] == "Bearer"


# --------------------------------------------------------------------------- H2/H3: auth on every endpoint

def test_H2_H3_every_endpoint_requires_a_token(auth_client):
    assert_401_no_detail(auth_client.get("/cds-services"))
    assert_401_no_detail(call(auth_client, None))
    fb = fixture("spec-feedback-accepted.json")
    assert_401_no_detail(auth_client.post(f"/cds-services/{PV}/feedback", json=fb))


def test_H3_garbage_and_wrong_scheme_rejected(auth_client):
    for header in ("Bearer", "Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer a.b.c"):
        assert_401_no_detail(auth_client.get("/cds-services", headers={"Authorization": header}))


def test_B11_discovery_with_valid_token(auth_client):
    resp = auth_client.get("/cds-services", headers=bearer(mint(DISCOVERY_AUD)))
    assert resp.status_code == 200
    assert resp.get_json()["services"]


def test_H7_valid_es384_token_accepted_on_service(auth_client):
    resp = call(auth_client, mint(service_aud(PV)))
    assert resp.status_code == 200, resp.get_json()


# --------------------------------------------------------------------------- H4/H5: header and claims

def test_H4_missing_kid_rejected(auth_client):
    token = jwt.encode({"iss": ISS, "aud": service_aud(PV), "exp": int(time.time()) + 60,
                        "iat": int(time.time()), "jti": "x1"}, jwt.PyJWK(fixture(
                            "spec-jwk-private-EXAMPLE-ONLY.json")).key, algorithm="ES384", headers={"typ": "JWT"})
    assert "kid" not in jwt.get_unverified_header(token)
    assert_401_no_detail(call(auth_client, token))


def test_H4_typ_other_than_JWT_rejected(auth_client):
    assert_401_no_detail(call(auth_client, mint(service_aud(PV), headers={"typ": "at+jwt"})))


@pytest.mark.parametrize("claim", ["iss", "aud", "exp", "iat", "jti"])
def test_H5_each_required_claim(auth_client, claim):
    assert_401_no_detail(call(auth_client, mint(service_aud(PV), drop=(claim,))))


def test_H5_extra_sub_nbf_tenant_accepted(auth_client):
    now = int(time.time())
    token = mint(service_aud(PV), claims={"sub": "epic-client-id", "nbf": now - 300, "tenant": "t-1"})
    assert call(auth_client, token).status_code == 200


def test_H5_nbf_in_future_rejected(auth_client):
    token = mint(service_aud(PV), claims={"nbf": int(time.time()) + 3600})
    assert_401_no_detail(call(auth_client, token))


# --------------------------------------------------------------------------- H6: audience

def test_H6_discovery_aud_on_service_endpoint_rejected(auth_client):
    assert_401_no_detail(call(auth_client, mint(DISCOVERY_AUD)))


def test_H6_wrong_aud_rejected(auth_client):
    assert_401_no_detail(call(auth_client, mint(service_aud("sedating-medication-safety"))))
    assert_401_no_detail(call(auth_client, mint("https://evil.example.org/cds-services/pacing-review")))
    # aud is built from the configured public URL, not from the URL the request arrived on.
    assert_401_no_detail(call(auth_client, mint("http://localhost/cds-services/pacing-review")))


def test_H6_array_aud_accepted(auth_client):
    assert call(auth_client, mint([service_aud(PV)])).status_code == 200
    assert call(auth_client, mint([service_aud(PV), "https://other.example.org"])).status_code == 200


def test_H6_feedback_token_is_refused_by_the_service_endpoint_and_vice_versa(auth_client):
    """aud is PUBLIC_URL + the exact path called: a token minted for one endpoint opens no other."""
    fb_path = f"/cds-services/{PV}/feedback"
    feedback_aud, invoke_aud = f"{PUBLIC_URL}{fb_path}", service_aud(PV)
    feedback = fixture("spec-feedback-accepted.json")
    assert_401_no_detail(call(auth_client, mint(feedback_aud)))
    assert_401_no_detail(auth_client.post(fb_path, json=feedback, headers=bearer(mint(invoke_aud))))
    # each token opens its own endpoint (so the 401s above are about aud, not about the tokens)
    assert call(auth_client, mint(invoke_aud)).status_code == 200
    assert auth_client.post(fb_path, json=feedback, headers=bearer(mint(feedback_aud))).status_code == 200
    # a token for another service's feedback opens neither
    other = f"{PUBLIC_URL}/cds-services/sedating-medication-safety/feedback"
    assert_401_no_detail(auth_client.post(fb_path, json=feedback, headers=bearer(mint(other))))


# --------------------------------------------------------------------------- H7: signature, spec token

def test_H7_published_spec_token_verifies_but_is_rejected_as_expired(make_app, caplog):
    compact = fixture("spec-jwt-compact.txt")
    # The signature is genuine, so the rejection below is about expiry, not a broken fixture.
    claims = jwt.decode(compact, jwt.PyJWK(PUBLIC_JWKS["keys"][0]).key, algorithms=["ES384"],
                        options={"verify_exp": False, "verify_aud": False})
    assert claims["exp"] == 1422568860
    # Trust everything about it (iss, its jku, its key) so that only the time can fail.
    jku = jwt.get_unverified_header(compact)["jku"]
    app = make_app(public_url="https://cds.example.org",
                   trusted_issuers=[{"iss": ISS, "jwks": PUBLIC_JWKS, "jku": jku}])
    caplog.set_level(logging.INFO, logger="pacecds")
    resp = app.test_client().post("/cds-services/some-service", json=patient_view_request(),
                                  headers=bearer(compact))
    assert_401_no_detail(resp)
    assert "token expired" in caplog.text


def test_H7_tampered_payload_rejected(auth_client):
    token = mint(service_aud(PV))
    h, p, s = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(p))
    claims["tenant"] = "someone-else"
    p2 = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    assert_401_no_detail(call(auth_client, f"{h}.{p2}.{s}"))


def test_H7_signed_by_another_key_rejected(auth_client):
    other = ec.generate_private_key(ec.SECP384R1())
    assert_401_no_detail(call(auth_client, mint(service_aud(PV), key=other)))


def test_H7_unknown_kid_rejected(auth_client):
    assert_401_no_detail(call(auth_client, mint(service_aud(PV), headers={"kid": "no-such-kid"})))


# --------------------------------------------------------------------------- H8: iss and jku allowlists

class JwksHost:
    """A real JWKS endpoint on loopback that counts its requests."""

    def __init__(self, jwks_sequence, status=200):
        self.jwks_sequence = list(jwks_sequence)
        self.status = status
        self.hits = 0
        host = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                idx = min(host.hits, len(host.jwks_sequence) - 1)
                host.hits += 1
                data = json.dumps(host.jwks_sequence[idx]).encode()
                self.send_response(host.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_host():
    hosts = []

    def make(seq, status=200):
        h = JwksHost(seq, status)
        hosts.append(h)
        return h
    yield make
    for h in hosts:
        h.close()


def test_H8_unknown_iss_rejected(auth_client):
    assert_401_no_detail(call(auth_client, mint(service_aud(PV), claims={"iss": "https://evil.example.org"})))


def test_H8_foreign_jku_rejected_without_fetching(make_app, jwks_host):
    allowed = jwks_host([PUBLIC_JWKS])
    foreign = jwks_host([PUBLIC_JWKS])
    app = make_app(public_url=PUBLIC_URL, trusted_issuers=[{"iss": ISS, "jku": allowed.url}])
    c = app.test_client()
    resp = call(c, mint(service_aud(PV), headers={"jku": foreign.url}))
    assert_401_no_detail(resp)
    assert foreign.hits == 0 and allowed.hits == 0
    # the same token shape with the allowlisted jku works, and the JWKS is then cached
    assert call(c, mint(service_aud(PV), headers={"jku": allowed.url})).status_code == 200
    assert call(c, mint(service_aud(PV), headers={"jku": allowed.url})).status_code == 200
    assert allowed.hits == 1


def test_H8_inline_jwks_issuer_with_foreign_jku_rejected(auth_client, jwks_host):
    foreign = jwks_host([PUBLIC_JWKS])
    assert_401_no_detail(call(auth_client, mint(service_aud(PV), headers={"jku": foreign.url})))
    assert foreign.hits == 0


def test_H7_unknown_kid_refetches_jwks_once(make_app, jwks_host):
    rotated = {"keys": [dict(PUBLIC_JWKS["keys"][0], kid="rotated-kid")]}
    host = jwks_host([PUBLIC_JWKS, rotated, rotated])
    app = make_app(public_url=PUBLIC_URL, trusted_issuers=[{"iss": ISS, "jku": host.url}])
    c = app.test_client()
    assert call(c, mint(service_aud(PV))).status_code == 200
    assert host.hits == 1
    # The client rotated its key: the unknown kid triggers exactly one refetch, which finds it.
    assert call(c, mint(service_aud(PV), headers={"kid": "rotated-kid"})).status_code == 200
    assert host.hits == 2
    # A kid that exists nowhere: no refetch storm (at most one refetch per interval).
    for _ in range(3):
        assert_401_no_detail(call(c, mint(service_aud(PV), headers={"kid": "bogus"})))
    assert host.hits == 2


def test_H7_jwks_host_down_is_not_hammered(make_app, jwks_host):
    host = jwks_host([PUBLIC_JWKS], status=503)
    c = make_app(public_url=PUBLIC_URL, trusted_issuers=[{"iss": ISS, "jku": host.url}]).test_client()
    for _ in range(5):
        assert_401_no_detail(call(c, mint(service_aud(PV))))
    assert host.hits == 1


def test_H8_tenant_allowlist(make_app):
    app = make_app(public_url=PUBLIC_URL, trusted_issuers=[{"iss": ISS, "jwks": PUBLIC_JWKS, "tenants": ["t-1"]}])
    c = app.test_client()
    assert call(c, mint(service_aud(PV), claims={"tenant": "t-1"})).status_code == 200
    assert_401_no_detail(call(c, mint(service_aud(PV), claims={"tenant": "t-2"})))
    assert_401_no_detail(call(c, mint(service_aud(PV))))


# --------------------------------------------------------------------------- H9: algorithms

def test_H9_alg_none_rejected(auth_client):
    token = jwt.encode({"iss": ISS, "aud": service_aud(PV), "exp": int(time.time()) + 60,
                        "iat": int(time.time()), "jti": "n1"}, None, algorithm="none",
                       headers={"kid": KID, "typ": "JWT"})
    assert_401_no_detail(call(auth_client, token))
    # hand-made variants too (PyJWT refuses some of them when encoding)
    for alg in ("none", "None", "NONE"):
        h = jwt.utils.base64url_encode(json.dumps({"alg": alg, "typ": "JWT", "kid": KID}).encode()).decode()
        p = token.split(".")[1]
        assert_401_no_detail(call(auth_client, f"{h}.{p}."))


def test_H9_hs256_with_public_key_rejected(auth_client):
    """The key-confusion attack: HMAC the token with the issuer's *public* key as the secret."""
    pub = jwt.PyJWK(PUBLIC_JWKS["keys"][0]).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    payload = {"iss": ISS, "aud": service_aud(PV), "exp": int(time.time()) + 60, "iat": int(time.time()),
               "jti": "hs1"}
    import hashlib  # noqa: E401
    import hmac
    seg = lambda d: jwt.utils.base64url_encode(json.dumps(d).encode()).decode()  # noqa: E731
    for secret in (pub, json.dumps(PUBLIC_JWKS["keys"][0]).encode(), PUBLIC_JWKS["keys"][0]["x"].encode()):
        signing = f"{seg({'alg': 'HS256', 'typ': 'JWT', 'kid': KID})}.{seg(payload)}"
        sig = jwt.utils.base64url_encode(hmac.new(secret, signing.encode(), hashlib.sha256).digest()).decode()
        assert_401_no_detail(call(auth_client, f"{signing}.{sig}"))


def rsa_issuer():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    pub.update({"kid": "rsa-kid", "use": "sig"})
    return key, {"iss": "https://rsa-ehr.example.org", "jwks": {"keys": [pub]}}


def test_H9_rs384_accepted_rs256_only_by_configuration(make_app):
    key, issuer = rsa_issuer()
    app = make_app(public_url=PUBLIC_URL, trusted_issuers=[issuer])
    c = app.test_client()
    claims = {"iss": issuer["iss"]}
    assert call(c, mint(service_aud(PV), claims=claims, key=key, alg="RS384",
                        headers={"kid": "rsa-kid"})).status_code == 200
    assert_401_no_detail(call(c, mint(service_aud(PV), claims=claims, key=key, alg="RS256",
                                      headers={"kid": "rsa-kid"})))
    app2 = make_app(public_url=PUBLIC_URL, trusted_issuers=[issuer], jwt_algorithms=("RS384", "RS256"))
    assert call(app2.test_client(), mint(service_aud(PV), claims=claims, key=key, alg="RS256",
                                         headers={"kid": "rsa-kid"})).status_code == 200


def test_H9_es256_needs_configuration_and_hmac_can_never_be_configured(make_app):
    key = ec.generate_private_key(ec.SECP256R1())
    pub = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    pub.update({"kid": "p256", "use": "sig"})
    issuer = {"iss": "https://p256-ehr.example.org", "jwks": {"keys": [pub]}}
    token = lambda: mint(service_aud(PV), claims={"iss": issuer["iss"]}, key=key, alg="ES256",  # noqa: E731
                         headers={"kid": "p256"})
    assert_401_no_detail(call(make_app(public_url=PUBLIC_URL, trusted_issuers=[issuer]).test_client(), token()))
    app = make_app(public_url=PUBLIC_URL, trusted_issuers=[issuer], jwt_algorithms=("ES384", "ES256"))
    assert call(app.test_client(), token()).status_code == 200
    with pytest.raises(ConfigError):
        ServiceConfig(env="test", jwt_algorithms=("HS256",)).check()
    with pytest.raises(ConfigError):
        ServiceConfig(env="test", jwt_algorithms=("none",)).check()


def test_H9_alg_mismatching_the_key_rejected(make_app):
    key, issuer = rsa_issuer()
    app = make_app(public_url=PUBLIC_URL, trusted_issuers=[issuer, {"iss": ISS, "jwks": PUBLIC_JWKS}])
    c = app.test_client()
    # an RSA-signed token that claims the EC key's kid
    assert_401_no_detail(call(c, mint(service_aud(PV), key=key, alg="RS384")))


# --------------------------------------------------------------------------- H10: time and replay

def test_H10_expired_rejected_small_skew_tolerated(auth_client):
    now = int(time.time())
    assert_401_no_detail(call(auth_client, mint(service_aud(PV), claims={"exp": now - 120, "iat": now - 400})))
    assert call(auth_client, mint(service_aud(PV), claims={"exp": now - 10, "iat": now - 300})).status_code == 200
    assert call(auth_client, mint(service_aud(PV), claims={"iat": now + 20})).status_code == 200


def test_H10_iat_in_future_and_overlong_lifetime_rejected(auth_client):
    now = int(time.time())
    assert_401_no_detail(call(auth_client, mint(service_aud(PV), claims={"iat": now + 600, "exp": now + 900})))
    assert_401_no_detail(call(auth_client, mint(service_aud(PV), claims={"exp": now + 86400})))


def test_H10_replayed_jti_rejected(auth_client):
    token = mint(service_aud(PV))
    assert call(auth_client, token).status_code == 200
    assert_401_no_detail(call(auth_client, token))
    # a new token with the same jti is a replay too
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert_401_no_detail(call(auth_client, mint(service_aud(PV), claims={"jti": jti})))


def test_H10_replay_store_shared_between_workers(make_app, issuers, tmp_path):
    """Two app instances (as two gunicorn workers) share the SQLite jti store."""
    db = str(tmp_path / "jti.sqlite")
    a = make_app(public_url=PUBLIC_URL, trusted_issuers=issuers, replay_db=db).test_client()
    b = make_app(public_url=PUBLIC_URL, trusted_issuers=issuers, replay_db=db).test_client()
    token = mint(service_aud(PV))
    assert call(a, token).status_code == 200
    assert_401_no_detail(call(b, token))


# --------------------------------------------------------------------------- H11: tokens never logged

def test_H11_D9_tokens_never_logged(auth_client, caplog):
    caplog.set_level(logging.DEBUG)
    good = mint(service_aud(PV))
    bad = mint(DISCOVERY_AUD)
    body = patient_view_request({"patient": patient()}, fhirServer="https://ehr.example.org/fhir",
                                fhirAuthorization={"access_token": "tok-CANARY-123", "token_type": "Bearer",
                                                   "expires_in": 300, "scope": "user/Observation.read",
                                                   "subject": "pacecds"})
    call(auth_client, good, body=body)
    call(auth_client, good, body=body)      # replay -> 401 path logs too
    call(auth_client, bad, body=body)
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (good, bad, good.split(".")[2], "tok-CANARY-123"):
        assert secret not in text
    assert "jti replayed" in caplog.text  # the reason is logged for operators


# --------------------------------------------------------------------------- trust list file, production

def test_H8_trusted_issuers_file_yaml_and_json(tmp_path):
    y = tmp_path / "issuers.yaml"
    y.write_text(f"issuers:\n  - iss: {ISS}\n    jku: https://ehr.example.org/jwks\n")
    assert load_trusted_issuers(str(y))[ISS].jkus == ("https://ehr.example.org/jwks",)
    j = tmp_path / "issuers.json"
    j.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks": PUBLIC_JWKS}]}))
    assert load_trusted_issuers(str(j))[ISS].jwks == PUBLIC_JWKS
    for bad in ({"issuers": []}, {"issuers": [{"iss": ISS}]}, {"issuers": [{"jku": "https://x"}]},
                {"issuers": [{"iss": ISS, "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}}]}):
        j.write_text(json.dumps(bad))
        with pytest.raises(ConfigError):
            load_trusted_issuers(str(j))
    with pytest.raises(ConfigError):
        load_trusted_issuers(data=[{"iss": ISS, "jku": "http://plain.example.org/jwks"}], production=True)


def test_H8_env_file_drives_the_app(audit, ruleset, tmp_path, monkeypatch):
    f = tmp_path / "issuers.json"
    f.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks": PUBLIC_JWKS}]}))
    monkeypatch.setenv("PACECDS_TRUSTED_ISSUERS", str(f))
    monkeypatch.setenv("PACECDS_PUBLIC_URL", PUBLIC_URL + "/")
    from server import create_app
    app = create_app({"ruleset": ruleset, "audit_store": audit})
    c = app.test_client()
    assert_401_no_detail(c.get("/cds-services"))
    assert c.get("/cds-services", headers=bearer(mint(DISCOVERY_AUD))).status_code == 200


def test_H2_without_issuers_only_local_callers_are_answered(make_app, issuers):
    local = make_app().test_client()
    assert local.get("/cds-services", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    assert local.get("/cds-services", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    for addr in ("10.1.2.3", "192.0.2.7", "2001:db8::1"):
        resp = local.post("/cds-services/pacing-review", json=patient_view_request(),
                          environ_base={"REMOTE_ADDR": addr})
        assert resp.status_code == 403 and resp.get_json()["resourceType"] == "OperationOutcome"
    # with issuers, remote callers are judged by their JWT instead
    remote = make_app(public_url=PUBLIC_URL, trusted_issuers=issuers).test_client()
    resp = remote.get("/cds-services", headers=bearer(mint(DISCOVERY_AUD)), environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert resp.status_code == 200


def test_H2_A2_production_refuses_to_start_without_issuers_or_tls():
    with pytest.raises(ConfigError, match="TRUSTED_ISSUERS"):
        ServiceConfig(env="production", public_url=PUBLIC_URL).check()
    with pytest.raises(ConfigError, match="https"):
        ServiceConfig(env="production", public_url="http://cds.example.org",
                      trusted_issuers=[{"iss": ISS, "jwks": PUBLIC_JWKS}]).check()
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        ServiceConfig(env="test", trusted_issuers=[{"iss": ISS, "jwks": PUBLIC_JWKS}]).check()


# --------------------------------------------------------------------------- H13: CORS

SANDBOX = "https://sandbox.cds-hooks.org"


def test_H13_cors_preflight_allowlisted_origin(make_app, issuers):
    c = make_app(public_url=PUBLIC_URL, trusted_issuers=issuers, cors_origins=(SANDBOX,)).test_client()
    for path in ("/cds-services", f"/cds-services/{PV}", f"/cds-services/{PV}/feedback"):
        resp = c.options(path, headers={"Origin": SANDBOX, "Access-Control-Request-Method": "POST",
                                        "Access-Control-Request-Headers": "authorization, content-type"})
        assert resp.status_code in (200, 204), path
        assert resp.headers["Access-Control-Allow-Origin"] == SANDBOX
        methods = {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}
        assert {"GET", "POST"} <= methods
        allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed
    # actual request from the sandbox carries ACAO too (even on a 401)
    resp = c.get("/cds-services", headers={"Origin": SANDBOX})
    assert resp.status_code == 401 and resp.headers["Access-Control-Allow-Origin"] == SANDBOX


def test_H13_cors_disallowed_origin_gets_no_acao(make_app):
    c = make_app(cors_origins=(SANDBOX,)).test_client()
    resp = c.options("/cds-services", headers={"Origin": "https://evil.example.org",
                                               "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = c.get("/cds-services", headers={"Origin": "https://evil.example.org"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    with pytest.raises(ConfigError):
        ServiceConfig(env="test", cors_origins=("*",)).check()


def test_H13_no_cors_by_default(client):
    resp = client.get("/cds-services", headers={"Origin": SANDBOX})
    assert "Access-Control-Allow-Origin" not in resp.headers
