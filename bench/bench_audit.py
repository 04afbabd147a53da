"""Decision-log benchmark: append latency (one writer), throughput (several processes),
verify and stats speed. SQLite always; PostgreSQL when PACECDS_TEST_DATABASE_URL is set.

    python bench/bench_audit.py [--records 2000] [--procs 4]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from audit import AuditStore, build_decision_record  # noqa: E402
from tests.audit.fakes import Ruleset, result  # noqa: E402

KEY = b"b" * 32


def rec():
    return build_decision_record(result(), hook="patient-view", hook_instance=str(uuid.uuid4()),
                                 service_id="pacecds-patient-view", patient_id="p", latency_ms=5, key=KEY,
                                 ruleset=Ruleset())


def _writer(url, schema, n, q):
    s = AuditStore.from_config(url, schema=schema, key=KEY)
    r = rec()
    for _ in range(n):
        s.record_evaluation(r)
    s.close()
    q.put(n)


def bench(label, url, schema, n, procs):
    s = AuditStore.from_config(url, schema=schema, key=KEY)
    lat = []
    for _ in range(n):
        r = rec()
        t = time.perf_counter()
        s.record_evaluation(r)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    each = n // procs
    t = time.perf_counter()
    ps = [ctx.Process(target=_writer, args=(url, schema, each, q)) for _ in range(procs)]
    for p in ps:
        p.start()
    for _ in ps:
        q.get()
    for p in ps:
        p.join()
    par = time.perf_counter() - t
    t = time.perf_counter()
    rep = s.verify()
    ver = time.perf_counter() - t
    t = time.perf_counter()
    s.stats()
    st = time.perf_counter() - t
    assert rep.ok, rep.problems[:3]
    print(f"{label}: append p50 {statistics.median(lat):.2f} ms, p95 {lat[int(len(lat) * .95)]:.2f} ms, "
          f"max {lat[-1]:.2f} ms (1 writer, {n} records); {procs} processes: {each * procs / par:.0f} records/s; "
          f"verify {rep.records} records in {ver:.2f} s ({rep.records / ver:.0f}/s); stats in {st:.2f} s")
    s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--procs", type=int, default=4)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        bench("sqlite", f"sqlite:///{d}/bench.db", None, a.records, a.procs)
    pg = os.environ.get("PACECDS_TEST_DATABASE_URL")
    if pg:
        import sqlalchemy as sa
        schema = "bench_" + uuid.uuid4().hex[:8]
        try:
            bench("postgresql", pg, schema, a.records, a.procs)
        finally:
            eng = sa.create_engine(pg.replace("postgresql://", "postgresql+psycopg://", 1))
            with eng.begin() as c:
                c.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            eng.dispose()


if __name__ == "__main__":
    main()
