"""Fuzzing with hypothesis: FHIR inputs into the engine, and requests into the Flask app.

- engine: random JSON and mutated valid requests/Bundles -> a result or InputError, never another exception;
- HTTP: random bodies, mutated valid CDS Hooks requests, odd content types and paths -> never a 5xx, and
  every 4xx body is a FHIR OperationOutcome with at least one issue.
(schemathesis runs over the OpenAPI description in tests/service; this fuzzes FHIR content it cannot reach.)

Bounded for CI (PACECDS_FUZZ_EXAMPLES, default 60 per test); a longer run:
    PACECDS_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/hardening/test_fuzz.py
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.generate import NOW, make_bundle, make_request
from engine import InputError

EXAMPLES = int(os.environ.get("PACECDS_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

SMALL_REQUEST = make_request("small", patient_id="fuzz-1")
SMALL_BUNDLE = make_bundle("small", patient_id="fuzz-1")
# example patients that reach the medication, MME, order and pacing code paths (when the KB has them)
_EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "patients"
BASES = [SMALL_BUNDLE] + [orjson.loads(p.read_bytes()) for p in sorted(_EXAMPLE_DIR.glob("*.json"))
                          if p.stem.split("-")[0] in ("mme", "order", "pacing", "meds")][:12]

# JSON values as an EHR (or an attacker) could send them: what orjson can parse
scalars = st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20) | \
    st.sampled_from(["", "0", "-1", "2026-13-45", "2026-11-01T25:00:00Z", "Patient/fuzz-1", "Patient/other",
                     "final", "entered-in-error", "active", "718-7", "http://loinc.org", "g/dL", "mmol/L",
                     "{score}", "/d", "Bundle", "Observation", "Patient", "OperationOutcome", "\u0000", "1e999"])
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=12) | st.sampled_from(
                               ["resourceType", "id", "entry", "resource", "code", "coding", "system", "value",
                                "valueQuantity", "status", "subject", "reference", "effectiveDateTime"]),
                               inner, max_size=4), max_leaves=12)


def _same_type(value):
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-10**6, 10**9) | st.sampled_from([0, 1, -1, 2**31 - 1])
    if isinstance(value, float):
        return st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, -0.0, 1e-300, 1e300])
    if isinstance(value, str):
        return st.text(max_size=30) | st.sampled_from([
            "", "2026-11-01", "2026-11", "2026", "2026-11-01T00:00:00+14:00", "1900-01-01", "2999-12-31",
            "2026-10-31T23:59:59.999999Z", "active", "stopped", "draft", "final", "preliminary", "amended",
            "entered-in-error", "refuted", "d", "h", "wk", "mo", "/d", "mg", "ug", "[IU]/L", "{score}", "g/L",
            "http://loinc.org", "http://snomed.info/sct", "http://www.nlm.nih.gov/research/umls/rxnorm",
            "41950-7", "72514-3", "718-7", "1049621", "Patient/fuzz-1", "Patient/other", "#med"])
    if isinstance(value, list):
        return st.lists(json_values, max_size=3) | st.just(value[::-1]) | st.just([])
    if isinstance(value, dict):
        return st.just({}) | st.just(dict(value)) | st.dictionaries(st.text(max_size=8), json_values, max_size=3)
    return json_values


def _paths(doc, path=()):
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, path + (i,))


def _mutate(doc, data):
    """Replace, delete or duplicate a few nodes anywhere in a valid document."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        action = data.draw(st.sampled_from(["replace", "tweak", "tweak", "delete", "duplicate"]), label="action")
        if action == "replace":
            parent[key] = data.draw(json_values, label="value")
        elif action == "tweak":  # same JSON type: likely to pass validation and reach the facts
            parent[key] = data.draw(_same_type(parent[key]), label="tweaked")
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        else:
            parent[key] = [parent[key], copy.deepcopy(parent[key])]
    return doc


