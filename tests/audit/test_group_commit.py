"""Appends from many threads and processes: records that arrive while a commit runs go together in the next
transaction (group commit), each caller returns only once its own record is committed, and the log stays one
valid chain (SQLite and PostgreSQL)."""
from __future__ import annotations

import multiprocessing as mp
import os
import threading

import sqlalchemy as sa

from audit import AuditStore
from audit.store import records

from .conftest import AUDIT_KEY
from .test_store import decision


def _threads(store, names, results):
    def one(name):
        try:
            results[name] = store.record_evaluation(decision(name))
        except Exception as e:  # noqa: BLE001 - the test looks at it
            results[name] = e
    ts = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in ts:
        t.start()
    return ts


def test_records_that_arrive_during_a_commit_are_committed_together(store):
    batches = []
    real = store._commit_batch
    release = threading.Event()

    def slow_first(batch):
        batches.append(len(batch))
        if len(batches) == 1:
            release.wait(30)  # the first commit is still running while the others arrive
        real(batch)

    store._commit_batch = slow_first
    store._group = None  # a committer that calls the patched method
    results: dict = {}
    first = _threads(store, ["first"], results)
    while not batches:
        threading.Event().wait(0.01)
    rest = _threads(store, [f"t{i}" for i in range(6)], results)
    while len(store._committer._queue) < 6:
        threading.Event().wait(0.01)
    assert "t0" not in results  # nobody returns before its record is committed
    release.set()
    for t in first + rest:
        t.join(30)
    assert batches == [1, 6]
    assert sorted(results.values()) == list(range(1, 8))
    assert store.verify().ok and store.head()[0] == 7


def test_a_record_that_cannot_be_committed_fails_alone(store):
    real = store._commit_batch
    release = threading.Event()
    calls = []

    def failing(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            release.wait(30)
        if any(p.values.get("hook_instance") == "bad" for p in batch):
            raise RuntimeError("the database refused it")
        real(batch)

    store._commit_batch = failing
    store._group = None
    results: dict = {}
    first = _threads(store, ["first"], results)
    while not calls:
        threading.Event().wait(0.01)
    rest = _threads(store, ["a", "bad", "b"], results)
    while len(store._committer._queue) < 3:
        threading.Event().wait(0.01)
    release.set()
    for t in first + rest:
        t.join(30)
    assert isinstance(results["bad"], RuntimeError)
    assert all(isinstance(results[n], int) for n in ("first", "a", "b"))
    rep = store.verify()
    assert rep.ok and rep.records == 3


def _process(url, schema, tag, threads, each, q, barrier):
    try:
        s = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY)
        barrier.wait(60)
        results: dict = {}
        ts = []
        for k in range(each):
            ts += _threads(s, [f"{tag}-{k}-{i}" for i in range(threads)], results)
        for t in ts:
            t.join(120)
        s.close()
        bad = [repr(v) for v in results.values() if not isinstance(v, int)]
        q.put((bad, sorted(results.values())))
    except Exception as e:  # report to the parent instead of dying silently
        q.put(([repr(e)], []))


def test_threads_in_several_processes_keep_one_chain(store_url):
    url, schema = store_url
    AuditStore.from_config(url, schema=schema, key=AUDIT_KEY).close()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_process, args=(url, schema, f"p{n}", 6, 4, q, barrier)) for n in range(3)]
    for p in procs:
        p.start()
    results = [q.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(60)
    assert [r[0] for r in results] == [[]] * 3
    seqs = sorted(s for r in results for s in r[1])
    assert seqs == list(range(1, 73))  # every caller got its own, committed, record number
    s = AuditStore.from_config(url, schema=schema, key=AUDIT_KEY)
    rep = s.verify()
    assert rep.ok and rep.records == 72, rep.problems
    with s.engine.connect() as conn:
        assert len(set(conn.execute(sa.select(records.c.hook_instance)).scalars())) == 72
    s.close()


def test_a_forked_child_gets_its_own_committer(store):
    store.record_evaluation(decision("parent"))
    parent = store._committer
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            store.engine.dispose(close=False)
            ok = store._committer is not parent and store.record_evaluation(decision("child")) == 2
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    assert store.verify().ok and store.head()[0] == 2


def test_sqlite_durability_is_full_unless_normal_is_asked_for(tmp_path, monkeypatch):
    import pytest

    def level(url):
        s = AuditStore.from_config(url, key=AUDIT_KEY)
        try:
            with s.engine.connect() as conn:
                return conn.exec_driver_sql("PRAGMA synchronous").scalar()
        finally:
            s.close()

    monkeypatch.delenv("PACECDS_AUDIT_SQLITE_SYNCHRONOUS", raising=False)
    assert level(f"sqlite:///{tmp_path}/a.db") == 2  # FULL
    monkeypatch.setenv("PACECDS_AUDIT_SQLITE_SYNCHRONOUS", "normal")
    assert level(f"sqlite:///{tmp_path}/b.db") == 1  # NORMAL
    monkeypatch.setenv("PACECDS_AUDIT_SQLITE_SYNCHRONOUS", "OFF")
    with pytest.raises(ValueError, match="PACECDS_AUDIT_SQLITE_SYNCHRONOUS must be FULL or NORMAL"):
        AuditStore.from_config(f"sqlite:///{tmp_path}/c.db", key=AUDIT_KEY)
