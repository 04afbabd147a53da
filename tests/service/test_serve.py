"""`pacecds serve`, configuration from the environment, the release check, and the README's service commands."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pacecds.cli import main as pacecds
from server import create_app
from service.config import ConfigError, ServiceConfig, is_loopback
from tests.service.conftest import ISS, PUBLIC_JWKS, RULES_DIR

REPO = Path(__file__).resolve().parents[2]


def test_I3_outbound_timeouts_and_limits_are_configurable():
    cfg = ServiceConfig.from_env({"PACECDS_FHIR_TIMEOUT": "0.5", "PACECDS_FHIR_BUDGET": "1.5",
                                  "PACECDS_FHIR_MAX_PAGES": "3", "PACECDS_MAX_BODY_BYTES": "1000",
                                  "PACECDS_CORS_ORIGINS": "https://a.example, https://b.example",
                                  "PACECDS_JWT_ALGORITHMS": "ES384,ES256"})
    assert (cfg.fhir_timeout_s, cfg.fhir_budget_s, cfg.fhir_max_pages, cfg.max_body_bytes) == (0.5, 1.5, 3, 1000)
    assert cfg.cors_origins == ("https://a.example", "https://b.example")
    assert cfg.jwt_algorithms == ("ES384", "ES256")
    for bad in ({"PACECDS_FHIR_TIMEOUT": "soon"}, {"PACECDS_FHIR_TIMEOUT": "-1"}, {"PACECDS_ENV": "prod"},
                {"PACECDS_JWT_ALGORITHMS": "ES384,HS256"}, {"PACECDS_ENV": "production", "PACECDS_DEV": "1"}):
        with pytest.raises(ConfigError):
            ServiceConfig.from_env(bad)


def test_loopback_detection():
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org"))


def test_H2_serve_refuses_a_public_bind_without_trusted_issuers(monkeypatch, capsys):
    for var in ("PACECDS_TRUSTED_ISSUERS", "PACECDS_ENV"):
        monkeypatch.delenv(var, raising=False)
    assert pacecds(["serve", "--dev", "--host", "0.0.0.0", "--port", "18099"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0" in err and "PACECDS_TRUSTED_ISSUERS" in err


def test_H2_serve_refuses_production_without_issuers(monkeypatch, capsys):
    monkeypatch.setenv("PACECDS_ENV", "production")
    monkeypatch.delenv("PACECDS_TRUSTED_ISSUERS", raising=False)
    assert pacecds(["serve", "--port", "18099"]) == 2
    assert "requires PACECDS_TRUSTED_ISSUERS" in capsys.readouterr().err


def test_release_check_refuses_unreleased_rules_outside_a_development_run(tmp_path, audit):
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    (rules / "ruleset.yaml").write_text("name: pacecds-core\nversion: 0.1.0\n")  # a manifest without hashes
    serving = dict(env="test", rules_dir=str(rules), audit_store=audit, public_url="https://cds.example.org",
                   trusted_issuers=[{"iss": ISS, "jwks": PUBLIC_JWKS}])
    with pytest.raises(ConfigError, match="pacecds release"):
        create_app(ServiceConfig(**serving))
    assert not ServiceConfig(**serving).development_run
    assert ServiceConfig(**serving, dev=True).development_run
    assert ServiceConfig(env="test").development_run          # local use: loopback only, no issuers
    assert not ServiceConfig(env="production", public_url="https://x.org",
                             trusted_issuers=[{"iss": ISS, "jwks": PUBLIC_JWKS}]).development_run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, data=None, headers=None, timeout=5):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def start(tmp_path, extra_env=None, args=()):
    """`pacecds serve` (gunicorn, 2 workers) on a free loopback port; returns (base URL, process)."""
    port = _free_port()
    env = dict(os.environ, PACECDS_VAR_DIR=str(tmp_path / "var"), PACECDS_WORKERS="2")
    for var in ("PACECDS_TRUSTED_ISSUERS", "PACECDS_ENV", "PACECDS_DATABASE_URL", "PACECDS_PUBLIC_URL"):
        env.pop(var, None)
    env.update(extra_env or {})
    proc = subprocess.Popen([sys.executable, "-m", "pacecds.cli", "serve", "--port", str(port), *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if _get(base + "/healthz", timeout=1)[0] == 200:
                return base, proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise AssertionError("server did not start:\n" + (proc.stdout.read() if proc.stdout else ""))
        time.sleep(0.2)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def served(tmp_path):
    base, proc = start(tmp_path)
    try:
        yield base, proc, tmp_path
    finally:
        stop(proc)


def test_README_serve_and_curl_example_return_cards(served):
    """The README's commands: serve the bundled rules, then its curl example gets the anaemia card."""
    base, proc, tmp = served
    status, discovery = _get(base + "/cds-services")
    assert status == 200 and len(discovery["services"]) == 3
    # The README's curl line, run as written (only the port differs).
    readme = (REPO / "README.md").read_text()
    [line] = [ln for ln in readme.splitlines() if "curl -s" in ln and "demo-patient-view-request" in ln]
    assert ":8080/" in line
    out = subprocess.run(["bash", "-c", line.replace(":8080/", f":{base.rsplit(':', 1)[1]}/")], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    resp = json.loads(out.stdout)
    assert [c["extension"]["pacecds.rule"]["id"] for c in resp["cards"]] == ["anemia.low-hemoglobin"]
    # the decision went to the embedded SQLite default under PACECDS_VAR_DIR
    assert (tmp / "var" / "pacecds-audit.db").exists()
    from audit import AuditStore
    store = AuditStore.from_config(f"sqlite:///{tmp / 'var' / 'pacecds-audit.db'}", migrate=False,
                                   key=(tmp / "var" / "pacecds-audit.key").read_text().strip().encode())  # seals
    try:
        assert store.count() == 1 and store.verify().ok
    finally:
        store.close()


def test_serve_with_issuers_rejects_anonymous_calls(tmp_path):
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks": PUBLIC_JWKS}]}))
    app = create_app(ServiceConfig.from_env({"PACECDS_TRUSTED_ISSUERS": str(issuers),
                                             "PACECDS_PUBLIC_URL": "https://cds.example.org",
                                             "PACECDS_DEV": "1", "PACECDS_AUDIT": "0"}))
    assert app.test_client().get("/cds-services").status_code == 401


def test_H10_jti_store_is_shared_across_workers_by_default(tmp_path):
    cfg = ServiceConfig.from_env({"PACECDS_TRUSTED_ISSUERS": "/x/issuers.json", "PACECDS_PUBLIC_URL": "https://c.org",
                                  "PACECDS_VAR_DIR": str(tmp_path)})
    assert cfg.replay_db == str(tmp_path / "pacecds-jti.sqlite")


def test_H3_H10_real_workers_share_the_jti_store_and_check_every_call(tmp_path):
    """Over HTTP through gunicorn's 2 worker processes: no token -> 401, each token works once whichever
    worker answers, and the replay is refused by the other worker too."""
    from tests.service.conftest import mint, patient, patient_view_request
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks": PUBLIC_JWKS}]}))
    public = "https://cds.example.org"
    base, proc = start(tmp_path, {"PACECDS_TRUSTED_ISSUERS": str(issuers), "PACECDS_PUBLIC_URL": public},
                       args=("--dev",))
    try:
        body = json.dumps(patient_view_request({"patient": patient()})).encode()
        url = base + "/cds-services/pacing-review"
        json_ct = {"Content-Type": "application/json"}
        assert _get(url, data=body, headers=json_ct)[0] == 401
        for _ in range(6):
            token = mint(f"{public}/cds-services/pacing-review")
            auth = {**json_ct, "Authorization": f"Bearer {token}"}
            assert _get(url, data=body, headers=auth)[0] == 200
            status, oo = _get(url, data=body, headers=auth)
            assert status == 401 and oo["issue"][0]["diagnostics"] == "Authentication required"
        assert (tmp_path / "var" / "pacecds-jti.sqlite").exists()
    finally:
        stop(proc)


def test_dev_hot_reload_swaps_good_rules_and_keeps_serving_on_broken_ones(tmp_path, audit):
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    app = create_app(ServiceConfig(env="test", rules_dir=str(rules), audit_store=audit, dev=True))
    c = app.test_client()
    holder = app.extensions["pacecds"]._ruleset_source
    first = c.get("/healthz").get_json()["ruleset"]["sha256"]
    assert c.get("/rules/anemia.low-hemoglobin").get_json()["title"].startswith("Hemoglobin")  # kept per ruleset
    rule = rules / "anemia" / "low-hemoglobin.yaml"
    rule.write_text(rule.read_text().replace("title: Hemoglobin below", "title: Haemoglobin below"))
    assert holder.reload(force=True)
    second = c.get("/healthz").get_json()["ruleset"]["sha256"]
    assert second != first
    assert c.get("/rules/anemia.low-hemoglobin").get_json()["title"].startswith("Haemoglobin")
    (rules / "anemia" / "broken.yaml").write_text("id: [unclosed\n")
    assert not holder.reload(force=True)
    assert c.get("/healthz").get_json()["ruleset"]["sha256"] == second   # still the last good ruleset
    assert c.get("/cds-services").status_code == 200
