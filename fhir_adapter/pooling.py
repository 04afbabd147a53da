"""Pooling: the resources of one evaluation, gathered from wherever they came, once.

A CDS Hooks request's prefetch (whatever its keys are called), the pages the service fetched
from the client's FHIR server, and a FHIR Bundle given to the command line all go through
`Pool`: Bundles are opened, OperationOutcomes (errors, not data) are dropped, a resource sent
twice counts once, and `identity.PatientIdentity` decides what is about this patient. Data
about another patient is dropped and counted; data not clearly about this patient is kept out
and named (PatientData.not_used), so explain and the audit record can say why it was not used.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fhir.resources.R4B import get_fhir_model_class

from .identity import OTHER, UNCLEAR, PatientIdentity


class InputError(ValueError):
    """Input that cannot be evaluated; str() is a one-line reason naming what is wrong.

    Reasons quote input (a resourceType, a validator's pattern), so control characters are escaped and
    the length is bounded: a reason is always one printable line (found by tests/hardening fuzzing).
    """

    MAX_CHARS = 500

    def __init__(self, reason: str):
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(reason))
        if len(text) > self.MAX_CHARS:
            text = text[: self.MAX_CHARS - 3] + "..."
        super().__init__(text)


@dataclass
class PatientData:
    """All resources of one evaluation, pooled by type, plus what the request said."""

    patient_id: str | None
    hook: str | None
    hook_instance: str | None
    by_type: dict[str, list[dict]] = field(default_factory=dict)
    draft_orders: list[dict] = field(default_factory=list)
    context: dict = field(default_factory=dict)
    # where each resource came from (by object id), for error messages: a path, or (place, entry index)
    locations: dict[int, str | tuple] = field(default_factory=dict, repr=False)
    # resources left out because they are not clearly about this patient: ("Type/id at place", reason)
    not_used: list[tuple[str, str]] = field(default_factory=list)
    dropped_other_patient: int = 0
    # results computed once per evaluation and shared by facts (e.g. a daily series two facts read)
    memo: dict = field(default_factory=dict, repr=False, compare=False)
    # results that depend only on the validated resources, shared by every evaluation of the same content:
    # set by ResourceValidator.validate together with the pool it produced (chart_pool)
    chart: dict | None = field(default=None, repr=False, compare=False)
    chart_pool: dict | None = field(default=None, repr=False, compare=False)

    def where(self, resource: dict, default: str = "input") -> str:
        """Where a resource came from in the input, e.g. "prefetch['observations'].entry[3]"."""
        return place(self.locations.get(id(resource), default))

    def of_type(self, resource_type: str) -> list[dict]:
        return self.by_type.get(resource_type, [])

    @property
    def patient(self) -> dict | None:
        patients = self.by_type.get("Patient", [])
        return patients[0] if patients else None

    def notes(self) -> list[str]:
        """Plain-words notes on data that was left out, for explain and the audit record."""
        out = [f"{what}: not used, {reason}" for what, reason in self.not_used]
        if self.dropped_other_patient:
            out.append(f"{self.dropped_other_patient} resource(s) about another patient dropped")
        return out


def place(where: str | tuple) -> str:
    """A location as text: a path, or (place, entry index) -> "place.entry[i]" (nested Bundles nest)."""
    if isinstance(where, str):
        return where
    inner, i = where
    return f"{place(inner)}.entry[{i}]"


TYPE_NAME_MAX_CHARS = 100  # no FHIR R4B model name is longer (the longest has 80 characters)


def _known_type(rtype: str) -> bool:
    """Whether fhir.resources has a model of this name; a caller's long string is refused unlooked-up, and
    neither it nor any unknown name is kept (get_fhir_model_class's own lru_cache keeps known names only)."""
    if len(rtype) > TYPE_NAME_MAX_CHARS:
        return False
    try:
        get_fhir_model_class(rtype)
        return True
    except (KeyError, ValueError, AttributeError):
        return False


class Pool:
    """The resources of one evaluation, de-duplicated by type/id, each tested once for patient identity."""

    def __init__(self, patient_id: str | None, fhir_server: str | None = None):
        self.identity = PatientIdentity(patient_id, fhir_server)
        self.by_type: dict[str, list[dict]] = {}
        self.locations: dict[int, str | tuple] = {}
        self.not_used: list[tuple[str, str]] = []
        self.dropped_other_patient = 0
        self._seen: set[tuple[str, str]] = set()
        self._types_with_id: set[str] = set()

    @property
    def patient_id(self) -> str | None:
        return self.identity.patient_id

    def add(self, value, where: str | tuple) -> None:
        """Pool a resource, or a Bundle's entries one by one; `where` names the place, for errors and notes."""
        if not isinstance(value, dict):
            raise InputError(f"{place(where)} is not a JSON object")
        rtype = value.get("resourceType")
        if not isinstance(rtype, str):
            raise InputError(f"{place(where)} has no resourceType")
        if rtype == "Bundle":
            entries = value.get("entry") or []
            if not isinstance(entries, list):
                raise InputError(f"{place(where)}.entry must be an array")
            for i, entry in enumerate(entries):
                inner = entry.get("resource") if isinstance(entry, dict) else None
                if not isinstance(inner, dict):
                    raise InputError(f"{place(where)}.entry[{i}] has no resource")
                self.add(inner, (where, i))  # the place is written out only if an error or note names it
            return
        if rtype == "OperationOutcome":
            return  # an error report is never clinical data
        if rtype not in self.by_type and not _known_type(rtype):
            raise InputError(f"{place(where)}: unknown FHIR R4 resourceType '{rtype}'")
        verdict, reason = self.identity.verdict(value)
        if verdict == OTHER:
            self.dropped_other_patient += 1  # patient isolation: never reaches this patient's rules
            return
        rid = value.get("id")
        if verdict == UNCLEAR:
            self.not_used.append((f"{rtype}/{rid if type(rid) is str else '?'} at {place(where)}", reason))
            return
        if type(rid) is str:  # a malformed id is not de-duplicated; validation refuses it if a fact reads it
            if (rtype, rid) in self._seen:
                return  # the same resource from two prefetch keys (or pages) counts once
            self._seen.add((rtype, rid))
            self._types_with_id.add(rtype)
        self.by_type.setdefault(rtype, []).append(value)
        self.locations[id(value)] = where

    def has_patient(self) -> bool:
        return bool(self.by_type.get("Patient"))

    def has_type(self, rtype: str) -> bool:
        """Whether a resource of this type with an id was pooled (the client sent this type)."""
        return rtype in self._types_with_id

    def resources(self) -> list[dict]:
        return [r for rs in self.by_type.values() for r in rs]

    def origins(self) -> list[str]:
        """Where each of resources() came from, in the same order."""
        return [place(self.locations[id(r)]) for r in self.resources()]

    def patient_data(self, *, hook: str | None, hook_instance: str | None = None, context: dict | None = None,
                     draft_orders: list[dict] | None = None) -> PatientData:
        data = PatientData(patient_id=self.patient_id, hook=hook, hook_instance=hook_instance,
                           by_type=self.by_type, context=context or {}, locations=self.locations,
                           not_used=self.not_used, dropped_other_patient=self.dropped_other_patient)
        data.draft_orders = list(draft_orders or [])
        return data


def draft_orders_of(context: dict, pool: Pool) -> list[dict]:
    """The orders being placed (context.draftOrders, a Bundle), about this patient; an order about another
    patient is an error, an order not clearly about this one is not used (and named)."""
    draft = context.get("draftOrders")
    if draft is None:
        return []
    if not isinstance(draft, dict) or draft.get("resourceType") != "Bundle":
        raise InputError("context.draftOrders must be a FHIR Bundle")
    entries = draft.get("entry") or []
    if not isinstance(entries, list):
        raise InputError("context.draftOrders.entry must be an array")
    out = []
    for i, entry in enumerate(entries):
        inner = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(inner, dict) or not isinstance(inner.get("resourceType"), str):
            raise InputError(f"context.draftOrders.entry[{i}] has no resource")
        verdict, reason = pool.identity.verdict(inner)
        if verdict == OTHER:
            raise InputError(f"context.draftOrders.entry[{i}] is about another patient than context.patientId")
        if verdict == UNCLEAR:
            pool.not_used.append((f"draft order context.draftOrders.entry[{i}]", reason))
            continue
        out.append(inner)
        pool.locations[id(inner)] = ("context.draftOrders", i)
    return out


def pool_request(request, *, hook: str | None = None) -> PatientData:
    """Pool a CDS Hooks request (prefetch + context) or a FHIR Bundle (one patient's record)."""
    if not isinstance(request, dict):
        raise InputError("input must be a JSON object (a CDS Hooks request or a FHIR Bundle)")
    if request.get("resourceType") == "Bundle":
        pool = Pool(_bundle_patient_id(request))
        pool.add(request, "bundle")
        return pool.patient_data(hook=hook or "patient-view")
    if "hook" not in request and "context" not in request:
        raise InputError("input is neither a CDS Hooks request (no 'hook') nor a FHIR Bundle")
    context = request.get("context")
    if not isinstance(context, dict):
        raise InputError("CDS Hooks request has no 'context' object")
    req_hook = request.get("hook")
    if req_hook is not None and not isinstance(req_hook, str):
        raise InputError("CDS Hooks request 'hook' must be a string")
    if hook and req_hook and hook != req_hook:
        raise InputError(f"request hook '{req_hook}' does not match requested hook '{hook}'")
    patient_id = context.get("patientId")
    if patient_id is not None and not isinstance(patient_id, str):
        raise InputError("context.patientId must be a string")
    fhir_server = request.get("fhirServer")
    pool = Pool(patient_id, fhir_server if isinstance(fhir_server, str) else None)
    prefetch = request.get("prefetch") or {}
    if not isinstance(prefetch, dict):
        raise InputError("'prefetch' must be an object")
    for key, value in prefetch.items():
        if value is None:
            continue  # the EHR had no data for this template
        if not isinstance(value, dict) or "resourceType" not in value:
            raise InputError(f"prefetch['{key}'] is not a FHIR resource")
        pool.add(value, f"prefetch['{key}']")
    drafts = draft_orders_of(context, pool)
    return pool.patient_data(hook=hook or req_hook, hook_instance=request.get("hookInstance"), context=context,
                             draft_orders=drafts)


def _bundle_patient_id(bundle: dict) -> str | None:
    """The id of the one Patient a Bundle holds (None when it holds none)."""
    ids = set()
    stack = [bundle]
    while stack:
        node = stack.pop()
        for entry in node.get("entry") or [] if isinstance(node.get("entry"), list) else []:
            inner = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(inner, dict) and inner.get("resourceType") == "Patient":
                ids.add(inner.get("id") if isinstance(inner.get("id"), str) else None)
            elif isinstance(inner, dict) and inner.get("resourceType") == "Bundle":
                stack.append(inner)
    if len(ids) > 1:
        raise InputError("bundle holds more than one Patient; evaluate one patient at a time")
    return next(iter(ids), None)
