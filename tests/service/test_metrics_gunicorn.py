"""/metrics under `pacecds serve` (gunicorn, 2 worker processes): prometheus_client's multiprocess mode."""
from __future__ import annotations

import json
import urllib.request

from tests.service.test_metrics import anaemic_request, samples, value


def _http(url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


def test_multiprocess_metrics_sum_every_gunicorn_worker(tmp_path):
    """`pacecds serve` with 2 workers: whichever worker answers a scrape, it reports the requests of both."""
    from concurrent.futures import ThreadPoolExecutor

    from prometheus_client.multiprocess import MultiProcessCollector

    from tests.service.test_serve import start, stop
    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "counter_999999.db").write_bytes(b"stale")   # left by an earlier start: cleaned away
    base, proc = start(tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(prom)})
    try:
        assert not (prom / "counter_999999.db").exists()
        url = base + "/cds-services/pacing-review"

        def call(i):
            body = json.dumps(anaemic_request(f"mx-{i}")).encode()
            return _http(url, body, {"Content-Type": "application/json"})[0]

        def per_worker() -> dict[str, float]:
            counts = {}
            for path in prom.glob("histogram_*.db"):
                for fam in MultiProcessCollector.merge([str(path)], accumulate=True):
                    for s in fam.samples:
                        if s.name == "pacecds_hook_request_seconds_count":
                            counts[path.stem] = counts.get(path.stem, 0) + s.value
            return {k: v for k, v in counts.items() if v}

        sent = 0
        with ThreadPoolExecutor(8) as pool:
            for _ in range(10):  # until both workers have answered some (the kernel picks who accepts)
                assert all(s == 200 for s in pool.map(call, range(sent, sent + 16)))
                sent += 16
                if len(per_worker()) >= 2:
                    break
        workers = per_worker()
        assert len(workers) == 2 and sum(workers.values()) == sent
        for _ in range(6):  # several scrapes, answered by either worker: each sees the sum
            status, text = _http(base + "/metrics")
            snap = samples(text.decode())
            assert value(snap, "pacecds_hook_request_seconds_count", service="pacing-review",
                         hook="patient-view") == sent
            assert sum(v for k, v in snap.items() if k[0] == "pacecds_cards_total"
                       and dict(k[1])["rule"] == "anemia.low-hemoglobin") == sent
            assert "mx-1" not in text.decode()
    finally:
        stop(proc)
