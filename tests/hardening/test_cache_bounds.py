"""Every cache of pacecds/caches.py stays within its bound, and none keeps a long string a caller sent
(docs/caches.md): requests carrying long unique strings wherever a cache is keyed (resourceType, codes, system
URIs, dates, units, patient ids, audit strings) leave each cache's size and the process's memory as they were."""

from __future__ import annotations

import copy
import gc
import re
import tracemalloc

import pytest

from audit import record as audit_record
from bench.generate import NOW, make_request
from engine import InputError
from fhir_adapter import facts, ucum, valuesets
from fhir_adapter.resources import ResourceValidator
from pacecds.caches import registry, sizes
from tests.conftest import ROOT

LONG = 100_000  # characters of each hostile string: 20 requests of them would hold megabytes if kept
ROUNDS = 20
STRING_KEYED = {  # memos keyed by strings a caller sends: long ones must add nothing
    "fhir_adapter.facts:_one_key", "fhir_adapter.facts:_parse_time_memo",
    "fhir_adapter.ucum:_parse_memo", "fhir.resources.R4B:get_fhir_model_class",
    "fhir_adapter.selection:ResourceSelector._memo",
}  # (the audit memos also see each record's short unique strings, its time and card uuids: _direct checks them)


@pytest.fixture
def rs(monkeypatch, ruleset):
    """The session's ruleset with a validator of its own, so what this test fills is its alone."""
    monkeypatch.setattr(ruleset, "_validator", ResourceValidator())
    return ruleset


def _observations(request: dict) -> list[dict]:
    return [e["resource"] for e in request["prefetch"]["observations"]["entry"]]


def _hostile(base: dict, i: int) -> list[dict]:
    """Requests like `base`, each with one long unique string in a cache-key position."""
    s = f"{i:06d}" + "x" * LONG

    def variant(edit) -> dict:
        request = copy.deepcopy(base)
        edit(request, _observations(request)[0])
        return request
    return [
        variant(lambda r, o: o.__setitem__("resourceType", "Observation" + s)),
        variant(lambda r, o: o["code"]["coding"][0].__setitem__("code", "c" + s)),
        variant(lambda r, o: o["code"]["coding"][0].__setitem__("system", "http://example.org/" + s)),
        variant(lambda r, o: o.__setitem__("effectiveDateTime", "2026-10-01T" + s)),
        variant(lambda r, o: o.get("valueQuantity", {}).update(unit="{" + s + "}", code="{" + s + "}")),
        variant(lambda r, o: (r["context"].__setitem__("patientId", "p" + s), [
            x.__setitem__("subject", {"reference": "Patient/p" + s}) for x in _observations(r)])),
    ]


def _second_coding(base: dict, i: int) -> dict:
    """A long code no fact reads beside one that is read: the resource is kept for its sibling, validated,
    and facts._readings indexes every coding of it in the chart's results (ResourceValidator._charts)."""
    request = copy.deepcopy(base)
    _observations(request)[0]["code"]["coding"].append({"system": "http://loinc.org", "code": f"9{i:06d}" + "x" * LONG})
    return request


def _evaluate(ruleset, request: dict) -> None:
    try:
        result = ruleset.evaluate(request, now=NOW)
    except InputError:
        return
    record = audit_record.build_decision_record(
        result, hook="patient-view", hook_instance="h" + request["context"]["patientId"], service_id="pacing-review",
        patient_id=request["context"]["patientId"], latency_ms=1.0, key=b"k" * 32, ruleset=ruleset)
    audit_record.scrub({**record, "comment" + "k" * LONG: "bearer " + "t" * LONG})


