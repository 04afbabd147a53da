"""What each CDS Hooks endpoint does, independent of Flask routing: validate, gather data, evaluate, record."""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from fhir_adapter import InputError
from fhir_adapter.identity import OTHER, PatientIdentity
from fhir_adapter.pooling import draft_orders_of

from .config import ServiceConfig
from .errors import ApiError
from .metrics import metrics
from .prefetch import FetchPolicy, gather
from .services import ServiceDef, build_services
from .validation import check

log = logging.getLogger("pacecds.service")

MISSING_DATA_EXTENSION = "org.pacecds.missing-data"


class ServiceState:
    """Everything the endpoints share for the life of the app: ruleset, services, stores."""

    def __init__(self, cfg: ServiceConfig, ruleset, audit_store=None):
        self.cfg = cfg
        # A RulesetHolder (hot reload, engine.serving) or a plain ruleset (tests, embedding).
        self._ruleset_source = ruleset
        self.audit_store = audit_store
        # Base of the console address a pacing card links to (`<base><card uuid>`), set by server.py only when
        # the console is served, PACECDS_PUBLIC_URL is set and decisions are stored (the page reads the log).
        self.card_link_base: str | None = None
        self._watcher = None
        self._services_key: tuple | None = None
        self._services: list[ServiceDef] = []
        self._lock = threading.Lock()
        if hasattr(ruleset, "on_reload"):  # a RulesetHolder: count its hot reloads
            ruleset.on_reload = lambda ok: metrics().ruleset_reload(ok)
        self.policy = FetchPolicy(timeout_s=cfg.fhir_timeout_s, budget_s=cfg.fhir_budget_s,
                                  max_pages=cfg.fhir_max_pages, production=cfg.production)

    @property
    def ruleset(self):
        src = self._ruleset_source
        return src.current if hasattr(src, "current") else src

    def start_watch(self, interval_s: float) -> None:
        """Hot-reload rules/ (only a tree that loads cleanly replaces the serving one)."""
        if interval_s > 0 and hasattr(self._ruleset_source, "watch") and self._watcher is None:
            self._watcher = self._ruleset_source.watch(interval_s)

    def services(self, ruleset=None) -> list[ServiceDef]:
        # Rebuilt once a day (the observation templates carry a literal look-back start date) and whenever
        # a new ruleset is serving (its data requirements may differ).
        ruleset = ruleset or self.ruleset
        today = dt.datetime.now(dt.timezone.utc).date()
        key = (today, getattr(ruleset, "sha256", id(ruleset)))
        with self._lock:
            if self._services_key != key:
                self._services = build_services(ruleset, self.cfg.observation_lookback_days, today)
                self._services_key = key
            return self._services

    def find(self, service_id: str, ruleset=None) -> list[ServiceDef]:
        return [s for s in self.services(ruleset) if s.id == service_id]

    def usage_requirements(self) -> str:
        if self.cfg.auth_enabled:
            algs = ", ".join(self.cfg.jwt_algorithms)
            return (f"Every call carries a JWT signed with {algs} by a trusted issuer, with aud set to the URL "
                    f"called. Give fhirServer and fhirAuthorization so missing prefetch can be fetched.")
        return "Local development mode: no client authentication. Not for patient data."


def discovery(state: ServiceState) -> dict:
    usage = state.usage_requirements()
    return {"services": [s.discovery_entry(usage) for s in state.services()]}


def invoke(state: ServiceState, service_id: str, body: dict, server_allowed=None) -> dict:
    started = time.perf_counter()
    ruleset = state.ruleset  # one snapshot per request: a hot reload never splits a request in two
    candidates = state.find(service_id, ruleset)
    if not candidates:
        raise ApiError(404, f"Unknown CDS service '{service_id}'; see /cds-services")
    check(body, "request")
    hook = body["hook"]
    service = next((s for s in candidates if s.hook == hook), None)
    if service is None:
        served = ", ".join(s.hook for s in candidates)
        raise ApiError(400, f"Service '{service_id}' does not serve hook '{hook}' (it serves: {served})",
                       expression=["hook"])
    context = body["context"]
    check(context, f"context-{hook}", prefix="context")
    _check_selections(context)
    _check_draft_orders_patient(context)

    gathered = gather(body, service.prefetch, state.policy, server_allowed)

    # The engine sees the context and the pooled resources, never fhirServer/fhirAuthorization (tokens).
    try:
        drafts = draft_orders_of(context, gathered.pool)
        data = gathered.pool.patient_data(hook=hook, hook_instance=body["hookInstance"], context=context,
                                          draft_orders=drafts)
        result = ruleset.evaluate(data, hook=hook)
    except InputError as e:
        raise ApiError(400, f"Invalid FHIR data: {e}") from None

    suppressed = suppress_overridden(state, result, body["context"].get("patientId"))
    link_to_console(state, ruleset, result.cards)
    response = result.response()
    missing = list(gathered.missing)
    if missing:
        response.setdefault("extension", {})[MISSING_DATA_EXTENSION] = missing
    latency_ms = (time.perf_counter() - started) * 1000
    record_evaluation(state, ruleset, service, body, result, latency_ms, suppressed)
    metrics().hook_answered(ruleset, service.id, hook, time.perf_counter() - started, response.get("cards") or [])
    log.info("evaluated hookInstance=%s service=%s hook=%s cards=%d fetched=%s missing=%d latency_ms=%.1f",
             body["hookInstance"], service.id, hook, len(response.get("cards", [])),
             ",".join(gathered.fetched) or "-", len(missing), latency_ms)
    return response


