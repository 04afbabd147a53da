"""HTTP benchmark: the service as `pacecds serve` runs it (gunicorn, pacecds.worker), on loopback, with a bounded
async load generator (aiohttp).

As deployed, by default: the decision log on (SQLite in the run's temporary directory) and a new patient on every
request (new ids, values from one of 16 seeded patients; `--patients repeat` sends the same patient again and
again). `--audit off|sqlite|postgres|URL`: `postgres` creates a throwaway database on the local server
(PACECDS_BENCH_PG_URL, default postgresql://postgres@127.0.0.1:5432/postgres) and drops it afterwards.

For each concurrency level: `concurrency` client tasks share one connection pool and send
POST /cds-services/pacing-review (a fresh hookInstance each time) until `requests` were sent or `duration`
seconds passed. Reported: throughput (completed requests / wall time), p50 / p99 latency, errors, the server's
CPU per request, and (log on) whether every 200 was audited: the records in the store after the run equal the
200 responses, warm-up included.

The load generator runs on the same machine as the server and takes CPU from it: on 2 cores the
numbers are a floor for what a separate client machine would see.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson

from .generate import make_request, unique_hemoglobin
from .inproc import percentile

ROOT = Path(__file__).resolve().parent.parent
SERVICE_PATH = "/cds-services/pacing-review"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class ThrowawayPostgres:
    """A database created on the local PostgreSQL for one run, dropped (with its connections) afterwards."""

    def __init__(self, admin_url: str | None = None):
        import sqlalchemy as sa

        from audit.store import driver_url

        self.name = f"pacecds_bench_{uuid.uuid4().hex[:10]}"
        admin = sa.engine.make_url(driver_url(admin_url or os.environ.get("PACECDS_BENCH_PG_URL") or PG_ADMIN_URL))
        self._admin = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        self.url = admin.set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        with self._admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin.dispose()


class Server:
    """`pacecds serve` (gunicorn with pacecds.worker, preloaded app, as deployed) on 127.0.0.1; or, with
    `app`, the same gunicorn settings serving another WSGI app (the HTTP floor). Stopped (its process group
    only) on exit. `audit`: off | sqlite | postgres | a database URL."""

    def __init__(self, port: int = 0, workers: int = 2, threads: int = 4, rules: str | None = None,
                 audit: str = "sqlite", app: str | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="pacecds-bench-")
        self._pg: ThrowawayPostgres | None = None
        env = dict(os.environ, PACECDS_ENV="development", PACECDS_VAR_DIR=self._tmp.name,
                   PACECDS_AUDIT_KEY="bench-audit-key-0123456789abcdef")
        env.pop("PACECDS_TRUSTED_ISSUERS", None)
        env.pop("PACECDS_DATABASE_URL", None)
        if rules:
            env["PACECDS_RULES"] = str(rules)
        self.database_url: str | None = None
        if audit == "off":
            env["PACECDS_AUDIT"] = "0"
        elif audit == "sqlite":
            self.database_url = f"sqlite:///{self._tmp.name}/audit.db"
        elif audit == "postgres":
            self._pg = ThrowawayPostgres()
            self.database_url = self._pg.url
        else:  # a database URL
            self.database_url = audit
        if self.database_url:
            env["PACECDS_DATABASE_URL"] = self.database_url
        if app is None:
            cmd = [sys.executable, "-m", "pacecds", "serve", "--port", str(self.port), "--workers", str(workers),
                   "--threads", str(threads)]
        else:
            cmd = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{self.port}",
                   "-k", "pacecds.worker.PacecdsWorker", "--threads", str(threads), "--keep-alive", "5",
                   "--timeout", "30", "--log-level", "warning", app]
        self._log = open(Path(self._tmp.name) / "server.log", "wb")
        # the access log (one line per request, as deployed) goes to standard output: discarded here
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._log,
                                     start_new_session=True)

    def audited(self) -> int | None:
        """Evaluation records in the store (None with the log off)."""
        if not self.database_url:
            return None
        import sqlalchemy as sa

        from audit.store import AuditStore, records
        store = AuditStore.open_existing(self.database_url)
        try:
            with store.engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(records)
                                    .where(records.c.kind == "evaluation")).scalar_one()
        finally:
            store.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/healthz", timeout=2).read()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("service did not start: " + self.log_tail())
                time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """user+system CPU of gunicorn and its workers so far (Linux /proc; 0.0 elsewhere)."""
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            pid, ppid = int(stat.parent.name), int(fields[1])
            if pid == self.proc.pid or ppid == self.proc.pid:
                total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def log_tail(self) -> str:
        return (Path(self._tmp.name) / "server.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group we started: gunicorn and its workers
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        self._tmp.cleanup()
        if self._pg is not None:
            self._pg.drop()
            self._pg = None

    def __enter__(self):
        self.wait_ready()
        return self

    def __exit__(self, *exc):
        self.stop()


def body_factory(size: str, patients: str = "new"):
    """Request bytes with a fresh hookInstance each call (byte replaces: no per-request serialisation).

    patients="new": every request a patient never seen before: the ids of the patient and of all its resources
    are new (a counter), its values those of one of 16 seeded patients in turn. "repeat": the same patient."""
    if patients not in ("new", "repeat"):
        raise ValueError("patients must be new or repeat")
    bases = []
    for seed in range(16 if patients == "new" else 1):
        request = make_request(size, patient_id=f"bench-base-{seed:02d}" if patients == "new" else "bench-standard",
                               seed=seed)
        template = orjson.dumps(request)
        marker = request["hookInstance"].encode()
        assert template.count(marker) == 1
        bases.append((template.replace(marker, b"@HOOK@"), request["context"]["patientId"].encode()))
    counter = iter(range(10**12))

    def make() -> bytes:
        i = next(counter)
        template, pid = bases[i % len(bases)]
        if patients == "new":
            template = template.replace(pid, f"bench-{os.getpid()}-{i:08d}".encode())
        return template.replace(b"@HOOK@", str(uuid.uuid4()).encode())

    return make


class _Aiohttp:
    """aiohttp: measured here at about a third of httpx's CPU per request (0.7 vs 2.1 ms for a 150 kB POST),
    which matters when the client and the server share 2 cores."""

    def __init__(self, url: str, concurrency: int):
        import aiohttp

        self._errors = (aiohttp.ClientError, asyncio.TimeoutError)
        self._session = aiohttp.ClientSession(
            base_url=url, connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=30), headers={"Content-Type": "application/json"})

    async def post(self, body: bytes) -> str:
        return (await self.exchange(body))[0]

    async def exchange(self, body: bytes) -> tuple[str, bytes]:
        """(status or transport error name, response body)."""
        try:
            async with self._session.post(SERVICE_PATH, data=body) as r:
                return str(r.status), await r.read()
        except self._errors as e:
            return type(e).__name__, b""

    async def close(self):
        await self._session.close()


CLIENTS = {"aiohttp": _Aiohttp}


async def load(url: str, make_body, concurrency: int, requests: int, duration: float,
               client_name: str = "aiohttp") -> dict:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    sent = 0
    client = CLIENTS[client_name](url, concurrency)
    try:
        # warm-up: open the connections and let each worker see the patient once (not measured)
        warm = await asyncio.gather(*(client.post(make_body()) for _ in range(max(concurrency, 8))))
        warm_ok = sum(1 for w in warm if w == "200")
        started = time.perf_counter()
        cpu_started = time.process_time()
        deadline = started + duration

        async def worker():
            nonlocal sent
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                body = make_body()
                t = time.perf_counter()
                key = await client.post(body)
                latencies.append(time.perf_counter() - t)
                statuses[key] = statuses.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        client_cpu = time.process_time() - cpu_started
    finally:
        await client.close()
    ms = [x * 1000 for x in latencies]
    ok = statuses.get("200", 0)
    return {
        "client": client_name,
        "warmup_ok": warm_ok,
        "concurrency": concurrency,
        "requests": len(latencies),
        "ok": ok,
        "errors": len(latencies) - ok,
        "statuses": statuses,
        "seconds": wall,
        "client_cpu_s": client_cpu,  # CPU the load generator itself took from the 2 cores
        "throughput_rps": ok / wall if wall else 0.0,
        "p50_ms": statistics.median(ms) if ms else None,
        "p90_ms": percentile(ms, 90) if ms else None,
        "p99_ms": percentile(ms, 99) if ms else None,
        "max_ms": max(ms) if ms else None,
    }


def run(concurrency=(1, 16, 64), requests: int = 3000, duration: float = 20.0, workers: int = 2, threads: int = 4,
        size: str = "standard", rules: str | None = None, port: int = 0, audit: str = "sqlite",
        client: str = "aiohttp", floor: bool = False, patients: str = "new") -> dict:
    """floor: serve bench.floor_app (read and parse the body, answer no cards) instead of pacecds."""
    make_body = body_factory(size, patients)
    runs = []
    app = "bench.floor_app:app" if floor else None
    with Server(port=port, workers=workers, threads=threads, rules=rules, audit="off" if floor else audit,
                app=app) as server:
        ok_total = 0
        for c in concurrency:
            cpu = server.cpu_seconds()
            row = asyncio.run(load(server.url, make_body, c, requests, duration, client))
            # includes the warm-up requests: a slight over-estimate of the server's CPU per request
            row["server_cpu_ms_per_request"] = (server.cpu_seconds() - cpu) * 1000 / max(1, row["requests"])
            ok_total += row["ok"] + row["warmup_ok"]
            runs.append(row)
        audited = None if floor else server.audited()
    return {
        "server": {"workers": workers, "threads": threads, "worker_class": "pacecds.worker.PacecdsWorker",
                   "app": app or "pacecds serve",
                   "audit": audit if audit in ("off", "sqlite", "postgres") and not floor else
                   "off" if floor else "database"},
        "size": size,
        "patients": patients,
        "request_bytes": len(make_body()),
        "loadavg_before": os.getloadavg(),
        "runs": runs,
        # every 200 (warm-up included) has its record: the store holds exactly as many decisions
        "responses_200": ok_total,
        "records": audited,
        "every_200_audited": None if audited is None else audited == ok_total,
    }


# The side-by-side table of issue 16: log off / SQLite / PostgreSQL, new and repeated patients.
MATRIX = (("off", "new"), ("off", "repeat"), ("sqlite", "new"), ("sqlite", "repeat"), ("postgres", "new"))


def matrix(concurrency=(1, 16), requests: int = 3000, duration: float = 20.0, workers: int = 2, threads: int = 4,
           size: str = "standard", rules: str | None = None, client: str = "aiohttp", progress=None) -> dict:
    rows = []
    for audit, patients in MATRIX:
        if progress:
            progress(f"audit {audit}, {patients} patients ...")
        r = run(concurrency=concurrency, requests=requests, duration=duration, workers=workers, threads=threads,
                size=size, rules=rules, audit=audit, client=client, patients=patients)
        rows.append({"audit": audit, "patients": patients, **{k: r[k] for k in (
            "runs", "responses_200", "records", "every_200_audited", "loadavg_before", "request_bytes")}})
    return {"server": {"workers": workers, "threads": threads, "app": "pacecds serve"}, "size": size, "rows": rows}


def matrix_table(result: dict) -> str:
    """Markdown: one line per variant and concurrency; CPU ratio against log off with the same patients."""
    out = ["| log | patients | concurrency | throughput | p50 | p99 | server CPU / request | CPU vs log off "
           "| p99 vs log off | every 200 audited |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    base = {(r["patients"], run["concurrency"]): run for r in result["rows"] if r["audit"] == "off" for run in r["runs"]}
    for r in result["rows"]:
        for run in r["runs"]:
            b = base.get((r["patients"], run["concurrency"]))
            cpu = run["server_cpu_ms_per_request"]
            ratio = f"{cpu / b['server_cpu_ms_per_request']:.2f}x" if b and r["audit"] != "off" else ""
            p99 = f"{run['p99_ms'] / b['p99_ms']:.2f}x" if b and r["audit"] != "off" and b["p99_ms"] else ""
            audited = "" if r["every_200_audited"] is None else (
                f"{'yes' if r['every_200_audited'] else 'NO'} ({r['records']} / {r['responses_200']})")
            err = f" ({run['errors']} errors)" if run["errors"] else ""
            out.append(f"| {r['audit']} | {r['patients']} | {run['concurrency']} | {run['throughput_rps']:.0f} req/s{err} "
                       f"| {run['p50_ms']:.1f} ms | {run['p99_ms']:.1f} ms | {cpu:.1f} ms | {ratio} | {p99} | {audited} |")
    return "\n".join(out)


async def _isolation_load(url: str, patients: int, rounds: int, size: str) -> dict:
    """All patients' requests in flight at once, `rounds` times; each response checked against its patient."""
    import re

    bodies = [orjson.dumps(make_request(size, patient_id=f"iso-{i}", seed=i, hemoglobin=unique_hemoglobin(i)))
              for i in range(patients)]
    pattern = re.compile(rb"iso-(\d+)(?![\d])")
    violations: list[str] = []
    statuses: dict[str, int] = {}
    client = _Aiohttp(url, patients)

    async def one(i: int):
        status, payload = await client.exchange(bodies[i])
        statuses[status] = statuses.get(status, 0) + 1
        if status != "200":
            violations.append(f"iso-{i}: HTTP {status}")
            return
        others = {m.group(0).decode() for m in pattern.finditer(payload)} - {f"iso-{i}"}
        if others:
            violations.append(f"iso-{i}: response mentions {sorted(others)}")
        cards = orjson.loads(payload)["cards"]
        anaemia = [c for c in cards if c.get("extension", {}).get("pacecds.rule", {}).get("id")
                   == "anemia.low-hemoglobin"]
        if len(anaemia) != 1 or f"{unique_hemoglobin(i):.1f} g/dL" not in anaemia[0]["summary"]:
            violations.append(f"iso-{i}: anaemia card missing or not its own: {[c['summary'] for c in anaemia]}")

    try:
        for _ in range(rounds):
            await asyncio.gather(*(one(i) for i in range(patients)))
    finally:
        await client.close()
    return {"patients": patients, "rounds": rounds, "checked": sum(statuses.values()), "statuses": statuses,
            "violations": violations[:100], "ok": not violations and sum(statuses.values()) == patients * rounds}


def isolation(patients: int = 64, rounds: int = 10, workers: int = 2, threads: int = 8, size: str = "small",
              rules: str | None = None) -> dict:
    """Patient isolation over HTTP: gunicorn with worker threads, every patient's request in flight at once."""
    with Server(workers=workers, threads=threads, rules=rules, audit="off") as server:
        result = asyncio.run(_isolation_load(server.url, patients, rounds, size))
    result["server"] = {"workers": workers, "threads": threads, "worker_class": "pacecds.worker.PacecdsWorker"}
    return result