def _evaluate_or_input_error(ruleset, doc, hook=None):
    # round trip through orjson as the service and the CLI do: the engine sees parsed JSON only
    doc = orjson.loads(orjson.dumps(doc))
    try:
        result = ruleset.evaluate(doc, now=NOW, hook=hook)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    orjson.dumps(result.response())  # the response is serialisable
    return result


# ------------------------------------------------------------------ engine


@FUZZ
@given(doc=json_values)
def test_engine_random_json(ruleset, doc):
    _evaluate_or_input_error(ruleset, doc)


@FUZZ
@given(data=st.data())
def test_engine_mutated_request(ruleset, data):
    _evaluate_or_input_error(ruleset, _mutate(SMALL_REQUEST, data))


@FUZZ
@given(data=st.data(), base=st.sampled_from(BASES),
       hook=st.sampled_from([None, "patient-view", "order-select", "order-sign"]))
def test_engine_mutated_examples(ruleset, data, base, hook):
    _evaluate_or_input_error(ruleset, _mutate(base, data), hook=hook)


# ------------------------------------------------------------------ HTTP


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from engine import load_ruleset
    from server import create_app
    from service.config import ServiceConfig
    from tests.conftest import RULES

    app = create_app(ServiceConfig(env="test", ruleset=load_ruleset(RULES), audit=False))
    return app.test_client()


def _check_response(resp):
    assert resp.status_code < 500, (resp.status_code, resp.data[:500])
    if resp.status_code >= 400:
        body = orjson.loads(resp.data)
        assert body["resourceType"] == "OperationOutcome", body
        assert body["issue"] and body["issue"][0]["severity"] in ("error", "fatal")
        assert body["issue"][0]["diagnostics"]


PATHS = st.sampled_from(["/cds-services/pacing-review", "/cds-services/sedating-medication-safety",
                         "/cds-services/pacing-review/feedback", "/cds-services/nope", "/cds-services",
                         "/cds-services/%00", "/cds-services/pacing-review/../x"])


@FUZZ
@given(path=PATHS, body=st.binary(max_size=300),
       ctype=st.sampled_from(["application/json", "application/fhir+json", "text/plain", "", "application/json; charset=latin-1",
                              "multipart/form-data; boundary=x"]),
       method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]))
def test_http_random_bytes(client, path, body, ctype, method):
    headers = {"Content-Type": ctype} if ctype else {}
    _check_response(client.open(path, method=method, data=body, headers=headers))


@FUZZ
@given(doc=json_values, path=PATHS)
def test_http_random_json(client, doc, path):
    _check_response(client.post(path, data=orjson.dumps(doc), content_type="application/json"))


@FUZZ
@given(data=st.data())
def test_http_mutated_valid_request(client, data):
    doc = _mutate(SMALL_REQUEST, data)
    resp = client.post("/cds-services/pacing-review", data=orjson.dumps(doc), content_type="application/json")
    _check_response(resp)
    if resp.status_code == 200:
        assert isinstance(orjson.loads(resp.data)["cards"], list)


def test_http_valid_request_passes(client):
    resp = client.post("/cds-services/pacing-review", data=orjson.dumps(SMALL_REQUEST),
                       content_type="application/json")
    assert resp.status_code == 200, resp.data[:500]


@pytest.mark.parametrize("value", ["1e-05", "1e-7", "1e+16", "1.5e300", "1000000000000000000000000000000"])
def test_http_extreme_numbers_are_evaluated_not_500(client, value):
    """Found by hand: durable-rules refuses JSON numbers with an exponent, and a value beyond 64 bits broke the
    validated-resource cache key; each gave a 500. A tiny or huge hemoglobin is data like any other."""
    request = copy.deepcopy(SMALL_REQUEST)
    hemoglobin = next(r for r in _all_resources(request) if r.get("resourceType") == "Observation"
                      and r["code"]["coding"][0]["code"] == "718-7")
    hemoglobin["valueQuantity"]["value"] = "__VALUE__"
    body = orjson.dumps(request).replace(b'"__VALUE__"', value.encode())
    resp = client.post("/cds-services/pacing-review", data=body, content_type="application/json")
    assert resp.status_code == 200, resp.data[:500]
    summaries = [c["summary"] for c in resp.get_json()["cards"]]
    assert any("Hemoglobin" in s for s in summaries) == (float(value) < 12), summaries


