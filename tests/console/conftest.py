"""Console fixtures: the real app (bundled rules, a throwaway SQLite decision log) and example patients."""
import json
import re

import pytest
import yaml

from audit import AuditStore
from engine.ruleset import parse_now
from server import create_app
from service.config import ServiceConfig
from tests.conftest import EXAMPLES

AUDIT_KEY = b"test-console-audit-key-0123456789"
FLARE = "pacing-flare.json"
FLARE_NOW = "2026-11-20T12:00:00Z"


@pytest.fixture
def audit(tmp_path):
    store = AuditStore.from_config(f"sqlite:///{tmp_path}/audit.db", key=AUDIT_KEY)
    yield store
    store.close()


class FixedNow:
    """The bundled ruleset; an evaluation without an explicit time runs at the example patients' date (the CDS
    Hooks endpoint always evaluates at "now")."""

    def __init__(self, real, now):
        self._real, self._now = real, now

    def __getattr__(self, name):
        return getattr(self._real, name)

    def evaluate(self, request, now=None, hook=None):
        return self._real.evaluate(request, now=now or self._now, hook=hook)


@pytest.fixture
def app(ruleset, audit):
    fixed = FixedNow(ruleset, parse_now(FLARE_NOW))
    return create_app(ServiceConfig(env="test", ruleset=fixed, audit_store=audit))


@pytest.fixture
def client(app):
    return app.test_client()


def csrf(client, path="/console/workbench") -> str:
    """The CSRF token a page carries (its cookie is then set in the client)."""
    page = client.get(path)
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    m = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert m, "the page has no CSRF token"
    return m.group(1)


def expected_summary(filename: str, rule_id: str) -> str:
    """The summary text tests/examples/cases.yaml expects of a rule's card for an example patient (the bundle's
    current wording, so a rule's card change is followed here rather than pinned twice)."""
    cases = yaml.safe_load((EXAMPLES / "cases.yaml").read_text(encoding="utf-8"))["cases"]
    found = [c["summary_contains"][rule_id] for c in cases
             if c.get("input") == f"patients/{filename}" and rule_id in (c.get("summary_contains") or {})]
    assert len(found) == 1, (filename, rule_id, found)
    return found[0]


def patient(name: str) -> dict:
    return json.loads((EXAMPLES / "patients" / name).read_text())


def record_flare_decision(client) -> dict:
    """A real decision in the log: the flare patient sent to the CDS Hooks endpoint."""
    bundle = patient(FLARE)
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    body = {"hook": "patient-view", "hookInstance": "d1b6f1a2-0c3e-4d0a-9a55-6a3f0a1c2b3d",
            "context": {"userId": "Practitioner/1", "patientId": pid}, "prefetch": {"bundle": bundle}}
    r = client.post("/cds-services/pacing-review", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    return {"body": body, "response": r.get_json(), "patient_id": pid}


# ---- signed-in mode (PACECDS_CONSOLE_USERS) ----------------------------------------------------------------
SECRET = "test-console-session-secret-0123456789abcdef"
PASSWORDS = {"carla": "clinician-pass-2026", "arto": "auditor-pass-2026!"}


@pytest.fixture(scope="session")
def users_file(tmp_path_factory):
    """A users file made the way an operator makes one (console.users.set_user, what `console-user` calls)."""
    from console.users import set_user
    path = tmp_path_factory.mktemp("console-users") / "users.yaml"
    set_user(path, "carla", PASSWORDS["carla"], "clinician", create=True)
    set_user(path, "arto", PASSWORDS["arto"], "auditor", create=True)
    return path


@pytest.fixture
def signin_app(ruleset, audit, users_file):
    fixed = FixedNow(ruleset, parse_now(FLARE_NOW))
    return create_app(ServiceConfig(env="test", ruleset=fixed, audit_store=audit,
                                    console_users_file=str(users_file), console_secret_key=SECRET))


def https_client(app, base_url: str = "https://localhost"):
    """A Flask test client whose every request is made over https (the signed-in console refuses http)."""
    from flask.testing import FlaskClient

    class HttpsClient(FlaskClient):
        def open(self, *args, **kwargs):
            if not args or isinstance(args[0], str):
                kwargs.setdefault("base_url", base_url)
            return super().open(*args, **kwargs)

    return HttpsClient(app, app.response_class, use_cookies=True)


def sign_in(client, username: str, password: str | None = None):
    token = csrf(client, "/console/signin")
    return client.post("/console/signin", data={"csrf_token": token, "username": username,
                                                "password": PASSWORDS[username] if password is None else password})
