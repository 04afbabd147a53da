"""Signed-in use of the console (PACECDS_CONSOLE_USERS): argon2 users, roles per page, HTTPS, session cookie,
CSRF, a bound on failed sign-ins, and every view of a stored decision logged with the user's name."""
import logging
import re
import subprocess
import sys

import pytest

from console.signin import ENDPOINT_ROLES, PUBLIC_ENDPOINTS
from console.users import read_users, set_user
from server import create_app
from service.config import ConfigError, ServiceConfig
from tests.console.conftest import PASSWORDS, SECRET, csrf, https_client, record_flare_decision, sign_in
from tests.console.htmlcheck import text
from tests.service.conftest import ISS, PUBLIC_JWKS, PUBLIC_URL

CLINICIAN_PAGES = ["/console/", "/console/workbench", "/console/rules", "/console/rules/pacing.flare-scale-back",
                   "/console/releases"]
AUDITOR_PAGES = ["/console/audit", "/console/audit/verify", "/console/audit/stats"]


@pytest.fixture
def client(signin_app):
    return https_client(signin_app)


def test_pages_need_a_signed_in_user(client):
    for path in CLINICIAN_PAGES + AUDITOR_PAGES:
        r = client.get(path)
        assert r.status_code == 302 and r.headers["Location"].endswith("/console/signin"), path
    r = client.post("/console/workbench", data={"example": "x"})
    assert r.status_code == 403
    page = client.get("/console/signin")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'type="password"' in html
    assert "/console/workbench" not in html and "sha256" not in html  # nothing shown before sign-in


def test_https_only(signin_app):
    plain = signin_app.test_client()  # http://localhost
    for path in ("/console/signin", "/console/workbench"):
        r = plain.get(path)
        assert r.status_code == 403 and "HTTPS" in text(r.get_data(as_text=True))


def test_forwarded_proto_counts_only_when_configured(ruleset, audit, users_file):
    def app(trust):
        return create_app(ServiceConfig(env="test", ruleset=ruleset, audit_store=audit,
                                        console_users_file=str(users_file), console_secret_key=SECRET,
                                        console_trust_forwarded_proto=trust)).test_client()
    header = {"X-Forwarded-Proto": "https"}
    assert app(False).get("/console/signin", headers=header).status_code == 403
    assert app(True).get("/console/signin", headers=header).status_code == 200
    assert app(True).get("/console/signin", headers={"X-Forwarded-Proto": "http"}).status_code == 403


def test_clinician_opens_workbench_and_rules_but_not_the_decision_log(client):
    r = sign_in(client, "carla")
    assert r.status_code == 303 and r.headers["Location"].endswith("/console/")
    for path in CLINICIAN_PAGES:
        r = client.get(path)
        assert r.status_code == 200, path
    home = client.get("/console/").get_data(as_text=True)
    assert "carla" in text(home) and "/console/audit" not in home  # no link to what the role may not open
    for path in AUDITOR_PAGES + ["/console/audit/decision/d1b6f1a2-0c3e-4d0a-9a55-6a3f0a1c2b3d"]:
        r = client.get(path)
        assert r.status_code == 403, path
        assert "clinician" in text(r.get_data(as_text=True))
    r = client.post("/console/audit", data={"csrf_token": csrf(client, "/console/workbench"), "patient": "x"})
    assert r.status_code == 403
    page = client.get("/console/workbench").get_data(as_text=True)
    key = next(v for v in re.findall(r'option value="([^"]+)"', page) if "pacing-flare" in v)
    r = client.post("/console/workbench", data={"csrf_token": csrf(client), "example": key},
                    content_type="multipart/form-data")
    assert r.status_code == 200 and 'class="card' in r.get_data(as_text=True)


def test_auditor_opens_the_decision_log_and_each_view_is_logged_with_the_name(client, caplog):
    stored = record_flare_decision(client)
    assert sign_in(client, "arto").status_code == 303
    for path in AUDITOR_PAGES + CLINICIAN_PAGES:
        assert client.get(path).status_code == 200, path
    hook_instance = stored["body"]["hookInstance"]
    with caplog.at_level(logging.INFO, logger="pacecds.console"):
        r = client.get(f"/console/audit/decision/{hook_instance}")
    assert r.status_code == 200
    assert any("decision viewed by user arto (auditor)" in m and hook_instance in m for m in caplog.messages)


def test_wrong_password_and_unknown_user_are_refused_alike(client):
    a = sign_in(client, "carla", "not-the-password")
    b = sign_in(client, "carla", "")
    c = client.post("/console/signin", data={"csrf_token": csrf(client, "/console/signin"), "username": "nobody",
                                             "password": "whatever-whatever"})
    for r in (a, b, c):
        assert r.status_code == 401
        assert "The user name or password is wrong." in text(r.get_data(as_text=True))
    assert client.get("/console/workbench").status_code == 302


def test_failed_sign_ins_are_bounded(client):
    for _ in range(5):
        assert sign_in(client, "carla", "wrong-password-guess").status_code == 401
    r = sign_in(client, "carla")  # the right password, but too late: not even checked
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins" in text(r.get_data(as_text=True))
    assert sign_in(client, "arto").status_code == 303  # another user from the same address still may


