"""Validation of pooled FHIR input (see pooling.py): only what facts need.

Validation uses fhir.resources R4B models (R4 data). Only resource types that some fact
reads are validated, and a validated resource is remembered by its content hash, so a
chart that is opened again costs no second validation.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from functools import lru_cache

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from .pooling import InputError, PatientData


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
