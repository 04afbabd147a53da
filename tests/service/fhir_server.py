"""A small real FHIR HTTP server on loopback for the fallback-fetch tests (D4, D6-D9, D11).

It serves reads (`Patient/{id}`) and searches (`{Type}?patient=...`) from an in-memory list of resources,
pages searchsets with `next` links, records every request (path, query, Authorization header), and can be told
to fail (status code) or be slow (delay) for chosen resource types.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FhirTestServer:
    def __init__(self, resources: list[dict] | None = None, page_size: int = 50, base_path: str = "/fhir"):
        self.resources = list(resources or [])
        self.page_size = page_size
        self.base_path = base_path
        self.requests: list[dict] = []
        self.fail: dict[str, int] = {}      # resourceType -> HTTP status to answer
        self.delay: dict[str, float] = {}   # resourceType -> seconds to sleep before answering
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{self.base_path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ request handling
    def _send(self, h: BaseHTTPRequestHandler, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/fhir+json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        query = parse_qs(url.query)
        with self._lock:
            self.requests.append({"path": url.path, "query": query, "raw": h.path,
                                  "authorization": h.headers.get("Authorization")})
        if not url.path.startswith(self.base_path + "/"):
            return self._send(h, 404, _oo("not-found", "unknown base"))
        parts = url.path[len(self.base_path) + 1:].split("/")
        rtype = parts[0]
        if rtype in self.delay:
            time.sleep(self.delay[rtype])
        if rtype in self.fail:
            return self._send(h, self.fail[rtype], _oo("exception", "configured failure"))
        if len(parts) == 2:
            for r in self.resources:
                if r["resourceType"] == rtype and r.get("id") == parts[1]:
                    return self._send(h, 200, r)
            return self._send(h, 404, _oo("not-found", f"{rtype}/{parts[1]} not found"))
        matches = [r for r in self.resources if r["resourceType"] == rtype and self._matches(r, query)]
        offset = int(query.get("_offset", ["0"])[0])
        page = matches[offset:offset + self.page_size]
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(matches),
                  "entry": [{"fullUrl": f"{self.base_url}/{r['resourceType']}/{r['id']}", "resource": r,
                             "search": {"mode": "match"}} for r in page]}
        if offset + self.page_size < len(matches):
            q = {k: v[0] for k, v in query.items()}
            q["_offset"] = str(offset + self.page_size)
            nxt = f"{self.base_url}/{rtype}?" + "&".join(f"{k}={v}" for k, v in q.items())
            bundle["link"] = [{"relation": "next", "url": nxt}]
        return self._send(h, 200, bundle)

    @staticmethod
    def _matches(resource: dict, query: dict) -> bool:
        patient = query.get("patient", [None])[0]
        if patient is not None:
            ref = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
            if ref != f"Patient/{patient}":
                return False
        statuses = query.get("lifecycle-status")  # Goal: as a FHIR server filters, so a missing status shows
        if statuses and resource.get("lifecycleStatus") not in statuses[0].split(","):
            return False
        codes = query.get("code")
        if codes:
            wanted = set(codes[0].split(","))
            have = {f"{c.get('system')}|{c.get('code')}" for c in
                    (resource.get("code") or {}).get("coding", [])}
            have |= {c.get("code") for c in (resource.get("code") or {}).get("coding", [])}
            if not wanted & have:
                return False
        return True

    # ------------------------------------------------------------------ assertions helpers
    def paths(self) -> list[str]:
        return [r["raw"] for r in self.requests]


def _oo(code: str, text: str) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
