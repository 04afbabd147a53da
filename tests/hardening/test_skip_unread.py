"""Resources that no fact can read are not validated (speed), and nothing unvalidated ever reaches a fact."""

import copy
import json

import pytest

from bench.generate import NOW as BENCH_NOW
from bench.generate import make_bundle
from engine import InputError
from fhir_adapter.resources import ResourceValidator
from tests.conftest import EXAMPLES, NOW


def _examples():
    return sorted(p.stem for p in (EXAMPLES / "patients").glob("*.json"))


@pytest.fixture
def validated(monkeypatch, ruleset):
    """Record every resource the validator looks at; the ruleset gets a validator that remembers nothing yet."""
    seen = set()
    real = ResourceValidator._validate_each

    def spy(self, resources, data):
        seen.update(f"{r.get('resourceType')}/{r.get('id', '?')}" for r in resources)
        return real(self, resources, data)

    monkeypatch.setattr(ResourceValidator, "_validate_each", spy)
    monkeypatch.setattr(ruleset, "_validator", ResourceValidator())
    return seen


def _check(ruleset, doc, now, seen, hook=None):
    result = ruleset.evaluate(doc, now=now, hook=hook)
    used = {ref for fact in result.facts.values() for ref in fact.provenance}
    assert used <= seen, f"facts read unvalidated resources: {sorted(used - seen)}"
    return result


@pytest.mark.parametrize("name", _examples())
def test_every_resource_a_fact_reads_was_validated(ruleset, validated, name):
    doc = json.loads((EXAMPLES / "patients" / f"{name}.json").read_text())
    _check(ruleset, doc, NOW, validated)


@pytest.mark.parametrize("size", ["small", "standard"])
def test_generated_patients_skip_unread_observations(ruleset, validated, size):
    bundle = make_bundle(size, patient_id=f"skip-{size}")
    result = _check(ruleset, bundle, BENCH_NOW, validated)
    total = len(bundle["entry"])
    # steps, pain and labs no rule of this ruleset reads are skipped; whatever facts used was validated
    assert len(validated) <= total
    assert result.patient_id == f"skip-{size}"


def test_unread_but_broken_observation_is_skipped_and_read_one_is_refused(ruleset):
    bundle = make_bundle("small", patient_id="skip-broken")
    obs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    read = next(o for o in obs if o["code"]["coding"][0]["code"] == "718-7")  # hemoglobin
    # a body temperature (LOINC 8310-5): an observation no fact of this ruleset reads (heart rate, the example
    # before ruleset 1.1.0, is now read as a pacing intensity cue)
    unread = copy.deepcopy(read)
    unread.update(id="skip-broken-temperature", code={"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
                  valueQuantity={"value": 36.8, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"})
    unread.pop("referenceRange", None)
    read_codes = {c.split("|", 1)[1] for req in ruleset.data_requirements("patient-view") for c in req["codes"]}
    assert "8310-5" not in read_codes
    bundle["entry"].append({"resource": unread})
    broken = copy.deepcopy(bundle)
    for entry in broken["entry"]:
        if entry["resource"]["id"] == unread["id"]:
            entry["resource"]["valueQuantity"]["value"] = "ten"
    ruleset.evaluate(broken, now=BENCH_NOW)  # no error: nothing reads it
    for entry in broken["entry"]:
        if entry["resource"]["id"] == read["id"]:
            entry["resource"]["valueQuantity"]["value"] = "ten"
    with pytest.raises(InputError, match=f"Observation/{read['id']}"):
        ruleset.evaluate(broken, now=BENCH_NOW)


@pytest.mark.parametrize("code", [
    "718-7",  # a bare string where a CodeableConcept belongs
    {"coding": "718-7"},
    {"coding": [["718-7"]]},
    {"coding": [{"system": 5, "code": "718-7"}]},
    {"coding": [{"system": ["http://loinc.org"], "code": "718-7"}]},
    {"coding": [{"system": "http://loinc.org", "code": {"a": 1}}]},
])
def test_malformed_codes_are_validated_not_skipped(ruleset, code):
    bundle = make_bundle("small", patient_id="skip-malformed")
    obs = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    obs["code"] = code
    with pytest.raises(InputError, match=obs["id"]):
        ruleset.evaluate(bundle, now=BENCH_NOW)


@pytest.mark.parametrize("name", _examples() + ["generated-standard", "generated-small"])
def test_skipping_unread_resources_changes_no_fact(ruleset, name):
    """Facts from the validated pool (unread resources skipped) equal facts from every resource of the input."""
    from fhir_adapter import pool_request
    from fhir_adapter.derive import derive_facts

    if name.startswith("generated-"):
        doc, now = make_bundle(name.split("-")[1], patient_id=name), BENCH_NOW
    else:
        doc, now = json.loads((EXAMPLES / "patients" / f"{name}.json").read_text()), NOW
    compared = 0
    for hook in (None, "order-select", "order-sign"):
        try:
            everything = pool_request(copy.deepcopy(doc), hook=hook)
            program = ruleset._programs[everything.hook or "patient-view"]
            validated = pool_request(copy.deepcopy(doc), hook=hook)
            ruleset._validator.validate(validated, program.resource_types, program.needs)
        except InputError:
            continue  # e.g. an order hook without draft orders
        assert sum(map(len, validated.by_type.values())) <= sum(map(len, everything.by_type.values()))
        assert derive_facts(validated, program.definitions, now) == derive_facts(everything, program.definitions, now)
        compared += 1
    assert compared
