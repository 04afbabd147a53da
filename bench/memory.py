"""Resident memory per worker: `pacecds serve` (gunicorn, 2 workers, decision log on: SQLite under a temporary
PACECDS_VAR_DIR) answers a new patient on every request; each worker's RSS is read from /proc every `every`
requests.

    python -m bench memory --patients 20000            # RSS per worker at 0 / 1k / 5k / 10k / 20k patients
    python -m bench memory --holders --patients 600      # in-process: the bytes each cache holds

Patients: `templates` generated standard patients (bench/generate.py, different seeds, so different values),
each sent with a new patient id in every resource and a new hookInstance (a same-length byte replace keeps the
JSON valid), so no request repeats a chart, a resource or a decision record.

--holders evaluates the same patients in this process (`Ruleset.evaluate`, no HTTP, no audit store) and reports
RSS and the deep size of the validator's caches with every registered cache's fill (pacecds/caches.py).
(tracemalloc over the whole service was tried first: on this shared machine it made a patient take ~3 s.)
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from .generate import make_request, unique_hemoglobin

ROOT = Path(__file__).resolve().parent.parent
SERVICE_PATH = "/cds-services/pacing-review"
MARK_HOOK = "00000000-0000-4000-8000-000000000000"
CHECKPOINTS = (0, 1_000, 5_000, 10_000, 20_000)


class Patients:
    """Request bodies for patient n: template n % templates, with patient id and hookInstance made unique."""

    def __init__(self, templates: int = 32, size: str = "standard"):
        self.templates = []
        for t in range(templates):
            req = make_request(size, patient_id=f"mem-{t:07d}", seed=t, hemoglobin=unique_hemoglobin(t))
            req["hookInstance"] = MARK_HOOK
            self.templates.append(orjson.dumps(req))

    def body(self, n: int) -> bytes:
        t = n % len(self.templates)
        return (self.templates[t].replace(f"mem-{t:07d}".encode(), f"m{n:010d}".encode())
                .replace(MARK_HOOK.encode(), str(uuid.uuid4()).encode()))


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and its parts (RssAnon: the heap; RssFile: mapped code and files), kB, from /proc/<pid>/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(rest.split()[0])
    return out


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return sorted(kids)


class Served:
    """`pacecds serve` as deployed (its gunicorn worker and options), on a free loopback port."""

    def __init__(self, workers: int = 2, rules: str | None = None, audit: str = "sqlite"):
        from .http import free_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="pacecds-memory-")
        env = dict(os.environ, PACECDS_VAR_DIR=self._tmp.name, PACECDS_WORKERS=str(workers))
        for var in ("PACECDS_TRUSTED_ISSUERS", "PACECDS_ENV", "PACECDS_PUBLIC_URL", "PROMETHEUS_MULTIPROC_DIR"):
            env.pop(var, None)
        if rules:
            env["PACECDS_RULES"] = str(rules)
        if audit == "off":
            env["PACECDS_AUDIT"] = "0"
        elif audit != "sqlite":
            env["PACECDS_DATABASE_URL"] = audit
        else:
            env.pop("PACECDS_DATABASE_URL", None)
        self._log = open(Path(self._tmp.name) / "serve.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "pacecds.cli", "serve", "--port", str(self.port)],
                                     cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2).read()
                if len(children(self.proc.pid)) >= workers:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("pacecds serve did not start:\n" + self.log_tail())
            time.sleep(0.3)
        self.workers = children(self.proc.pid)

    def log_tail(self) -> str:
        return (Path(self._tmp.name) / "serve.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the master stops its workers
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        self._tmp.cleanup()


def run(patients: int = 20_000, every: int = 500, concurrency: int = 4, workers: int = 2, templates: int = 32,
        rules: str | None = None, audit: str = "sqlite", progress=None) -> dict:
    import requests

    gen = Patients(templates)
    server = Served(workers=workers, rules=rules, audit=audit)
    local = threading.local()
    errors: list[str] = []

    def send(n: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        r = session.post(server.url + SERVICE_PATH, data=gen.body(n), headers={"Content-Type": "application/json"},
                         timeout=60)
        if r.status_code != 200:
            errors.append(f"patient {n}: HTTP {r.status_code}")

    samples = []

    def sample(done: int) -> None:
        row = {"patients": done, "seconds": round(time.perf_counter() - started, 1),
               "workers": {str(p): rss_kb(p) for p in server.workers}}
        samples.append(row)
        if progress:
            rss = ", ".join(f"{v['VmRSS'] / 1024:.1f}" for v in row["workers"].values())
            progress(f"{done:6d} patients  RSS per worker (MB): {rss}  errors {len(errors)}")

    started = time.perf_counter()
    try:
        sample(0)
        with ThreadPoolExecutor(concurrency) as pool:
            done = 0
            while done < patients:
                batch = min(every, patients - done)
                list(pool.map(send, range(done, done + batch)))
                done += batch
                sample(done)
        metrics = urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()
        answered = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith("pacecds_hook_request_seconds_count{"))
        if server.workers != children(server.proc.pid):
            errors.append(f"workers changed during the run: {server.workers} -> {children(server.proc.pid)}")
    finally:
        server.stop()
    return {"patients": patients, "every": every, "concurrency": concurrency, "templates": templates,
            "audit": audit, "seconds": round(time.perf_counter() - started, 1), "errors": len(errors),
            "first_errors": errors[:10], "answered_per_metrics": answered, "samples": samples,
            "at": {str(c): next(({p: v["VmRSS"] for p, v in s["workers"].items()} for s in samples
                                 if s["patients"] == c), None) for c in CHECKPOINTS if c <= patients}}


def deep_size(root, seen: set | None = None) -> int:
    """Bytes held by `root` and everything it alone reaches (classes, modules and functions are not followed:
    they are shared, not held)."""
    import gc
    import types

    seen = set() if seen is None else seen
    total, stack = 0, [root]
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def holders(patients: int = 600, templates: int = 32, progress=None) -> dict:
    """In-process, `Ruleset.evaluate` over `patients` new patients (the service's path without HTTP and the
    audit store): RSS, and the bytes each product cache holds (deep size) with its fill against its bound."""
    import gc

    from engine import load_ruleset
    from pacecds.caches import sizes

    from .generate import NOW
    from .stress import rss_mb

    gen = Patients(templates)
    ruleset = load_ruleset(ROOT / "rules")
    gc.collect()
    rss = {"0": round(rss_mb(), 1)}
    started = time.perf_counter()
    for n in range(patients):
        ruleset.evaluate(orjson.loads(gen.body(n)), now=NOW)
        if (n + 1) % 100 == 0 or n + 1 == patients:
            gc.collect()
            rss[str(n + 1)] = round(rss_mb(), 1)
            if progress:
                progress(f"{n + 1} patients: RSS {rss[str(n + 1)]} MB ({time.perf_counter() - started:.0f} s)")
    v = ruleset._validator
    held = {
        "ResourceValidator._charts": (len(v._charts), v._max_charts, deep_size(v._charts)),
        "ResourceValidator._ok": (len(v._ok), v._max, deep_size(v._ok)),
        "ResourceValidator._parts": (len(v._parts), v._max_parts, deep_size(v._parts)),
    }
    caches = {name: {"entries": now, "bound": bound} for name, (now, bound) in sizes(ruleset).items()}
    per_chart = held["ResourceValidator._charts"][2] / max(1, held["ResourceValidator._charts"][0])
    return {"patients": patients, "rss_mb": rss,
            "held": {k: {"entries": n, "bound": b, "mb": round(size / 2**20, 2)} for k, (n, b, size) in held.items()},
            "chart_kb": round(per_chart / 1024, 1),
            "charts_at_bound_mb": round(per_chart * v._max_charts / 2**20, 1), "caches": caches}
