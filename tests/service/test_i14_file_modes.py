"""Issue 14, item 10: the SQLite audit log (lab values, medication names), its key and the jti store are
created readable by their owner only (files 0600, the var directory 0700), whatever the umask allows."""
from __future__ import annotations

import os
import stat

import pytest

from audit import AuditStore
from audit.config import load_audit_key
from service.auth import SqliteReplayStore
from tests.service.conftest import fixture


@pytest.fixture
def open_umask():
    old = os.umask(0o022)  # the common default: files 0644, directories 0755
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_item10_audit_database_key_and_jti_store_are_private(tmp_path, monkeypatch, open_umask):
    var = tmp_path / "var"
    monkeypatch.setenv("PACECDS_VAR_DIR", str(var))
    for name in ("PACECDS_DATABASE_URL", "PACECDS_AUDIT_KEY"):
        monkeypatch.delenv(name, raising=False)
    store = AuditStore.from_config()
    try:
        item = fixture("spec-feedback-overridden-with-reason.json")["feedback"][0]
        assert store.record_feedback("pacing-review", item)
    finally:
        store.close()
    assert load_audit_key()  # the pseudonym key, created on first use
    replay = SqliteReplayStore(str(var / "pacecds-jti.sqlite"))
    assert replay.add("iss", "jti-1", 2e9)

    assert _mode(var) == 0o700
    files = [p for p in var.iterdir() if p.is_file()]
    assert {p.suffix for p in files} >= {".db", ".key", ".sqlite"}, files
    for p in files:
        assert _mode(p) == 0o600, (p.name, oct(_mode(p)))
