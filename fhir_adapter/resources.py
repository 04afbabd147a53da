"""FHIR input: pool the resources of a CDS Hooks request or Bundle, validate what facts need.

Validation uses fhir.resources R4B models (R4 data). Only resource types that some fact
reads are validated, and a validated resource is remembered by its content hash, so a
chart that is opened again costs no second validation.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError


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
    # where each resource came from (by object id), for error messages: a path, or (Bundle path, entry index)
    locations: dict[int, str | tuple] = field(default_factory=dict, repr=False)
    # results computed once per evaluation and shared by facts (e.g. a daily series two facts read)
    memo: dict = field(default_factory=dict, repr=False, compare=False)
    # results that depend only on the validated resources, shared by every evaluation of the same content:
    # set by ResourceValidator.validate together with the pool it produced (chart_pool)
    chart: dict | None = field(default=None, repr=False, compare=False)
    chart_pool: dict | None = field(default=None, repr=False, compare=False)

    def where(self, resource: dict, default: str = "input") -> str:
        """Where a resource came from in the input, e.g. "prefetch['observations'].entry[3]"."""
        return _place(self.locations.get(id(resource), default))

    def of_type(self, resource_type: str) -> list[dict]:
        return self.by_type.get(resource_type, [])

    @property
    def patient(self) -> dict | None:
        patients = self.by_type.get("Patient", [])
        if self.patient_id:
            for p in patients:
                if p.get("id") == self.patient_id:
                    return p
        return patients[0] if patients else None


def pool_request(request, *, hook: str | None = None) -> PatientData:
    """Collect resources from a CDS Hooks request (prefetch + context) or a FHIR Bundle.

    Resources are pooled by type whatever the prefetch keys are called, so cards never
    depend on how an EHR named its keys. OperationOutcomes are errors, not data.
    """
    if not isinstance(request, dict):
        raise InputError("input must be a JSON object (a CDS Hooks request or a FHIR Bundle)")
    entries: list[tuple[str | tuple, dict]] = []  # (where, resource); see _place
    if request.get("resourceType") == "Bundle":
        _collect(request, "bundle", entries)
        data = PatientData(patient_id=None, hook=hook or "patient-view", hook_instance=None)
    elif "hook" in request or "context" in request:
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
        data = PatientData(
            patient_id=patient_id, hook=hook or req_hook, hook_instance=request.get("hookInstance"), context=context
        )
        prefetch = request.get("prefetch") or {}
        if not isinstance(prefetch, dict):
            raise InputError("'prefetch' must be an object")
        for key, value in prefetch.items():
            if value is None:
                continue  # the EHR had no data for this template
            if not isinstance(value, dict) or "resourceType" not in value:
                raise InputError(f"prefetch['{key}'] is not a FHIR resource")
            _collect(value, f"prefetch['{key}']", entries)
        draft = context.get("draftOrders")
        if draft is not None:
            if not isinstance(draft, dict) or draft.get("resourceType") != "Bundle":
                raise InputError("context.draftOrders must be a FHIR Bundle")
            draft_entries: list[tuple[str | tuple, dict]] = []
            _collect(draft, "context.draftOrders", draft_entries)
            data.draft_orders = [r for _, r in draft_entries]
            data.locations.update((id(r), w) for w, r in draft_entries)
    else:
        raise InputError("input is neither a CDS Hooks request (no 'hook') nor a FHIR Bundle")

    seen: set[tuple[str, str]] = set()
    by_type, locations = data.by_type, data.locations
    for where, resource in entries:
        rtype = resource["resourceType"]  # a string (_collect)
        if rtype == "OperationOutcome":
            continue
        pooled = by_type.get(rtype)
        if pooled is None:
            if not _known_type(rtype):
                raise InputError(f"{_place(where)}: unknown FHIR R4 resourceType '{rtype}'")
            pooled = by_type[rtype] = []
        rid = resource.get("id")
        if type(rid) is str:  # a malformed id is not de-duplicated; validation refuses it if a fact reads it
            if (rtype, rid) in seen:
                continue  # the same resource from two prefetch keys counts once
            seen.add((rtype, rid))
        pooled.append(resource)
        locations[id(resource)] = where
    if data.patient_id is None:
        patients = data.by_type.get("Patient", [])
        if len(patients) > 1:
            raise InputError("bundle holds more than one Patient; evaluate one patient at a time")
        if patients:
            data.patient_id = patients[0].get("id")
    return data


def _place(where: str | tuple) -> str:
    """A location as text: a path, or (Bundle path, entry index)."""
    return where if isinstance(where, str) else f"{where[0]}.entry[{where[1]}]"


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


def _collect(resource: dict, where: str, out: list) -> None:
    if not isinstance(resource, dict):
        raise InputError(f"{where} is not a JSON object")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        raise InputError(f"{where} has no resourceType")
    if rtype == "Bundle":
        entries = resource.get("entry") or []
        if not isinstance(entries, list):
            raise InputError(f"{where}.entry must be an array")
        for i, entry in enumerate(entries):
            inner = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(inner, dict):
                raise InputError(f"{where}.entry[{i}] has no resource")
            if isinstance(inner.get("resourceType"), str) and inner["resourceType"] != "Bundle":
                out.append(((where, i), inner))  # the place is written out only if an error names it
            else:
                _collect(inner, f"{where}.entry[{i}]", out)
        return
    out.append((where, resource))


class ResourceValidator:
    """Validates resources with fhir.resources, caching results by content hash (bounded LRU)."""

    def __init__(self, max_cached: int = 50_000, max_parts: int = 5_000, max_charts: int = 2_000,
                 max_chart_resources: int = 400_000):
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._max = max_cached
        # (selector, digest of a chart) -> (which of its resources were needed, all of them validated; what facts
        # derived from them and share, PatientData.chart): a chart reopened costs one digest, not a selection
        # and a digest per resource
        self._charts: OrderedDict[tuple, tuple[dict[str, bytes], dict]] = OrderedDict()
        # bounded in charts and in the resources they hold (what facts keep per chart grows with its size)
        self._max_charts, self._max_chart_resources, self._chart_resources = max_charts, max_chart_resources, 0
        self._lock = threading.Lock()
        # (model, member, digest of canonical JSON) -> validated element(s) of an earlier resource; see _reusing
        self._parts: dict[tuple, object] = {}
        self._max_parts = max_parts

    def validate(self, data: PatientData, types: set[str], needed=None) -> None:
        """Validate the resources of `types`; `needed(resource) -> bool` may skip those no fact can read.

        Skipping comes first because fhir.resources validation is the cold path's main cost (~100 us
        per Observation); a patient's record is mostly data that no rule of the hook reads.
        """
        candidates = {t: data.by_type[t] for t in sorted(types) if data.by_type.get(t)}
        chart = (needed, content_digest([candidates, data.draft_orders]))
        with self._lock:
            entry = self._charts.get(chart)
            if entry is not None:
                self._charts.move_to_end(chart)
        if entry is None:
            masks = {t: bytes(needed is None or bool(needed(r)) for r in rs) for t, rs in candidates.items()}
        else:
            masks, derived = entry
        kept = {t: [r for r, keep in zip(rs, masks[t]) if keep] for t, rs in candidates.items()}
        kept = {t: rs for t, rs in kept.items() if rs}
        if entry is None:
            self._validate_each([r for rs in kept.values() for r in rs] + data.draft_orders, data)
            derived = {}
            with self._lock:
                if chart not in self._charts:  # (another thread may have validated the same chart meanwhile)
                    self._charts[chart] = (masks, derived)
                    self._chart_resources += sum(map(len, masks.values()))
                while len(self._charts) > self._max_charts or self._chart_resources > self._max_chart_resources:
                    old_masks, _ = self._charts.popitem(last=False)[1]
                    self._chart_resources -= sum(map(len, old_masks.values()))
        data.chart, data.chart_pool = derived, kept
        # From here on the pool holds only validated resources: facts never see unvalidated data (by
        # construction, not by argument), and each fact scans a handful of candidates instead of the
        # whole chart (a fact's scan is linear in the resources of its type).
        data.by_type = kept

    def _validate_each(self, resources: list[dict], data: PatientData) -> None:
        """Validate each resource not validated before, in order (the first invalid one is the error)."""
        keys = [content_digest(r) for r in resources]
        with self._lock:  # one pass over the cache for the whole request
            seen = self._ok
            fresh = []
            for key, resource in zip(keys, resources):
                if key in seen:
                    seen.move_to_end(key)
                else:
                    fresh.append((key, resource))
        for key, resource in fresh:
            self._validate_one(resource, data.where(resource))
            with self._lock:
                self._ok[key] = None
                if len(self._ok) > self._max:
                    self._ok.popitem(last=False)

    def _validate_one(self, resource: dict, where: str) -> None:
        rtype = resource.get("resourceType")
        label = f"{where} ({rtype}/{resource.get('id', '?')})"
        try:
            model = get_fhir_model_class(rtype)
        except (KeyError, ValueError, AttributeError):
            raise InputError(f"{label}: unknown FHIR R4 resourceType '{rtype}'") from None
        try:
            self._reusing(model, resource)
        except Exception:  # noqa: BLE001 - the plain validation below decides, and words the error
            try:
                model.model_validate(resource)
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
                raise InputError(f"{label}: invalid field '{loc or '(resource)'}': {err.get('msg')}") from None
            except Exception as exc:  # fhir.resources raises plain errors for some malformed input
                raise InputError(f"{label}: invalid resource: {exc}") from None

    def _reusing(self, model, resource: dict) -> None:
        """model_validate(resource), handing pydantic the already-validated elements of earlier resources.

        Speed of the cold path: a chart's daily Observations repeat the same code, category and subject
        (and a patient's resources the same subject), and fhir.resources spends most of its ~90 us per
        Observation validating such nested elements (each runs Python validators). pydantic accepts a
        model instance for a model-typed member without validating it again, so an element whose exact
        JSON was validated before, for the same member of the same resource type, is passed as the
        instance that validation produced. The resource-level validators still run. Measured: ~85 ->
        ~40 us per Observation. Only a success is trusted: on any error the caller validates the plain
        resource, so accepting and every error message are as without reuse (tests/hardening checks
        both against plain validation on mutated resources).
        """
        members = _members(model)
        reused, fresh = {}, []
        for key, value in resource.items():
            name = members.get(key)
            if name is None or not (type(value) is dict or (
                    type(value) is list and value and all(type(v) is dict for v in value))):
                continue
            # a digest, not the JSON: orjson's output buffers are over-allocated (~2 kB each held in memory)
            text = _json_bytes(value)
            if len(text) > PART_MAX_BYTES:
                continue  # validated with its resource, never kept: what is kept is bounded in bytes too
            part = (model, key, hashlib.sha256(text).digest())
            hit = self._parts.get(part)
            if hit is None:
                fresh.append((part, name))
            else:
                reused[key] = hit
        instance = model.model_validate({**resource, **reused} if reused else resource)
        if len(self._parts) + len(fresh) > self._max_parts:
            self._parts.clear()  # bounded; the elements in use come back within a few resources
        for part, name in fresh:
            self._parts[part] = getattr(instance, name)


PART_MAX_BYTES = 1024  # elements kept by _reusing: a code, a subject, a category are ~30-200 bytes (docs/caches.md)


def _json_bytes(value) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits (the stdlib parser accepts them): the stdlib writes it
        return json.dumps(value, separators=(",", ":")).encode()


def content_digest(value) -> bytes:
    """SHA-256 of a JSON value's serialisation: the key of what was validated before.

    Equal bytes mean equal content (JSON text parses one way), so a hit is always the same resource;
    the same content with its members in another order merely misses. SHA-256, not a faster
    non-cryptographic hash, because a collision would let an unvalidated resource through; it is also
    the fastest hashlib digest here (CPU SHA extensions)."""
    return hashlib.sha256(_json_bytes(value)).digest()


@lru_cache(maxsize=1024)  # keyed by model class: fhir.resources R4B has 703 (docs/caches.md)
def _members(model) -> dict[str, str]:
    """JSON member name (alias or field name) -> attribute name, for the members of a FHIR model."""
    out = {}
    for name, info in model.model_fields.items():
        out[name] = name
        if info.alias:
            out[info.alias] = name
    out.pop("resourceType", None)
    return out
