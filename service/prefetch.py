"""Getting the FHIR data a request needs: prefetch first, then the client's FHIR server.

Three prefetch states per template key (CDS Hooks 2.0 §Prefetch Template):
  absent          -> the client did not or could not fill it: fetch it from fhirServer ourselves;
  null            -> the client had no data: do not fetch;
  OperationOutcome-> the client hit an error: not data; fetch it ourselves if we can.
Required data that cannot be had -> 412. Optional data that cannot be had -> named in `missing`.

The FHIR access token lives only in this module's call stack for one request: it is never logged, stored,
cached or sent anywhere but the request's own fhirServer (and, in production, never over plain http).
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import requests
import urllib3

from fhir_adapter import InputError, Pool

from .errors import ApiError
from .metrics import metrics
from .services import PrefetchSpec, UnexpandableTemplate, expand
from .urls import url_within

log = logging.getLogger("pacecds.prefetch")

MAX_FHIR_RESPONSE_BYTES = 20 * 1024 * 1024
FETCH_WORKERS = 4
FETCH_THREAD_PREFIX = "pacecds-fhir-fetch"


ABORT_GRACE_S = 0.5   # how long a fetch thread may take to notice its connection was cut
FETCH_FAILED = "the FHIR server did not provide it"


class FetchFailed(Exception):
    """A fallback fetch failed. str(e) is for the operator's log (no token, no PHI). When `network` (the
    default), the caller is told only FETCH_FAILED: the reason would tell what listens at the address."""

    def __init__(self, message: str, network: bool = True, reason: str = "error"):
        super().__init__(message)
        self.network = network
        self.reason = reason  # its class, for the metrics (service/metrics.py FETCH_REASONS)


@dataclass
class FetchPolicy:
    timeout_s: float = 2.0
    budget_s: float = 4.0
    max_pages: int = 20
    production: bool = False


@dataclass
class Gathered:
    missing: list[str] = field(default_factory=list)   # human-readable: "observations (FHIR server timed out)"
    fetched: list[str] = field(default_factory=list)   # keys fetched from fhirServer
    pool: Pool = field(default_factory=lambda: Pool(None))  # what the client sent and we fetched, pooled


class FhirClient:
    """Read-only FHIR REST client for one request, bound to one server and one access token.

    Every call ends by the request's deadline whatever the server does: each socket read waits at most until
    the deadline, and abort() (called when the budget ends) shuts every open connection, so no fetch thread,
    and no copy of the token, outlives the budget by more than a read's return."""

    def __init__(self, base_url: str, access_token: str, policy: FetchPolicy, deadline: float):
        self.base = base_url.rstrip("/")
        self.policy = policy
        self.deadline = deadline
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy/netrc surprises for PHI traffic
        self._session.headers.update({"Accept": "application/fhir+json, application/json",
                                      "Authorization": f"Bearer {access_token}"})
        self._lock = threading.Lock()
        self._open: set = set()      # live responses, so abort() can cut them
        self._aborted = False

    def close(self) -> None:
        self.abort()
        self._session.headers.pop("Authorization", None)  # the token goes with the client
        self._session.close()

    def abort(self) -> None:
        """The budget is over: cut every open connection (a blocked read returns at once)."""
        with self._lock:
            self._aborted = True
            responses = list(self._open)
        for r in responses:
            _shutdown(r)

    def _same_server(self, url: str) -> bool:
        return url_within(url, self.base)

    def get_json(self, url: str) -> dict:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0.05 or self._aborted:
            raise FetchFailed("time budget for FHIR calls exhausted", reason="budget")
        try:
            # No redirects: the token must only ever go to the fhirServer the client named.
            with self._session.get(url, timeout=min(self.policy.timeout_s, remaining),
                                   allow_redirects=False, stream=True) as r:
                with self._lock:
                    if self._aborted:
                        raise FetchFailed("time budget for FHIR calls exhausted", reason="budget")
                    self._open.add(r)
                try:
                    if r.status_code != 200:
                        raise FetchFailed(f"FHIR server answered HTTP {r.status_code}", reason="http_status")
                    body = self._read_body(r)
                finally:
                    with self._lock:
                        self._open.discard(r)
        except requests.Timeout:
            raise FetchFailed("FHIR server timed out", reason="timeout") from None
        except requests.RequestException as e:
            raise FetchFailed(f"FHIR server unreachable ({type(e).__name__})", reason="unreachable") from None
        except OSError as e:  # a read cut by abort() or by the deadline
            raise FetchFailed(f"FHIR server connection ended ({type(e).__name__})", reason="connection") from None
        try:
            doc = json.loads(body)
        except ValueError:
            raise FetchFailed("FHIR server returned invalid JSON", reason="invalid_response") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
            raise FetchFailed("FHIR server returned something that is not a FHIR resource", reason="invalid_response")
        if doc["resourceType"] == "OperationOutcome":
            raise FetchFailed("FHIR server returned an OperationOutcome", reason="operation_outcome")
        return doc

    def _read_body(self, r) -> bytes:
        """The body, read piece by piece as it arrives (read1), each socket wait bounded by the deadline: a
        server announcing 100 kB and sending a byte every half second is cut off when the budget ends."""
        raw = r.raw
        chunks, size = [], 0
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or self._aborted:
                raise FetchFailed("FHIR server timed out", reason="timeout")
            _set_read_timeout(raw, min(self.policy.timeout_s, remaining))
            try:
                chunk = raw.read1(65536, decode_content=True)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                raise FetchFailed("FHIR server timed out", reason="timeout") from None
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                raise FetchFailed(f"FHIR server connection ended ({type(e).__name__})", reason="connection") from None
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_FHIR_RESPONSE_BYTES:
                raise FetchFailed("FHIR server response too large", reason="too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def fetch(self, relative: str) -> list[dict]:
        """GET base/relative; for a searchset Bundle follow `next` links (same server only, bounded)."""
        doc = self.get_json(f"{self.base}/{relative.lstrip('/')}")
        pages = [doc]
        pages.extend(self.follow_next(doc))
        return pages

    def follow_next(self, bundle: dict) -> list[dict]:
        pages: list[dict] = []
        current = bundle
        while True:
            nxt = next_link(current)
            if nxt is None:
                return pages
            if not self._same_server(nxt):
                raise FetchFailed("a next link points outside the FHIR server; not followed", network=False, reason="paging")
            if len(pages) + 1 >= self.policy.max_pages:
                raise FetchFailed(f"more than {self.policy.max_pages} pages", network=False, reason="paging")
            current = self.get_json(nxt)
            if current.get("resourceType") != "Bundle":
                raise FetchFailed("a next page is not a Bundle", network=False, reason="invalid_response")
            pages.append(current)


def _connection_socket(raw):
    conn = getattr(raw, "connection", None)
    return getattr(conn, "sock", None) if conn is not None else None


def _set_read_timeout(raw, seconds: float) -> None:
    sock = _connection_socket(raw)
    if sock is not None:
        sock.settimeout(max(0.01, seconds))


def _shutdown(response) -> None:
    sock = _connection_socket(response.raw)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def next_link(resource) -> str | None:
    if not isinstance(resource, dict) or resource.get("resourceType") != "Bundle":
        return None
    links = resource.get("link")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


_SCOPE = re.compile(r"(patient|user|system)/(\*|[A-Za-z]+)\.(read|write|\*|[cruds]+)(\?\S*)?")


def scope_allows(scope: str | None, resource_type: str, search: bool) -> bool:
    """Does a SMART scope string let us read (or search) this type? v1 (`patient/Observation.read`) and
    v2 (`patient/Observation.rs`) syntaxes. A scope string with no resource scopes at all is not second-guessed
    (some EHRs send only `launch` or their own words): the FHIR server decides then."""
    grants = [m for m in (_SCOPE.fullmatch(t) for t in (scope or "").split()) if m]
    if not grants:
        return True
    for m in grants:
        if m.group(2) not in ("*", resource_type):
            continue
        perm = m.group(3)
        if perm in ("read", "*") or (perm not in ("write",) and ("s" if search else "r") in perm):
            return True
    return False


def _fetch_permission(request: dict, policy: FetchPolicy, server_allowed=None) -> tuple[bool, str]:
    """May we call the client's FHIR server for this request? (yes/no, reason when no)."""
    server = request.get("fhirServer")
    auth = request.get("fhirAuthorization")
    if not server:
        return False, "no fhirServer in the request"
    if server_allowed is not None and not server_allowed(server):
        return False, "fhirServer is not one this client is allowed to name"
    if not isinstance(auth, dict) or not auth.get("access_token"):
        return False, "no fhirAuthorization in the request"
    if policy.production and not server.lower().startswith("https://"):
        return False, "fhirServer is not https; the access token is never sent over plain http in production"
    token_patient = auth.get("patient")
    if token_patient and token_patient != request["context"].get("patientId"):
        return False, "the access token is limited to a different patient"
    return True, ""


def _satisfied(spec: PrefetchSpec, pool: Pool) -> bool:
    return pool.has_patient() if spec.resource_type == "Patient" else pool.has_type(spec.resource_type)


def gather(request: dict, specs: list[PrefetchSpec], policy: FetchPolicy, server_allowed=None) -> Gathered:
    context = request["context"]
    prefetch = request.get("prefetch") or {}
    pool = Pool(str(context.get("patientId")), request.get("fhirServer"))
    out = Gathered(pool=pool)
    needs_fetch: list[PrefetchSpec] = []
    incomplete: dict[str, dict] = {}   # key -> first page with a next link
    our_keys = {s.key for s in specs}

    # Everything the client sent is pooled, whatever it named the keys.
    for key, value in prefetch.items():
        if value is None:
            continue  # the client had no data for this template
        try:
            pool.add(value, f"prefetch.{key}")
        except InputError as e:
            raise ApiError(400, f"Invalid FHIR data: {e}", expression=[f"prefetch.{key}"]) from None
        if key in our_keys and next_link(value):
            incomplete[key] = value

    for spec in specs:
        if spec.key in prefetch:
            value = prefetch[spec.key]
            if value is None:
                continue  # the client had no data: do not re-query
            if value.get("resourceType") != "OperationOutcome":
                continue
            log.info("prefetch key %s holds an OperationOutcome; treating it as not provided", spec.key)
        if spec.resource_type == "Patient" and pool.has_patient():
            continue  # provided under another key name
        if spec.resource_type != "Patient" and pool.has_type(spec.resource_type) and spec.key not in prefetch:
            continue  # the client sent this type under its own key name
        needs_fetch.append(spec)

    # A required key the client reported as empty (null) cannot be had: fail before calling anyone.
    for spec in specs:
        if spec.required and spec.key in prefetch and prefetch[spec.key] is None and not _satisfied(spec, pool):
            raise ApiError(412, f"Required prefetch '{spec.key}' ({spec.template}) is missing: the client "
                                f"reported no data for it (null)", expression=[f"prefetch.{spec.key}"])

    unavailable: dict[str, str] = {}
    allowed, why_not = _fetch_permission(request, policy, server_allowed)
    work: list[tuple[str, str | dict]] = []   # (key, relative url) or (key, first page to continue)
    scope = (request.get("fhirAuthorization") or {}).get("scope")
    for spec in needs_fetch:
        if not allowed:
            unavailable[spec.key] = why_not
            continue
        if not scope_allows(scope, spec.resource_type, search="?" in spec.template):
            unavailable[spec.key] = f"the access token's scope does not allow reading {spec.resource_type}"
            continue
        try:
            work.append((spec.key, expand(spec.template, context)))
        except UnexpandableTemplate as e:
            unavailable[spec.key] = f"prefetch token {{{{{e}}}}} has no value in this context"
    for key, first_page in incomplete.items():
        if allowed:
            work.append((key, first_page))
        else:
            out.missing.append(f"{key} (only the first page was prefetched; {why_not})")

    if work:
        started = time.monotonic()
        deadline = started + policy.budget_s
        client = FhirClient(request["fhirServer"], request["fhirAuthorization"]["access_token"], policy, deadline)
        pool_exec = ThreadPoolExecutor(max_workers=min(FETCH_WORKERS, len(work)),
                                       thread_name_prefix=FETCH_THREAD_PREFIX)
        failed = succeeded = False
        try:
            futures = {pool_exec.submit(client.fetch if isinstance(w, str) else client.follow_next, w): k
                       for k, w in work}
            done, not_done = wait(futures, timeout=max(0.0, deadline - time.monotonic()) + 0.1)
            if not_done:
                # The budget is over: cut the connections so the fetch threads end now, not when the server
                # stops dripping, and wait (briefly) for them so none outlives the request with the token.
                client.abort()
                for f in not_done:
                    f.cancel()
                wait(not_done, timeout=ABORT_GRACE_S)
            for f in not_done:
                log.info("fallback fetch for %s: budget of %.1f s exhausted", futures[f], policy.budget_s)
                unavailable[futures[f]] = FETCH_FAILED
                failed = True
                metrics().fhir_fetch("budget")
            for f in done:
                key = futures[f]
                try:
                    pages = f.result()
                except FetchFailed as e:
                    # The caller learns that the data could not be had, never why: "refused", "timed out",
                    # "not HTTP" and "HTTP 404" would tell a closed port from an open one (a port scan
                    # through us). The reason is for the operator's log.
                    log.info("fallback fetch for %s failed: %s", key, e)
                    unavailable[key] = FETCH_FAILED if e.network else str(e)
                    failed = failed or e.network
                    metrics().fhir_fetch(e.reason)
                    continue
                except Exception as e:  # never let a fetch bug turn into a 500 with details
                    log.warning("fallback fetch for %s failed: %s", key, type(e).__name__)
                    unavailable[key] = FETCH_FAILED
                    failed = True
                    metrics().fhir_fetch("error")
                    continue
                succeeded = True
                try:
                    for n, page in enumerate(pages):
                        pool.add(page, f"{key} fetched from fhirServer (page {n + 1})")
                except InputError as e:
                    unavailable[key] = f"the FHIR server sent data that is not valid FHIR ({e})"
                    metrics().fhir_fetch("invalid_fhir")
                    continue
                metrics().fhir_fetch()
                if key not in incomplete:
                    out.fetched.append(key)
        finally:
            pool_exec.shutdown(wait=False, cancel_futures=True)
            client.close()
            del client  # the token goes with it
        if failed and not succeeded:
            # Nothing at that address gave a FHIR answer: it may be a port scan through us. One timing class for
            # every such failure: a refused connection (closed port) answers no sooner than a silent or non-HTTP
            # one (open port) would, i.e. when the budget ends. (A real FHIR server that answered some searches
            # reveals nothing about ports, so its partial failures are not delayed.)
            time.sleep(max(0.0, deadline - time.monotonic()))

    for spec in specs:
        if spec.required and not _satisfied(spec, pool):
            if spec.key in unavailable:
                reason = unavailable[spec.key]
            elif spec.key in prefetch and prefetch[spec.key] is None:
                reason = "the client reported no data for it (null)"
            else:
                reason = "the data does not contain it"
            raise ApiError(412, f"Required prefetch '{spec.key}' ({spec.template}) is missing and could not be "
                                f"fetched: {reason}", expression=[f"prefetch.{spec.key}"])
    for key, reason in unavailable.items():
        out.missing.append(f"{key} ({reason})")
        log.info("prefetch %s unavailable: %s", key, reason)

    if pool.dropped_other_patient:
        log.warning("dropped %d prefetched resources that belong to another patient", pool.dropped_other_patient)
    return out
