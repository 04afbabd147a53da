"""Audit store fixtures: every store test runs on SQLite, and on PostgreSQL when
PACECDS_TEST_DATABASE_URL names a server (a fresh database per test run, a fresh
schema per test, all dropped afterwards)."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from audit import AuditStore
from tests.conftest import throwaway_pg_database

AUDIT_KEY = b"k" * 32


@pytest.fixture(scope="session")
def pg_database_url():
    with throwaway_pg_database("pacecds_test", "PostgreSQL tests") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path, monkeypatch):
    """(url, schema) for a brand-new, empty store."""
    monkeypatch.setenv("PACECDS_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("PACECDS_DATABASE_URL", raising=False)
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/audit.db", None
    base = request.getfixturevalue("pg_database_url")
    return base, "t_" + uuid.uuid4().hex[:12]


@pytest.fixture
def store(store_url):
    url, schema = store_url
    s = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY)
    yield s
    s.close()


def raw_exec(store: AuditStore, sql: str, **params):
    """Tamper with the log behind the store's back, as a person with database access could."""
    with store.engine.begin() as conn:
        return conn.execute(sa.text(sql), params)