def _check_selections(context: dict) -> None:
    """order-select: every selection must name an order in draftOrders (CDS Hooks Library order-select)."""
    selections = context.get("selections")
    if not selections:
        return
    present = set()
    for entry in context["draftOrders"].get("entry") or []:
        res = entry.get("resource") or {}
        if isinstance(res.get("id"), str):
            present.add(f"{res['resourceType']}/{res['id']}")
    for i, ref in enumerate(selections):
        if ref not in present:
            raise ApiError(400, f"context.selections[{i}] names an order that is not in context.draftOrders",
                           expression=[f"context.selections[{i}]"])


def _check_draft_orders_patient(context: dict) -> None:
    """Patient isolation for orders: a draft order about another patient is a client error, never evaluated."""
    draft = context.get("draftOrders")
    if not draft:
        return
    identity = PatientIdentity(str(context["patientId"]))
    for i, entry in enumerate(draft.get("entry") or []):
        res = entry.get("resource") or {}
        if res.get("resourceType") != "Patient" and identity.verdict(res)[0] == OTHER:
            raise ApiError(400, f"context.draftOrders.entry[{i}] is about another patient than context.patientId",
                           expression=[f"context.draftOrders.entry[{i}]"])


CONSOLE_LINK_LABEL = "Pacing chart and reasoning (pacecds console)"


def link_to_console(state: ServiceState, ruleset, cards: list[dict]) -> None:
    """A pacing card (its rule reads the `pacing` fact) links to its stored decision in the console: a CDS Hooks
    `absolute` link whose only variable part is the card's random uuid, never patient data (docs/console.md)."""
    base = state.card_link_base
    if not base:
        return
    for card in cards:
        rule = ruleset.rule(((card.get("extension") or {}).get("pacecds.rule") or {}).get("id"))
        if rule is None or "pacing" not in (getattr(rule, "facts", None) or ()) or not card.get("uuid"):
            continue
        card.setdefault("links", []).append(
            {"label": CONSOLE_LINK_LABEL, "url": f"{base}{card['uuid']}", "type": "absolute"})


def suppress_overridden(state: ServiceState, result, patient_id: str | None) -> list:
    """Take out of the response the cards this patient's clinician overrode in the last
    override_suppress_days days on the same data (same rule, same resources behind it); return them with the
    reason, for the audit record. Nothing is suppressed without an audit store (no feedback to go by)."""
    days = state.cfg.override_suppress_days
    if not days or state.audit_store is None or not patient_id or not result.cards:
        return []
    from audit.record import data_keys_of, format_time

    overridden_of = getattr(state.audit_store, "overridden", None)
    if overridden_of is None:  # a store that keeps no feedback
        return []
    overridden = overridden_of(str(patient_id), format_time(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)))
    if not overridden:
        return []
    keys = data_keys_of(result)
    kept, suppressed = [], []
    for card in result.cards:
        rule_id = ((card.get("extension") or {}).get("pacecds.rule") or {}).get("id")
        when = overridden.get((rule_id, keys.get(card.get("uuid"))))
        if when is None:
            kept.append(card)
        else:
            suppressed.append((card, f"overridden by the clinician at {when} on the same data; "
                                     f"not shown again for {days} days unless the data change"))
    result.cards[:] = kept
    return suppressed


def record_evaluation(state: ServiceState, ruleset, service: ServiceDef, body: dict, result,
                      latency_ms: float, suppressed: list | None = None) -> None:
    """Append the decision to the audit store before the cards go out (no tokens, no raw body).

    The store returns only after its commit, so no card leaves without its record; if the store fails,
    the request fails (500) rather than returning unaudited cards.
    """
    if state.audit_store is None:
        return
    extra = {"suppressed": suppressed} if suppressed else {}
    with metrics().audit_append("decision"):
        state.audit_store.record_result(result, hook=service.hook, hook_instance=body["hookInstance"],
                                        service_id=service.id, patient_id=body["context"].get("patientId"),
                                        latency_ms=latency_ms, ruleset=ruleset, **extra)


def feedback(state: ServiceState, service_id: str, body: dict) -> dict:
    if not state.find(service_id):
        raise ApiError(404, f"Unknown CDS service '{service_id}'; see /cds-services")
    check(body, "feedback")
    if state.audit_store is None:
        raise ApiError(503, "Feedback cannot be stored: the audit store is disabled")
    recorded = duplicates = 0
    for item in body["feedback"]:
        # Idempotent: the store keys each item on its content, so a repeated POST stores nothing new.
        with metrics().audit_append("feedback"):
            stored = state.audit_store.record_feedback(service_id, item)
        metrics().feedback_item(service_id, item.get("outcome"), stored)
        if stored:
            recorded += 1
        else:
            duplicates += 1
    log.info("feedback service=%s recorded=%d duplicates=%d", service_id, recorded, duplicates)
    return {"recorded": recorded, "duplicates": duplicates}
