"""Nothing lost: the service under gunicorn is killed with SIGKILL while under load; every
request that got a 200 must have its decision record (with the same card uuids), and the
chain must verify. Runs on SQLite, and on PostgreSQL when PACECDS_TEST_DATABASE_URL is set."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from audit import AuditStore

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("gunicorn")
if not (ROOT / "server.py").exists():
    pytest.skip("the service is not in this tree", allow_module_level=True)

PATIENT = "pace-kill"
MAX_REQUESTS = 400          # bounded load: at most this many requests in all
MIN_OK_BEFORE_KILL = 100    # kill only once the service is demonstrably answering


def _request() -> dict:
    when = time.strftime("%Y-%m-%dT08:00:00Z", time.gmtime(time.time() - 3 * 86400))
    hb = {"resourceType": "Observation", "id": "hb-kill", "status": "final",
          "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "laboratory"}]}],
          "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
          "subject": {"reference": f"Patient/{PATIENT}"}, "effectiveDateTime": when,
          "valueQuantity": {"value": 10.1, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}}
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/dr-1", "patientId": PATIENT},
            "prefetch": {"patient": {"resourceType": "Patient", "id": PATIENT, "gender": "female",
                                     "birthDate": "1970-03-01"},
                         "observations": {"resourceType": "Bundle", "type": "searchset",
                                          "entry": [{"resource": hb}]},
                         "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": []}}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/kill.db"
    return request.getfixturevalue("pg_database_url")   # a fresh database: the server uses its public schema


def test_sigkill_under_load_loses_no_answered_decision(db_url, tmp_path):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PACECDS_DATABASE_URL=db_url, PACECDS_VAR_DIR=str(tmp_path / "var"),
               PACECDS_AUDIT_KEY="sigkill-test-key-0123456789", PACECDS_ENV="development")
    env.pop("PACECDS_TRUSTED_ISSUERS", None)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                             "--timeout", "30", "server:create_app()"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "gunicorn.log", "wb"),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/cds-services", timeout=2).read()
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("service did not start: " + (tmp_path / "gunicorn.log").read_text()[-2000:])
                time.sleep(0.2)

        answered: dict[str, list[str]] = {}
        lock = threading.Lock()
        sent = [0]
        stop = threading.Event()

        def client():
            while not stop.is_set():
                with lock:
                    if sent[0] >= MAX_REQUESTS:
                        return
                    sent[0] += 1
                req = _request()
                r = urllib.request.Request(f"{base}/cds-services/pacing-review", data=json.dumps(req).encode(),
                                           headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(r, timeout=10) as resp:
                        if resp.status == 200:
                            cards = json.loads(resp.read())["cards"]
                            with lock:
                                answered[req["hookInstance"]] = [c["uuid"] for c in cards]
                except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException):
                    if stop.is_set():
                        return

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(answered) < MIN_OK_BEFORE_KILL and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)   # master and workers, mid-request
        stop.set()
        for t in threads:
            t.join(30)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    assert len(answered) >= MIN_OK_BEFORE_KILL, (tmp_path / "gunicorn.log").read_text()[-2000:]
    store = AuditStore.from_config(db_url, key=b"sigkill-test-key-0123456789")  # seals are checked with its key
    try:
        missing = [h for h in answered if store.get(h) is None]
        assert not missing, f"{len(missing)} of {len(answered)} answered requests have no record"
        for h, uuids in answered.items():
            assert [c["uuid"] for c in store.get(h)["cards"]] == uuids
        rep = store.verify()
        assert rep.ok, rep.problems[:3]
        assert rep.records >= len(answered)
        print(f"sigkill: {sent[0]} sent, {len(answered)} answered 200, {rep.records} records, chain ok")
    finally:
        store.close()