def _all_resources(request):
    for value in request["prefetch"].values():
        for entry in (value.get("entry") or []) if value.get("resourceType") == "Bundle" else [{"resource": value}]:
            yield entry["resource"]


# ------------------------------------------------------------------ validation with reused elements

_STANDARD = make_bundle("standard", patient_id="reuse-1")
_RESOURCES = [e["resource"] for e in _STANDARD["entry"]]


def _outcome(validator, resource):
    try:
        validator._validate_one(resource, "r")
        return "ok"
    except InputError as exc:
        return str(exc)


@pytest.fixture(scope="module")
def validators():
    from fhir_adapter.resources import ResourceValidator

    warm = ResourceValidator()
    for resource in _RESOURCES:  # every code, category, subject ... of the patient is now a reusable part
        warm._validate_one(resource, "warm-up")
    plain = ResourceValidator()
    plain._reusing = lambda model, resource: model.model_validate(resource)  # no reuse at all
    return warm, plain


@FUZZ
@given(data=st.data(), index=st.integers(0, len(_RESOURCES) - 1))
def test_validation_reusing_elements_equals_plain_validation(validators, data, index):
    """Reusing validated elements never changes whether a resource is accepted, nor the error message."""
    warm, plain = validators
    resource = _mutate(_RESOURCES[index], data)
    if not isinstance(resource, dict) or resource.get("resourceType") != _RESOURCES[index]["resourceType"]:
        return  # pooling refuses a missing or unknown resourceType before validation
    warm._ok.clear()
    plain._ok.clear()  # the whole-resource cache must not answer: compare the validation itself
    assert _outcome(warm, resource) == _outcome(plain, resource)


# ------------------------------------------------------------------ request body parsing


def _parse(raw, stdlib_only=False):
    from service import validation
    from service.errors import ApiError

    real = validation.orjson.loads
    if stdlib_only:
        def refuse(_):
            raise orjson.JSONDecodeError("refused", "", 0)
        validation.orjson.loads = refuse
    try:
        return "ok", validation.parse_json_body(raw)
    except ApiError as exc:
        return exc.status, exc.diagnostics
    finally:
        validation.orjson.loads = real


json_texts = st.one_of(
    json_values.map(lambda v: orjson.dumps(v)),
    st.integers(min_value=2**62, max_value=2**70).map(lambda i: b'{"n": %d}' % i),
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"{}", b"[]", b"NaN", b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1e400}', b'{"a": "\\ud800"}',
                     b"\xef\xbb\xbf{}", b'{"a": 1,}', b"{'a': 1}", b' {"a" : [1, 2.5e-3, true, null]} ', b"\x00"]),
)


@FUZZ
@given(raw=json_texts)
def test_fast_body_parse_equals_stdlib_parse(raw):
    """orjson first, the strict stdlib parse for anything it refuses: the same documents and the same errors."""
    fast, slow = _parse(raw), _parse(raw, stdlib_only=True)
    if fast[0] == slow[0] == "ok" and _has_big_int(slow[1]):
        return  # documented difference: integers beyond 64 bits come back as floats from orjson
    assert fast == slow


def _has_big_int(doc) -> bool:
    if isinstance(doc, bool):
        return False
    if isinstance(doc, int):
        return not -2**63 <= doc < 2**64
    if isinstance(doc, dict):
        return any(_has_big_int(v) for v in doc.values())
    if isinstance(doc, list):
        return any(_has_big_int(v) for v in doc)
    return False
