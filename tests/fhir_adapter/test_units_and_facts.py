import datetime as dt

import pytest

from fhir_adapter import pool_request, ucum
from fhir_adapter.derive import derive_facts
from fhir_adapter.facts import FactDefinition

NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.timezone.utc)
LOINC = "http://loinc.org"


@pytest.mark.parametrize("src, dst, factor", [
    ("g/L", "g/dL", 0.1), ("mg/dL", "g/dL", 0.001), ("u[IU]/mL", "m[IU]/L", 1.0), ("uIU/mL", "m[IU]/L", 1.0),
    ("min", "h", 1 / 60), ("ng/mL", "ug/L", 1.0), ("/d", "{steps}/d", 1.0), ("{score}", "1", 1.0),
])
def test_ucum_conversions(src, dst, factor):
    assert ucum.conversion_factor(src, dst) == pytest.approx(factor)


def test_ucum_refuses_incompatible_units():
    with pytest.raises(ucum.UnitError):
        ucum.conversion_factor("mmol/L", "g/dL")
    with pytest.raises(ucum.UnitError):
        ucum.conversion_factor("furlong", "m")


def steps(day_offsets_values, status="final", code="55423-8"):
    resources = [{"resourceType": "Patient", "id": "p1"}]
    for i, (days_ago, value) in enumerate(day_offsets_values):
        when = (NOW - dt.timedelta(days=days_ago)).replace(hour=9).isoformat()
        resources.append({"resourceType": "Observation", "id": f"s{i}", "status": status,
                          "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": "Patient/p1"},
                          "effectiveDateTime": when, "valueQuantity": {"value": value, "code": "/d", "unit": "steps/day"}})
    return pool_request({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]})


STEPS = FactDefinition(name="daily_steps", kind="daily_series", title="steps", codes=frozenset({(LOINC, "55423-8")}), unit="/d")


def test_daily_series_features():
    # 14 days at 4000 except a 2-reading day (summed) and a rising week
    rows = [(d, 4000) for d in range(8, 15)] + [(d, 5000) for d in range(2, 8)] + [(1, 2500), (1, 2500)]
    fact = derive_facts(steps(rows), [STEPS], NOW)["daily_steps"]
    v = fact.values
    assert v["days_recorded"] == 14
    assert v["mean_7d"] == pytest.approx(5000)
    assert v["prev_mean_7d"] == pytest.approx(4000)
    assert v["mean_3d"] == pytest.approx(5000)
    assert v["slope_14d"] > 0
    assert 0 < v["cv_14d"] < 0.2
    assert len(fact.provenance) == len(rows)


def test_daily_series_leaves_missing_days_missing():
    fact = derive_facts(steps([(1, 3000), (3, 3000), (9, 3000)]), [STEPS], NOW)["daily_steps"]
    assert fact.values["days_recorded"] == 3
    assert "mean_7d" not in fact.values  # two days in a week is too few for a mean


def test_entered_in_error_and_future_data_are_ignored():
    fact = derive_facts(steps([(d, 9000) for d in range(1, 15)], status="entered-in-error"), [STEPS], NOW)["daily_steps"]
    assert fact.values["days_recorded"] == 0 and not fact.present
    future = derive_facts(steps([(-2, 9000)]), [STEPS], NOW)["daily_steps"]
    assert not future.present


def test_condition_status_filters():
    definition = FactDefinition(name="fm", kind="condition", title="fibromyalgia",
                                codes=frozenset({("http://hl7.org/fhir/sid/icd-10-cm", "M797")}))

    def cond(cid, clinical, verification="confirmed", code="M79.7"):
        return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p"},
                "clinicalStatus": {"coding": [{"code": clinical}]}, "verificationStatus": {"coding": [{"code": verification}]},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]}}

    def fact_for(*conds):
        data = pool_request({"resourceType": "Bundle", "type": "collection",
                             "entry": [{"resource": c} for c in ({"resourceType": "Patient", "id": "p"}, *conds)]})
        return derive_facts(data, [definition], NOW)["fm"]

    assert fact_for(cond("a", "active")).present
    assert not fact_for(cond("a", "inactive"), cond("b", "resolved")).present
    assert not fact_for(cond("a", "active", "entered-in-error"), cond("b", "active", "refuted")).present
    assert fact_for(cond("a", "recurrence", code="m79.7")).values["count"] == 1  # ICD-10 dot and case do not matter


