"""Who may open the console: local callers only, as the service without issuers; never with issuers or in
production (no sign-in is built yet, so nothing is served rather than something unprotected)."""
import pytest

from server import create_app
from service.config import ServiceConfig
from tests.console.htmlcheck import text
from tests.service.conftest import ISS, PUBLIC_JWKS, PUBLIC_URL


@pytest.mark.parametrize("path", ["/console/", "/console/workbench", "/console/audit", "/console/rules"])
def test_callers_off_this_machine_are_refused(client, path):
    r = client.get(path, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert r.status_code == 403
    assert client.get(path, environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


@pytest.mark.parametrize("path", ["/console/", "/console/workbench", "/console/audit",
                                  "/console/audit/decision/x", "/console/static/console.css"])
def test_disabled_when_issuers_are_configured(ruleset, audit, path):
    app = create_app(ServiceConfig(env="test", ruleset=ruleset, audit_store=audit, public_url=PUBLIC_URL,
                                   trusted_issuers=[{"iss": ISS, "jwks": PUBLIC_JWKS}]))
    client = app.test_client()
    for method in ("get", "post"):
        r = getattr(client, method)(path)
        assert r.status_code == 403
        assert "The console is disabled on this service" in text(r.get_data(as_text=True))
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_the_service_is_unchanged_by_the_console(client):
    assert client.get("/healthz").status_code == 200
    r = client.get("/no-such-endpoint")
    assert r.status_code == 404 and r.get_json()["resourceType"] == "OperationOutcome"