def test_session_cookie_flags_and_sign_out(client):
    r = sign_in(client, "carla")
    cookie = next(h for h in r.headers.getlist("Set-Cookie") if h.startswith("pacecds_console_session="))
    flags = {f.strip().lower() for f in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/console"} <= flags
    assert client.get("/console/workbench").status_code == 200
    assert client.post("/console/signout", data={}).status_code == 400  # CSRF on sign-out too
    r = client.post("/console/signout", data={"csrf_token": csrf(client)})
    assert r.status_code == 303 and r.headers["Location"].endswith("/console/signin")
    assert client.get("/console/workbench").status_code == 302


def test_sign_in_form_needs_its_token(client):
    client.get("/console/signin")
    r = client.post("/console/signin", data={"username": "carla", "password": PASSWORDS["carla"]})
    assert r.status_code == 400
    assert client.get("/console/workbench").status_code == 302


def test_a_new_password_ends_earlier_sessions(tmp_path, ruleset, audit):
    path = tmp_path / "users.yaml"
    set_user(path, "carla", PASSWORDS["carla"], "clinician", create=True)
    c = https_client(create_app(ServiceConfig(env="test", ruleset=ruleset, audit_store=audit,
                                              console_users_file=str(path), console_secret_key=SECRET)))
    assert sign_in(c, "carla").status_code == 303
    assert c.get("/console/workbench").status_code == 200
    set_user(path, "carla", "a-brand-new-password", create=False)
    assert c.get("/console/workbench").status_code == 302
    assert sign_in(c, "carla", "a-brand-new-password").status_code == 303


def test_the_page_asked_for_is_opened_after_sign_in(client):
    assert client.get("/console/rules").status_code == 302
    r = sign_in(client, "carla")
    assert r.status_code == 303 and r.headers["Location"].endswith("/console/rules")


def test_every_console_page_has_a_role(signin_app):
    endpoints = {r.endpoint for r in signin_app.url_map.iter_rules() if r.endpoint.startswith("console.")}
    assert endpoints - PUBLIC_ENDPOINTS <= set(ENDPOINT_ROLES), endpoints - PUBLIC_ENDPOINTS - set(ENDPOINT_ROLES)
    assert {"console.audit", "console.decision", "console.verify", "console.stats"} == \
        {e for e, role in ENDPOINT_ROLES.items() if role == "auditor"}


def test_configuration_is_checked(tmp_path, ruleset, audit, users_file):
    with pytest.raises(ConfigError, match="PACECDS_CONSOLE_SECRET_KEY"):
        ServiceConfig(env="test", console_users_file=str(users_file)).check()
    with pytest.raises(ConfigError, match="PACECDS_CONSOLE_SECRET_KEY"):
        ServiceConfig(env="test", console_users_file=str(users_file), console_secret_key="short").check()
    bad = tmp_path / "users.yaml"
    bad.write_text("users:\n  - {username: eve, role: admin, hash: '$argon2id$x'}\n")
    with pytest.raises(ConfigError, match="role"):
        create_app(ServiceConfig(env="test", ruleset=ruleset, audit_store=audit, console_users_file=str(bad),
                                 console_secret_key=SECRET))
    assert SECRET not in repr(ServiceConfig(env="test", console_users_file="x", console_secret_key=SECRET))


def test_production_serves_the_console_to_signed_in_users(ruleset, audit, users_file):
    app = create_app(ServiceConfig(env="production", ruleset=ruleset, audit_store=audit, public_url=PUBLIC_URL,
                                   trusted_issuers=[{"iss": ISS, "jwks": PUBLIC_JWKS}], replay_store=_NoReplay(),
                                   console_users_file=str(users_file), console_secret_key=SECRET))
    client = https_client(app, "https://cds.example.org")
    remote = {"REMOTE_ADDR": "10.1.2.3"}  # not this machine: production has no loopback rule
    assert client.get("/console/workbench", environ_base=remote).status_code == 302
    token = csrf(client, "/console/signin")
    r = client.post("/console/signin", environ_base=remote,
                    data={"csrf_token": token, "username": "carla", "password": PASSWORDS["carla"]})
    assert r.status_code == 303
    assert client.get("/console/workbench", environ_base=remote).status_code == 200
    assert client.get("/console/audit", environ_base=remote).status_code == 403


class _NoReplay:
    def add(self, iss, jti, expires_at):
        return True


def test_cli_adds_users_with_a_password_from_stdin(tmp_path):
    path = tmp_path / "users.yaml"
    cmd = [sys.executable, "-m", "pacecds", "console-user", "--file", str(path)]
    r = subprocess.run(cmd + ["add", "dana", "--role", "auditor"], input="dana-password-123\n", text=True,
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    user = read_users(path)["dana"]
    assert user.role == "auditor" and user.hash.startswith("$argon2id$") and "dana-password-123" not in path.read_text()
    r = subprocess.run(cmd + ["add", "dana", "--role", "clinician"], input="another-password\n", text=True,
                       capture_output=True)
    assert r.returncode == 2 and "exists already" in r.stderr
    r = subprocess.run(cmd + ["passwd", "dana"], input="short\n", text=True, capture_output=True)
    assert r.returncode == 2 and "at least 12 characters" in r.stderr
    r = subprocess.run(cmd + ["passwd", "dana", "--role", "clinician"], input="a-new-password-9\n", text=True,
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    again = read_users(path)["dana"]
    assert again.role == "clinician" and again.hash != user.hash
    assert (path.stat().st_mode & 0o777) == 0o600


def test_failed_sign_in_memory_is_bounded_and_forgets_after_the_window(monkeypatch):
    from console import signin

    clock = [1000.0]
    monkeypatch.setattr(signin.time, "monotonic", lambda: clock[0])
    fails = signin.FailedSignIns(per_user=2, per_address=50, window_s=60, max_keys=4)
    for i in range(10):
        fails.failed("x" * 100_000 + str(i), f"10.0.0.{i}")
    assert len(fails._fails) <= 4 and all(len(k) <= 66 for k in fails._fails)
    fails.failed("carla", "10.9.9.9")
    fails.failed("carla", "10.9.9.8")
    assert 0 < fails.blocked_for("carla", "10.9.9.7") <= 60
    clock[0] += 61
    assert fails.blocked_for("carla", "10.9.9.7") == 0