def test_medication_request_and_statement_both_count():
    definition = FactDefinition(name="opioids", kind="medication", title="opioids",
                                codes=frozenset({("http://www.nlm.nih.gov/research/umls/rxnorm", "1049621")}))
    med = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1049621",
                       "display": "oxycodone hydrochloride 5 MG Oral Tablet"}]}
    resources = [
        {"resourceType": "Patient", "id": "p"},
        {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order", "medicationCodeableConcept": med, "subject": {"reference": "Patient/p"}},
        {"resourceType": "MedicationRequest", "id": "mr2", "status": "stopped", "intent": "order", "medicationCodeableConcept": med, "subject": {"reference": "Patient/p"}},
        {"resourceType": "MedicationStatement", "id": "ms1", "status": "active", "medicationCodeableConcept": med, "subject": {"reference": "Patient/p"}},
        {"resourceType": "MedicationStatement", "id": "ms2", "status": "entered-in-error", "medicationCodeableConcept": med, "subject": {"reference": "Patient/p"}},
    ]
    data = pool_request({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]})
    fact = derive_facts(data, [definition], NOW)["opioids"]
    assert fact.values["count"] == 2
    assert fact.provenance == ["MedicationRequest/mr1", "MedicationStatement/ms1"]


def test_per_evaluation_index_follows_a_replaced_pool():
    """Facts share one index of the Observations per evaluation; a pool replaced afterwards (as validation
    does) is indexed anew, never answered from the old one."""
    data = steps([(d, 4000) for d in range(1, 8)])
    assert derive_facts(data, [STEPS], NOW)["daily_steps"].values["mean_7d"] == pytest.approx(4000)
    data.by_type = {**data.by_type, "Observation": data.by_type["Observation"][:3]}
    fact = derive_facts(data, [STEPS], NOW)["daily_steps"]
    assert fact.values["days_recorded"] == 3 and len(fact.provenance) == 3


def test_observation_not_clearly_about_the_patient_is_not_used():
    """Patient identity is decided once, at pooling: another patient's data is dropped, data whose subject is
    unclear (another server, identifier only, none) is left out and named in the data notes."""
    data = steps([(d, 4000) for d in range(1, 6)])
    obs = data.by_type["Observation"]
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}}] + [{"resource": o} for o in obs]}
    obs[0]["subject"] = {"reference": "https://other-ehr.example/fhir/Patient/p1"}
    obs[1]["subject"] = {"identifier": {"system": "urn:mrn", "value": "123"}}
    obs[2]["subject"] = {"reference": "Patient/p2"}
    del obs[3]["subject"]
    data = pool_request(bundle)
    fact = derive_facts(data, [STEPS], NOW)["daily_steps"]
    assert fact.provenance == ["Observation/s4"]
    notes = data.notes()
    assert "Observation/s0 at bundle.entry[1]: not used, its subject is a Patient on another server" in notes
    assert "Observation/s1 at bundle.entry[2]: not used, its subject is given only by identifier" in notes
    assert "Observation/s3 at bundle.entry[4]: not used, it names no subject (patient)" in notes
    assert "1 resource(s) about another patient dropped" in notes


def test_validation_is_remembered_per_chart_and_per_resource(monkeypatch):
    """A chart seen before costs no validation; a chart with one resource changed validates only that one,
    and an invalid change is refused even though the rest of the chart is remembered."""
    from fhir_adapter import InputError, ResourceValidator

    validator = ResourceValidator()
    validated = []
    real = ResourceValidator._validate_one
    monkeypatch.setattr(ResourceValidator, "_validate_one",
                        lambda self, r, where: (validated.append(r["id"]), real(self, r, where))[1])
    rows = [(d, 4000) for d in range(1, 6)]
    validator.validate(steps(rows), {"Patient", "Observation"})
    assert len(validated) == 6
    validated.clear()
    validator.validate(steps(rows), {"Patient", "Observation"})
    assert validated == []
    changed = steps(rows)
    changed.by_type["Observation"][2]["valueQuantity"]["value"] = 4100
    validator.validate(changed, {"Patient", "Observation"})
    assert validated == ["s2"]
    broken = steps(rows)
    broken.by_type["Observation"][2]["valueQuantity"]["value"] = "many"
    with pytest.raises(InputError, match="s2"):
        validator.validate(broken, {"Patient", "Observation"})


def test_remembered_charts_are_bounded_by_the_resources_they_hold():
    from fhir_adapter import ResourceValidator

    validator = ResourceValidator(max_chart_resources=10)
    for n in range(5):  # charts of 1 Patient + 4 Observations, each different
        validator.validate(steps([(d, 4000 + n) for d in range(1, 5)]), {"Patient", "Observation"})
        assert validator._chart_resources <= 10
    assert len(validator._charts) == 2 and validator._chart_resources == 10


def test_memos_never_keep_long_strings_a_caller_sent():
    """Codes, times and audit strings are memoised for speed; a long string (anyone can send one) is answered
    but never kept, so no request can grow a cache by its size."""
    from audit import record
    from fhir_adapter import facts, valuesets

    long_system = "http://example.org/" + "x" * 2000
    assert valuesets.code_key(long_system, "123") == (long_system, "123")
    before = facts._one_key.cache_info().currsize
    assert facts.coding_keys({"coding": [{"system": long_system, "code": "1"}]}) == {(long_system, "1")}
    assert facts._one_key.cache_info().currsize == before
    comment = "on iron already " * 100 + "Bearer abc"
    assert record.scrub({"userComment": comment})[0]["userComment"] == record.REDACTED
