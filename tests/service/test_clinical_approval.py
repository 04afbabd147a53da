"""Issue 12 item 8: the service says clearly when the serving release has no clinical sign-off (/healthz, the log
at start, `pacecds serve`, the console header), and PACECDS_REQUIRE_CLINICAL_APPROVAL=1 refuses such a release at
start and on reload."""
from __future__ import annotations

import logging
import shutil

import pytest
import yaml

from pacecds.cli import main as pacecds
from server import create_app
from service.config import ConfigError, ServiceConfig
from tests.service.conftest import ISS, PUBLIC_JWKS, RULES_DIR


@pytest.fixture
def released(tmp_path):
    """A copy of the bundled release (its only approval is the project's content review, not a clinical one)."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    return rules


def serving(rules, audit, **extra):
    # trusted issuers: not a development run, so the release manifest is checked as in production
    return ServiceConfig(env="test", rules_dir=str(rules), audit_store=audit, public_url="https://cds.example.org",
                         trusted_issuers=[{"iss": ISS, "jwks": PUBLIC_JWKS}], **extra)


def sign_off(rules):
    assert pacecds(["release", str(rules), "--approved-by", "Dr Ada Lovelace", "--role",
                    "clinical governance chair"]) == 0


def test_bundled_release_has_no_clinical_approval_and_healthz_says_so(released, audit, caplog):
    manifest = yaml.safe_load((released / "ruleset.yaml").read_text())
    assert [a.get("kind") for a in manifest["approvals"]] == ["content-review"]
    with caplog.at_level(logging.WARNING, logger="pacecds.service"):
        app = create_app(serving(released, audit))
    body = app.test_client().get("/healthz").get_json()
    assert body["status"] == "ok"
    assert body["approval"]["clinical"] is False
    assert "has no clinical approval" in body["approval"]["warning"]
    assert f"{manifest['name']} {manifest['version']}" in body["approval"]["warning"]
    assert any("has no clinical approval" in r.getMessage() for r in caplog.records)


def test_required_clinical_approval_refuses_to_start(released, audit):
    with pytest.raises(ConfigError, match="no clinical approval") as info:
        create_app(serving(released, audit, require_clinical_approval=True))
    assert "PACECDS_REQUIRE_CLINICAL_APPROVAL" in str(info.value)


def test_a_clinical_sign_off_is_recorded_by_release_and_served(released, audit):
    sign_off(released)
    manifest = yaml.safe_load((released / "ruleset.yaml").read_text())
    clinical = [a for a in manifest["approvals"] if a.get("kind") == "clinical"]
    assert [(a["by"], a["role"]) for a in clinical] == [("Dr Ada Lovelace", "clinical governance chair")]
    app = create_app(serving(released, audit, require_clinical_approval=True))
    approval = app.test_client().get("/healthz").get_json()["approval"]
    assert approval["clinical"] is True and approval["approvedBy"][0]["by"] == "Dr Ada Lovelace"
    assert "warning" not in approval


def test_reviewed_by_is_not_a_clinical_sign_off(released, audit):
    assert pacecds(["release", str(released), "--reviewed-by", "pacecds content team"]) == 0
    with pytest.raises(ConfigError, match="no clinical approval"):
        create_app(serving(released, audit, require_clinical_approval=True))


def test_required_approval_also_guards_a_reload(released, audit):
    sign_off(released)
    app = create_app(serving(released, audit, require_clinical_approval=True))
    holder = app.extensions["pacecds"]._ruleset_source
    before = holder.current.sha256
    # a new release (new version: the sign-off of 1.3.0 does not carry over) with a content review only
    rule = released / "thyroid" / "tsh-abnormal.yaml"
    rule.write_text(rule.read_text().replace("title: ", "title: (edited) ", 1))
    assert pacecds(["release", str(released), "--version", "9.9.9", "--reviewed-by", "content team"]) == 0
    assert holder.reload(force=True) is False
    assert holder.current.sha256 == before
    assert any("no clinical approval" in e for e in holder.last_errors)


def test_the_setting_is_read_from_the_environment():
    assert ServiceConfig.from_env({"PACECDS_REQUIRE_CLINICAL_APPROVAL": "1"}).require_clinical_approval is True
    assert ServiceConfig.from_env({}).require_clinical_approval is False
    with pytest.raises(ConfigError, match="PACECDS_REQUIRE_CLINICAL_APPROVAL='maybe'"):
        ServiceConfig.from_env({"PACECDS_REQUIRE_CLINICAL_APPROVAL": "maybe"})


def test_serve_warns_at_start(monkeypatch, capsys):
    import pacecds.serve as serve_module

    for var in ("PACECDS_TRUSTED_ISSUERS", "PACECDS_ENV", "PACECDS_REQUIRE_CLINICAL_APPROVAL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PACECDS_AUDIT", "0")
    started = []
    monkeypatch.setattr(serve_module, "run_gunicorn", lambda *a, **k: started.append(a))
    assert pacecds(["serve", "--port", "18097"]) == 0 and started
    err = capsys.readouterr().err
    assert "WARNING: release pacecds-core" in err and "has no clinical approval" in err
    assert "PACECDS_REQUIRE_CLINICAL_APPROVAL=1" in err


def test_serve_refuses_when_approval_is_required(monkeypatch, capsys):
    for var in ("PACECDS_TRUSTED_ISSUERS", "PACECDS_ENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PACECDS_AUDIT", "0")
    monkeypatch.setenv("PACECDS_REQUIRE_CLINICAL_APPROVAL", "1")
    assert pacecds(["serve", "--port", "18097"]) == 2
    assert "no clinical approval" in capsys.readouterr().err


def test_console_header_marks_a_release_without_clinical_approval(released, audit):
    app = create_app(ServiceConfig(env="test", rules_dir=str(released), audit_store=audit))
    page = app.test_client().get("/console/rules", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert page.status_code == 200
    assert "no clinical approval" in page.get_data(as_text=True)
    sign_off(released)
    app = create_app(ServiceConfig(env="test", rules_dir=str(released), audit_store=audit))
    page = app.test_client().get("/console/rules", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert "no clinical approval" not in page.get_data(as_text=True)
