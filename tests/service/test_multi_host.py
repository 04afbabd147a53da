"""Issue 14 item 11: several hosts on one database share what every worker must see.

Two app instances with their own engines on one database stand for two `pacecds serve` hosts behind a load
balancer: a token accepted by one is refused by the other (the jti store is in the database), and decisions
written concurrently by both form one chain that verifies."""
from __future__ import annotations

import threading
import time

import jwt
import pytest
import sqlalchemy as sa

from audit import AuditStore, DatabaseReplayStore
from service.auth import MemoryReplayStore, SqliteReplayStore
from service.config import ServiceConfig
from tests.conftest import throwaway_pg_database

from .conftest import PUBLIC_URL, bearer, mint, patient, patient_view_request, service_aud

PV = "pacing-review"
KEY = b"multi-host-audit-key-0123456789ab"


def _call(client, token):
    return client.post(f"/cds-services/{PV}", json=patient_view_request({"patient": patient()}),
                       headers=bearer(token))


@pytest.fixture
def shared_pg_url():
    """A database of its own (created and dropped here), as the hosts' PACECDS_DATABASE_URL."""
    with throwaway_pg_database("pacecds_hosts", "two hosts on one PostgreSQL") as url:
        yield url


def _host(make_app, issuers, url):
    """One host, configured as PACECDS_DATABASE_URL configures it: the service opens its own audit store (own
    engine and pool) on the shared database, and the jti store with it. The key comes from PACECDS_AUDIT_KEY."""
    app = make_app(public_url=PUBLIC_URL, trusted_issuers=issuers, database_url=url, audit_store=None)
    return app, app.extensions["pacecds"].audit_store


@pytest.fixture(autouse=True)
def _audit_key(monkeypatch, tmp_path):
    monkeypatch.setenv("PACECDS_AUDIT_KEY", KEY.decode())   # the same key on every host
    monkeypatch.setenv("PACECDS_VAR_DIR", str(tmp_path / "var"))


def test_two_hosts_on_one_postgresql_refuse_replays_and_keep_one_chain(make_app, issuers, shared_pg_url):
    (app_a, store_a), (app_b, store_b) = (_host(make_app, issuers, shared_pg_url) for _ in range(2))
    assert store_a is not store_b and store_a.engine is not store_b.engine
    try:
        a, b = app_a.test_client(), app_b.test_client()
        for first, second in ((a, b), (b, a)):
            token = mint(service_aud(PV))
            assert _call(first, token).status_code == 200
            replay = _call(second, token)
            assert replay.status_code == 401 and replay.headers["WWW-Authenticate"] == "Bearer"
            # a new token carrying the same jti is the same replay
            jti = jwt.decode(token, options={"verify_signature": False})["jti"]
            assert _call(second, mint(service_aud(PV), claims={"jti": jti})).status_code == 401

        # concurrent decisions from both hosts, two threads each
        per_thread, results, errors = 8, [], []
        barrier = threading.Barrier(4)

        def client(app):
            c = app.test_client()
            try:
                barrier.wait(30)
                for _ in range(per_thread):
                    results.append(_call(c, mint(service_aud(PV))).status_code)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(app,)) for app in (app_a, app_a, app_b, app_b)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and results == [200] * (4 * per_thread), (errors, results)
        assert time.monotonic() - t0 < 120

        auditor = AuditStore.from_config(shared_pg_url, key=KEY)
        try:
            rep = auditor.verify()
            assert rep.ok and rep.seals_checked, rep.problems[:3]
            assert rep.records == rep.head_seq == 2 + 4 * per_thread
            with auditor.engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM pacecds_jti")).scalar_one() == 2 + 4 * per_thread
        finally:
            auditor.close()
        assert isinstance(app_a.extensions["pacecds"].audit_store, AuditStore)
    finally:
        store_a.close()
        store_b.close()


def test_two_app_instances_on_one_sqlite_database_share_the_jti_table(make_app, issuers, tmp_path):
    """The same code path without a server: PACECDS_DATABASE_URL naming one SQLite file."""
    url = f"sqlite:///{tmp_path}/shared.db"
    (app_a, store_a), (app_b, store_b) = (_host(make_app, issuers, url) for _ in range(2))
    try:
        token = mint(service_aud(PV))
        assert _call(app_a.test_client(), token).status_code == 200
        assert _call(app_b.test_client(), token).status_code == 401
        assert store_a.verify().ok and store_a.count() == 1
    finally:
        store_a.close()
        store_b.close()


def test_database_url_moves_the_jti_store_into_the_database(tmp_path):
    env = {"PACECDS_TRUSTED_ISSUERS": "/x/issuers.json", "PACECDS_PUBLIC_URL": "https://c.org",
           "PACECDS_VAR_DIR": str(tmp_path)}
    assert ServiceConfig.from_env(env).replay_db == str(tmp_path / "pacecds-jti.sqlite")   # one host: a file
    cfg = ServiceConfig.from_env({**env, "PACECDS_DATABASE_URL": f"sqlite:///{tmp_path}/a.db"})
    assert cfg.replay_db is None and cfg.database_url == f"sqlite:///{tmp_path}/a.db"
    # an explicit PACECDS_REPLAY_DB still wins
    cfg = ServiceConfig.from_env({**env, "PACECDS_DATABASE_URL": "sqlite:///x.db", "PACECDS_REPLAY_DB": "j.db"})
    assert cfg.replay_db == "j.db"


def test_authenticator_uses_the_database_replay_store(tmp_path, issuers):
    from service.auth import Authenticator, replay_store_for
    url = f"sqlite:///{tmp_path}/a.db"
    store = AuditStore.from_config(url, key=KEY)
    try:
        cfg = ServiceConfig(env="test", public_url=PUBLIC_URL, trusted_issuers=issuers, database_url=url)
        auth = Authenticator.from_config(cfg, store)
        assert isinstance(auth.replay, DatabaseReplayStore) and auth.replay.engine is store.engine
        assert isinstance(replay_store_for(cfg.replace(database_url=None)), MemoryReplayStore)
        assert isinstance(replay_store_for(cfg.replace(replay_db=str(tmp_path / "j.db"))), SqliteReplayStore)
    finally:
        store.close()
