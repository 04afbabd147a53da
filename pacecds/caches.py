"""Every cache and memo of the product that outlives a request, in one list: where it is, its bound, and how
full it is now. docs/caches.md has one row per entry (what it keys on, what it saves, measured, and why it
cannot carry one patient's data into another's response); tests/hardening/test_cache_bounds.py fills them with
hostile input and checks each stays within its bound.

Per-request memos (PatientData.memo, fhir_adapter.pooling.Pool (per request), the loader's drug tables) die with their
request or load and are listed in docs/caches.md only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Cache:
    name: str  # as in docs/caches.md: module:function (or Class.attribute)
    bound: Callable[[object], int]  # ruleset -> the most entries it may hold
    size: Callable[[object], int]  # ruleset -> entries it holds now


def _lru(module: str, function: str) -> Cache:
    def fn():
        import importlib
        return getattr(importlib.import_module(module), function)
    return Cache(f"{module}:{function}", lambda rs: fn().cache_info().maxsize, lambda rs: fn().cache_info().currsize)


def _validator(rs):
    return rs._validator


def _selectors(rs):
    return [p.needs for p in rs._programs.values()]


def _chart_entries(rs) -> int:
    """The most results any one remembered chart holds (facts._per_chart)."""
    with rs._validator._lock:
        charts = list(rs._validator._charts.values())
    return max((len(derived) for _, derived in charts), default=0)


def _per_chart_max(rs) -> int:
    from fhir_adapter import facts
    return facts.PER_CHART_MAX


def registry() -> list[Cache]:
    from fhir_adapter import selection
    return [
        _lru("fhir_adapter.facts", "_one_key"),
        _lru("fhir_adapter.facts", "_parse_time_memo"),
        _lru("fhir_adapter.facts", "_utc_day"),
        _lru("fhir_adapter.ucum", "_parse_memo"),
        _lru("fhir_adapter.resources", "_members"),
        Cache("fhir.resources.R4B:get_fhir_model_class", lambda rs: _r4b_names(),  # the library's, unbounded
              lambda rs: _r4b().cache_info().currsize),
        _lru("engine.loader", "schema_validator"),
        _lru("service.validation", "validator"),
        Cache("fhir_adapter.resources:ResourceValidator._ok", lambda rs: _validator(rs)._max,
              lambda rs: len(_validator(rs)._ok)),
        Cache("fhir_adapter.resources:ResourceValidator._charts", lambda rs: _validator(rs)._max_charts,
              lambda rs: len(_validator(rs)._charts)),
        Cache("fhir_adapter.resources:ResourceValidator._charts (resources)",
              lambda rs: _validator(rs)._max_chart_resources, lambda rs: _validator(rs)._chart_resources),
        Cache("fhir_adapter.resources:ResourceValidator._parts", lambda rs: _validator(rs)._max_parts,
              lambda rs: len(_validator(rs)._parts)),
        Cache("fhir_adapter.facts:_per_chart", _per_chart_max, _chart_entries),
        Cache("fhir_adapter.selection:ResourceSelector._memo", lambda rs: selection.SELECTOR_MEMO_MAX,
              lambda rs: max(len(s._memo) for s in _selectors(rs))),
    ]


def _r4b():
    from fhir.resources.R4B import get_fhir_model_class
    return get_fhir_model_class


def _r4b_names() -> int:
    """fhir.resources caches known model names only (a failed lookup raises, and lru_cache keeps no error)."""
    from fhir.resources.R4B import fhirtypes
    return sum(1 for n in dir(fhirtypes) if n.endswith("Type") and n != "Type")


def sizes(ruleset) -> dict[str, tuple[int, int]]:
    """name -> (entries now, bound)."""
    return {c.name: (c.size(ruleset), c.bound(ruleset)) for c in registry()}
