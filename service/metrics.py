"""Prometheus metrics of the service (`GET /metrics`): every metric, its labels and their bounds, in one place.

A label value is only ever taken from a bounded set the service itself defines: the service ids and hooks it
serves, the rule ids of the serving ruleset, fixed reason classes, route templates and status codes. Never a
patient id, a URL, a token or any other text a caller sent. Anything outside a set is counted as "other".

Under `pacecds serve` (gunicorn, several worker processes) prometheus_client runs in multiprocess mode:
pacecds/serve.py points PROMETHEUS_MULTIPROC_DIR at a fresh private directory before anything here is built,
each worker writes its values to files there, and a scrape answered by any worker reads them all. Elsewhere
(the Flask dev server, the test client, an embedding) the values live in this process. Either way the metrics
are built on first use, not at import, so the mode is the one in force when the process starts serving.

docs/metrics.md lists the metrics and who may read them.
"""
from __future__ import annotations

import hmac
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"

INDICATORS = frozenset({"info", "warning", "critical"})
FEEDBACK_OUTCOMES = frozenset({"accepted", "overridden"})
# Why a bearer JWT was refused (service/auth.py AuthError.reason).
TOKEN_REASONS = frozenset({"missing", "malformed", "algorithm", "issuer", "key", "audience", "expired", "invalid",
                           "claims", "lifetime", "replayed"})
# Why a fallback FHIR fetch failed (service/prefetch.py FetchFailed.reason).
FETCH_REASONS = frozenset({"budget", "timeout", "unreachable", "connection", "http_status", "invalid_response",
                           "operation_outcome", "too_large", "paging", "invalid_fhir", "error"})

# Seconds. A warm evaluation takes a few ms; a request waiting on a slow FHIR server up to PACECDS_FHIR_BUDGET.
REQUEST_BUCKETS = (0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
AUDIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def _bounded(value, allowed) -> str:
    return value if isinstance(value, str) and value in allowed else OTHER


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "pacecds_http_requests", "HTTP requests answered, by route template and status code",
            ["route", "status"], registry=r)
        self.hook_seconds = Histogram(
            "pacecds_hook_request_seconds", "Time from a parsed hook request to its answer (checks, prefetch and "
            "FHIR fetch, evaluation, audit append), answered requests only",
            ["service", "hook"], buckets=REQUEST_BUCKETS, registry=r)
        self.cards = Counter("pacecds_cards", "Cards returned, by rule and indicator", ["rule", "indicator"],
                             registry=r)
        self.audit_seconds = Histogram(
            "pacecds_audit_append_seconds", "Time of one append to the audit store, committed (decision record or "
            "feedback item)", ["kind"], buckets=AUDIT_BUCKETS, registry=r)
        self.audit_failures = Counter("pacecds_audit_append_failures", "Appends to the audit store that failed",
                                      ["kind"], registry=r)
        self.fhir_fetches = Counter("pacecds_fhir_fetches", "Fallback FHIR searches (with their pages), by result",
                                    ["result"], registry=r)
        self.fhir_fetch_failures = Counter("pacecds_fhir_fetch_failures", "Failed fallback FHIR searches, by reason "
                                           "class", ["reason"], registry=r)
        self.rejected_tokens = Counter("pacecds_rejected_tokens", "Bearer JWTs refused (401), by reason class",
                                       ["reason"], registry=r)
        self.feedback = Counter("pacecds_feedback_items", "CDS Hooks feedback items received, by service, outcome "
                                "and whether they were new or already stored",
                                ["service", "outcome", "result"], registry=r)
        self.reloads = Counter("pacecds_ruleset_reloads", "Rules hot reloads: ok (a new ruleset serves) or refused "
                               "(the tree did not load; the old one still serves)", ["result"], registry=r)
        # livemax: across live workers, 1 for every ruleset one of them serves (workers reload independently).
        self.ruleset_info = Gauge("pacecds_ruleset_info", "1 for the ruleset this service serves (name, version, "
                                  "sha256), 0 for one it served before a reload", ["name", "version", "sha256"],
                                  multiprocess_mode="livemax", registry=r)
        self._lock = threading.Lock()
        self._serving = None          # the ruleset whose info is set to 1 (this process)
        self._serving_labels = None
        self._rule_ids: tuple[object, frozenset[str]] = (None, frozenset())

    # ------------------------------------------------------------------ recording
    def http_request(self, route: str | None, status: int) -> None:
        self.http_requests.labels(route or "unmatched", str(int(status))).inc()

    def hook_answered(self, ruleset, service_id: str, hook: str, seconds: float, cards: list) -> None:
        """service_id and hook must be ones the service serves (the caller found them in its services)."""
        self.serving(ruleset)
        self.hook_seconds.labels(service_id, hook).observe(seconds)
        if cards:
            rule_ids = self._rule_ids_of(ruleset)
            for card in cards:
                rule = ((card.get("extension") or {}).get("pacecds.rule") or {}).get("id")
                self.cards.labels(_bounded(rule, rule_ids), _bounded(card.get("indicator"), INDICATORS)).inc()

    @contextmanager
    def audit_append(self, kind: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.audit_failures.labels(kind).inc()
            raise
        self.audit_seconds.labels(kind).observe(time.perf_counter() - started)

    def fhir_fetch(self, failure_reason: str | None = None) -> None:
        if failure_reason is None:
            self.fhir_fetches.labels("ok").inc()
        else:
            self.fhir_fetches.labels("failed").inc()
            self.fhir_fetch_failures.labels(_bounded(failure_reason, FETCH_REASONS)).inc()

    def token_rejected(self, reason: str) -> None:
        self.rejected_tokens.labels(_bounded(reason, TOKEN_REASONS)).inc()

    def feedback_item(self, service_id: str, outcome, stored: bool) -> None:
        self.feedback.labels(service_id, _bounded(outcome, FEEDBACK_OUTCOMES),
                             "recorded" if stored else "duplicate").inc()

    def ruleset_reload(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "refused").inc()

    def serving(self, ruleset) -> None:
        """Mark `ruleset` as the one this process serves (cheap when it already is)."""
        if ruleset is self._serving:
            return
        labels = tuple(str(getattr(ruleset, k, None) or "") for k in ("name", "version", "sha256"))
        with self._lock:
            if self._serving_labels is not None and self._serving_labels != labels:
                self.ruleset_info.labels(*self._serving_labels).set(0)
            self.ruleset_info.labels(*labels).set(1)
            self._serving, self._serving_labels = ruleset, labels

    def _rule_ids_of(self, ruleset) -> frozenset[str]:
        held = self._rule_ids
        if held[0] is not ruleset:  # one entry: the serving ruleset's ids, replaced on reload
            held = self._rule_ids = (ruleset, frozenset(r.id for r in getattr(ruleset, "rules", ())))
        return held[1]

    # ------------------------------------------------------------------ exposition
    def exposition(self) -> tuple[bytes, str]:
        """The text format; in multiprocess mode the sum over every worker's files."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_metrics: Metrics | None = None
_build_lock = threading.Lock()


def metrics() -> Metrics:
    """This process's metrics, built on first use."""
    global _metrics
    if _metrics is None:
        with _build_lock:
            if _metrics is None:
                _metrics = Metrics()
    return _metrics


def token_matches(authorization: str | None, token: str) -> bool:
    """`Authorization: Bearer <PACECDS_METRICS_TOKEN>`, compared in constant time."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
