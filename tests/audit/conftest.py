"""Audit store fixtures: every store test runs on SQLite, and on PostgreSQL when
PACECDS_TEST_DATABASE_URL names a server (a fresh database per test run, a fresh
schema per test, all dropped afterwards)."""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from audit import AuditStore

PG_URL = os.environ.get("PACECDS_TEST_DATABASE_URL")
AUDIT_KEY = b"k" * 32


def _pg_driver_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@pytest.fixture(scope="session")
def pg_database_url():
    if not PG_URL:
        pytest.skip("PostgreSQL tests need PACECDS_TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    admin = sa.create_engine(_pg_driver_url(PG_URL), isolation_level="AUTOCOMMIT")
    name = "pacecds_test_" + uuid.uuid4().hex[:12]
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as e:
        # .ci/run names the local server by default; a machine without one reports a skip, not an error
        admin.dispose()
        pytest.skip(f"PostgreSQL at PACECDS_TEST_DATABASE_URL is not reachable: {str(e.orig).splitlines()[0]}")
    url = sa.engine.make_url(_pg_driver_url(PG_URL)).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


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
