"""The jti replay store in the audit database (issue 14 item 11): insert-if-absent is atomic, entries expire."""
from __future__ import annotations

import threading
import time

from audit import AuditStore, DatabaseReplayStore

from .conftest import AUDIT_KEY


def test_a_jti_is_accepted_once_until_it_expires(store):
    now = [1000.0]
    r = DatabaseReplayStore(store.engine, clock=lambda: now[0])
    assert r.add("iss", "a", 1060.0) is True
    assert r.add("iss", "a", 1060.0) is False
    assert r.add("other-iss", "a", 1060.0) is True     # jti is per issuer
    now[0] = 1061.0                                      # expired: the id may be used again
    assert r.add("iss", "a", 1200.0) is True
    assert r.add("iss", "a", 1200.0) is False


def test_concurrent_adds_of_one_jti_from_two_hosts_accept_exactly_one(store_url):
    url, schema = store_url
    hosts = [AuditStore.from_config(url, schema=schema, key=AUDIT_KEY) for _ in range(2)]
    try:
        stores = [DatabaseReplayStore(h.engine) for h in hosts]
        for round_ in range(10):
            jti = f"race-{round_}"
            got: list[bool] = []
            barrier = threading.Barrier(6)

            def add(s, jti=jti, got=got, barrier=barrier):
                barrier.wait(30)
                got.append(s.add("iss", jti, time.time() + 300))

            threads = [threading.Thread(target=add, args=(stores[i % 2],)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(got) == [False] * 5 + [True], (round_, got)
    finally:
        for h in hosts:
            h.close()
