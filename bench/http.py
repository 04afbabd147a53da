"""HTTP benchmark: the service under gunicorn on loopback, a bounded async load generator (aiohttp).

For each concurrency level: `concurrency` client tasks share one connection pool and send
POST /cds-services/pacing-review with the standard patient (a fresh hookInstance each time) until
`requests` were sent or `duration` seconds passed, whichever comes first. Reported: throughput
(completed requests / wall time), p50 / p99 latency, errors (non-200 or transport failures).

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


class Server:
    """gunicorn serving server:create_app() on 127.0.0.1; stopped (its process group only) on exit."""

    def __init__(self, port: int = 0, workers: int = 2, threads: int = 1, rules: str | None = None,
                 audit: str = "off", worker_class: str = "gthread", app: str = "server:create_app()"):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="pacecds-bench-")
        env = dict(os.environ, PACECDS_ENV="development", PACECDS_VAR_DIR=self._tmp.name,
                   PACECDS_AUDIT_KEY="bench-audit-key-0123456789abcdef")
        env.pop("PACECDS_TRUSTED_ISSUERS", None)
        if rules:
            env["PACECDS_RULES"] = str(rules)
        if audit == "off":
            env["PACECDS_AUDIT"] = "0"
        elif audit == "sqlite":
            env["PACECDS_DATABASE_URL"] = f"sqlite:///{self._tmp.name}/audit.db"
        else:  # a database URL
            env["PACECDS_DATABASE_URL"] = audit
        cmd = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{self.port}",
               "--timeout", "60", "--log-level", "warning"]
        if worker_class == "gthread":  # what `pacecds serve` runs: keeps connections open between requests
            cmd += ["-k", "gthread", "--threads", str(threads), "--keep-alive", "5"]
        elif threads > 1:
            raise ValueError("the sync worker has no threads; use --worker-class gthread")
        self.worker_class = worker_class
        cmd.append(app)
        self._log = open(Path(self._tmp.name) / "gunicorn.log", "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._log,
                                     start_new_session=True)

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
        return (Path(self._tmp.name) / "gunicorn.log").read_text(errors="replace")[-3000:]

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

    def __enter__(self):
        self.wait_ready()
        return self

    def __exit__(self, *exc):
        self.stop()


def body_factory(size: str):
    """Request bytes with a fresh hookInstance each call (a byte replace: no per-request serialisation)."""
    request = make_request(size)
    template = orjson.dumps(request)
    marker = request["hookInstance"].encode()
    assert template.count(marker) == 1
    return lambda: template.replace(marker, str(uuid.uuid4()).encode())


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
        await asyncio.gather(*(client.post(make_body()) for _ in range(max(concurrency, 8))))
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


def run(concurrency=(1, 16, 64), requests: int = 3000, duration: float = 20.0, workers: int = 2, threads: int = 1,
        size: str = "standard", rules: str | None = None, port: int = 0, audit: str = "off",
        client: str = "aiohttp", worker_class: str = "gthread", floor: bool = False) -> dict:
    """floor: serve bench.floor_app (read and parse the body, answer no cards) instead of pacecds."""
    make_body = body_factory(size)
    runs = []
    app = "bench.floor_app:app" if floor else "server:create_app()"
    with Server(port=port, workers=workers, threads=threads, rules=rules, audit=audit,
                worker_class=worker_class, app=app) as server:
        for c in concurrency:
            cpu = server.cpu_seconds()
            row = asyncio.run(load(server.url, make_body, c, requests, duration, client))
            # includes the warm-up requests: a slight over-estimate of the server's CPU per request
            row["server_cpu_ms_per_request"] = (server.cpu_seconds() - cpu) * 1000 / max(1, row["requests"])
            runs.append(row)
    return {
        "server": {"workers": workers, "threads": threads, "worker_class": worker_class, "app": app,
                   "audit": audit if audit in ("off", "sqlite") else "database"},
        "size": size,
        "request_bytes": len(make_body()),
        "loadavg_before": os.getloadavg(),
        "runs": runs,
    }


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
    with Server(workers=workers, threads=threads, rules=rules) as server:
        result = asyncio.run(_isolation_load(server.url, patients, rounds, size))
    result["server"] = {"workers": workers, "threads": threads, "worker_class": "gthread" if threads > 1 else "sync"}
    return result