def _direct(i: int) -> None:
    """The memoised helpers called straight with long strings (what a request reaches them with)."""
    s = f"{i:06d}" + "y" * LONG
    assert facts.parse_time("2026-10-01T" + s) is None
    assert valuesets.code_key("http://loinc.org", s) == ("http://loinc.org", s)
    assert facts.coding_keys({"coding": [{"system": "http://loinc.org", "code": s}]})
    with pytest.raises(ucum.UnitError):
        ucum.parse("mg/" + s)
    assert ucum.parse("{" + s + "}") == (1.0, (0, 0, 0, 0, 0))
    assert audit_record.scrub({s: "a", "b": s, "c": ["bearer " + s]})[1] == 1


def test_registry_and_docs_list_the_same_caches():
    doc = (ROOT / "docs" / "caches.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+)` \|", doc, flags=re.M))
    names = {c.name.split(" ")[0] for c in registry()}  # (two bounds of one cache: one row)
    assert names <= listed, f"caches missing from docs/caches.md: {sorted(names - listed)}"


def test_long_strings_neither_grow_caches_nor_memory(rs):
    base = make_request("small", patient_id="cache-bounds")
    for request in _hostile(base, -1):  # every short key these requests have is seen once
        _evaluate(rs, request)
    _direct(-1)
    gc.collect()
    before = sizes(rs)
    tracemalloc.start()
    try:
        gc.collect()
        start, _ = tracemalloc.get_traced_memory()
        for i in range(ROUNDS):
            for request in _hostile(base, i):
                _evaluate(rs, request)
            _direct(i)
        del request
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    after = sizes(rs)
    for name, (size, bound) in after.items():
        assert bound is not None and size <= bound, f"{name}: {size} entries, bound {bound}"
    for name in STRING_KEYED:
        assert after[name][0] <= before[name][0], f"{name} kept long strings: {before[name][0]} -> {after[name][0]}"
    sent = ROUNDS * 10 * LONG  # at least this many characters went through the caches' keys
    assert end - start < sent // 20, f"{(end - start) / 1e6:.1f} MB kept after {sent / 1e6:.0f} MB of long strings"


def test_a_long_second_coding_is_not_kept_with_the_chart(rs):
    base = make_request("small", patient_id="cache-bounds")
    _evaluate(rs, _second_coding(base, -1))
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(ROUNDS):
            _evaluate(rs, _second_coding(base, i))
        gc.collect()
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < ROUNDS * LONG // 20, f"{kept / 1e6:.1f} MB kept after {ROUNDS * LONG / 1e6:.0f} MB of long codes"


def test_a_10000_character_resource_type_is_refused_and_not_cached(rs):
    from fhir.resources.R4B import get_fhir_model_class

    before = get_fhir_model_class.cache_info().currsize
    request = make_request("small", patient_id="long-type")
    rtype = "Observation" + "z" * 10_000
    _observations(request)[0]["resourceType"] = rtype
    with pytest.raises(InputError, match=r"unknown FHIR R4 resourceType 'Observationzzz.*\.\.\.$") as err:
        rs.evaluate(request, now=NOW)
    assert len(str(err.value)) <= InputError.MAX_CHARS
    assert get_fhir_model_class.cache_info().currsize == before
    del request, err
    gc.collect()
    held = [o for o in gc.get_objects() if isinstance(o, (dict, tuple, list)) and rtype in _strings(o)]
    assert not held, "the long resourceType is still held after the request"


def _strings(container) -> list:
    values = container.values() if isinstance(container, dict) else container
    keys = container.keys() if isinstance(container, dict) else ()
    return [v for v in (*keys, *values) if type(v) is str and len(v) > 1000]


def test_bounds_hold_when_full(rs, monkeypatch):
    """Past its bound each dict-backed cache evicts (small bounds, so the test fills them quickly)."""
    validator = rs._validator
    monkeypatch.setattr(validator, "_max", 5)
    monkeypatch.setattr(validator, "_max_charts", 3)
    monkeypatch.setattr(validator, "_max_parts", 10)
    for i in range(8):
        rs.evaluate(make_request("small", patient_id=f"full-{i}", seed=i + 1), now=NOW)
        for name, (size, bound) in sizes(rs).items():
            assert size <= bound, f"{name}: {size} entries, bound {bound}"
