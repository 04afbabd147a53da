"""Fact kinds added for the knowledge base: medication_classes, opioid_mme (with fhir_adapter.mme), series_pair."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from fhir_adapter import pool_request
from fhir_adapter.derive import derive_facts
from fhir_adapter.facts import FactDefinition
from fhir_adapter.mme import daily_mme
from fhir_adapter.valuesets import from_fhir_json

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TABLE = {r["code"]: r for r in json.loads((ROOT / "rules/drugs/opioid-strengths.json").read_text())["drugs"]}
FACTORS = json.loads((ROOT / "rules/drugs/mme-conversion-factors.json").read_text())


def vs(stem):
    return from_fhir_json(stem, json.loads((ROOT / "rules/valuesets" / f"{stem}.json").read_text()))


OPIOIDS = vs("opioid-analgesics-with-ambulatory-misuse-potential")


def concept(code, display):
    return {"coding": [{"system": RXNORM, "code": code, "display": display}], "text": display}


def med(rid, code, display, *, kind="MedicationRequest", status="active", dose=1, unit="tablet", freq=None,
        period=1, period_unit="d", prn=False, freq_max=None, timing_code=None, extra=None):
    dosage = {}
    if dose is not None:
        dosage["doseAndRate"] = [{"doseQuantity": {"value": dose, "unit": unit}}]
    if freq is not None:
        rep = {"frequency": freq, "period": period, "periodUnit": period_unit}
        if freq_max is not None:
            rep["frequencyMax"] = freq_max
        dosage["timing"] = {"repeat": rep}
    if timing_code:
        dosage["timing"] = {"code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation",
                                                 "code": timing_code}]}}
    if prn:
        dosage["asNeededBoolean"] = True
    dosage.update(extra or {})
    r = {"resourceType": kind, "id": rid, "status": status, "subject": {"reference": "Patient/p1"},
         "medicationCodeableConcept": concept(code, display)}
    if kind == "MedicationRequest":
        r["intent"] = "order"
        r["dosageInstruction"] = [dosage]
    else:
        r["dosage"] = [dosage]
    return r


def data_of(*resources, draft=()):
    if draft:
        req = {"hook": "order-select", "context": {"patientId": "p1", "draftOrders": {
            "resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in draft]}},
            "prefetch": {"p": {"resourceType": "Patient", "id": "p1"},
                         "m": {"resourceType": "Bundle", "type": "searchset",
                               "entry": [{"resource": r} for r in resources]}}}
        return pool_request(req)
    return pool_request({"resourceType": "Bundle", "type": "collection",
                         "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}}]
                         + [{"resource": r} for r in resources]})


MME = FactDefinition(name="mme", kind="opioid_mme", title="MME", valueset=OPIOIDS, unit="{MME}/d",
                     drug_table=TABLE, factor_table=FACTORS)


def mme_of(*resources):
    return derive_facts(data_of(*resources), [MME], NOW)["mme"]


# --- opioid_mme -------------------------------------------------------------------------------------------------

def test_oxycodone_every_6_hours_is_60_mme_with_the_arithmetic_shown():
    f = mme_of(med("o1", "1049683", "oxycodone hydrochloride 10 MG Oral Tablet", freq=1, period=6, period_unit="h"))
    assert f.values["total"] == 60
    assert f.values["lines"] == ["oxycodone hydrochloride 10 MG Oral Tablet: 1 x 10 mg x 4/day = 40 mg/day x 1.5 = 60 MME/day"]
    assert f.values["computed_count"] == 1 and f.values["uncomputed_count"] == 0
    assert f.provenance == ["MedicationRequest/o1"]


def test_two_opioids_add_up_and_statements_count():
    f = mme_of(med("o1", "1049683", "oxycodone hydrochloride 10 MG Oral Tablet", freq=1, period=6, period_unit="h"),
               med("m1", "892582", "morphine sulfate 15 MG Oral Tablet", kind="MedicationStatement", freq=3))
    assert f.values["total"] == 105 and f.values["opioid_count"] == 2


def test_fentanyl_patch_uses_the_rate_not_the_change_interval():
    f = mme_of(med("f1", "245134", "72 HR fentanyl 0.025 MG/HR Transdermal System", unit="patch", freq=1,
                   period=72, period_unit="h"))
    assert f.values["total"] == 60
    assert "25 mcg/h x 2.4 = 60 MME/day" in f.values["lines"][0]


def test_tramadol_uses_the_2022_factor():
    f = mme_of(med("t1", "835603", "tramadol hydrochloride 50 MG Oral Tablet", freq=4))
    assert f.values["total"] == 40


def test_oral_solution_dose_in_ml():
    f = mme_of(med("s1", "864826", "methadone hydrochloride 5 MG/ML Oral Solution", dose=2, unit="mL", freq=2))
    assert f.values["total"] == pytest.approx(2 * 5 * 2 * 4.7)


def test_dose_given_in_mg_is_used_as_is():
    f = mme_of(med("o2", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", dose=10, unit="mg", freq=2))
    assert f.values["total"] == 30


def test_as_needed_counts_at_the_prescribed_maximum():
    f = mme_of(med("o3", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", freq=1, freq_max=2, period=4,
                   period_unit="h", prn=True))
    assert f.values["total"] == pytest.approx(5 * 12 * 1.5)
    assert "as needed, at the prescribed maximum" in f.values["lines"][0]


def test_timing_code_bid():
    f = mme_of(med("h1", "857002", "acetaminophen 325 MG / hydrocodone bitartrate 5 MG Oral Tablet", timing_code="BID"))
    assert f.values["total"] == 10


def test_missing_frequency_is_not_guessed():
    f = mme_of(med("o4", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", freq=None,
                   extra={"text": "Take as directed"}))
    assert f.present and "total" not in f.values  # unknown, not zero
    assert f.values["computed_count"] == 0 and f.values["uncomputed_count"] == 1
    assert f.values["uncomputed"] == ["oxycodone hydrochloride 5 MG Oral Tablet: no dose frequency in the dosage instructions"]
    assert "lines" not in f.values


def test_buprenorphine_is_not_converted():
    r = daily_mme(med("b1", "1432969", "168 HR buprenorphine 0.015 MG/HR Transdermal System", unit="patch", freq=1,
                      period=7, period_unit="d"),
                  concept("1432969", "168 HR buprenorphine 0.015 MG/HR Transdermal System"), TABLE, FACTORS)
    assert r.mme is None and "no MME factor on purpose" in r.reason


def test_route_outside_the_factor_is_not_converted():
    # buccal fentanyl: the 2.4 factor is for transdermal patches only
    code = next(c for c, row in TABLE.items() if row.get("ingredient") == "fentanyl" and row.get("route") == "transmucosal")
    r = daily_mme(med("f2", code, TABLE[code]["display"], freq=2), concept(code, TABLE[code]["display"]), TABLE, FACTORS)
    assert r.mme is None and "transdermal" in r.reason


def test_unknown_product_and_unknown_unit_are_reported():
    r = daily_mme(med("x", "999999", "made-up opioid"), concept("999999", "made-up opioid"), TABLE, FACTORS)
    assert r.mme is None and "not in the opioid strength table" in r.reason
    r = daily_mme(med("o5", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", unit="spoonful", freq=2),
                  concept("1049621", "oxycodone hydrochloride 5 MG Oral Tablet"), TABLE, FACTORS)
    assert r.mme is None and "spoonful" in r.reason


def test_stopped_and_entered_in_error_orders_do_not_count():
    f = mme_of(med("o1", "1049683", "oxycodone hydrochloride 10 MG Oral Tablet", status="stopped", freq=4),
               med("o2", "1049683", "oxycodone hydrochloride 10 MG Oral Tablet", status="entered-in-error", freq=4),
               med("t1", "835603", "tramadol hydrochloride 50 MG Oral Tablet", freq=2))
    assert f.values["total"] == 20 and f.values["opioid_count"] == 1


def test_same_drug_in_order_and_statement_counts_once_using_the_order():
    f = mme_of(med("s1", "1049683", "oxycodone hydrochloride 10 MG Oral Tablet", kind="MedicationStatement", freq=2),
               med("o1", "1049683", "oxycodone hydrochloride 10 MG Oral Tablet", freq=4))
    assert f.values["total"] == 60 and f.provenance == ["MedicationRequest/o1"]


def test_no_opioid_means_no_total():
    f = mme_of(med("g1", "310431", "gabapentin 300 MG Oral Capsule", freq=3))
    assert not f.present and "total" not in f.values


# --- medication_classes ----------------------------------------------------------------------------------------

CLASSES = FactDefinition(
    name="sed", kind="medication_classes", title="sedating",
    classes=(("opioid", OPIOIDS), ("benzodiazepine", vs("benzodiazepine-medications")),
             ("gabapentinoid", vs("gabapentinoids")), ("muscle relaxant", vs("skeletal-muscle-relaxants"))))


def test_classes_and_distinct_drugs_are_counted():
    d = data_of(med("c1", "828348", "cyclobenzaprine hydrochloride 10 MG Oral Tablet", freq=3),
                med("g1", "310431", "gabapentin 300 MG Oral Capsule", kind="MedicationStatement", freq=3),
                med("g2", "310431", "gabapentin 300 MG Oral Capsule", freq=3),  # same drug twice
                med("b1", "197901", "lorazepam 1 MG Oral Tablet", status="stopped"))
    f = derive_facts(d, [CLASSES], NOW)["sed"]
    assert f.values["class_count"] == 2 and f.values["drug_count"] == 2
    assert f.values["classes"] == ["gabapentinoid", "muscle relaxant"]
    assert f.values["name"] in f.values["names"]


def test_scope_draft_and_all():
    d = data_of(med("o1", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet", freq=4),
                draft=[med("b9", "308048", "alprazolam 0.5 MG Oral Tablet", status="draft", freq=2)])
    import dataclasses

    draft = derive_facts(d, [dataclasses.replace(CLASSES, scope="draft")], NOW)["sed"]
    active = derive_facts(d, [CLASSES], NOW)["sed"]
    both = derive_facts(d, [dataclasses.replace(CLASSES, scope="all")], NOW)["sed"]
    assert (draft.values["classes"], active.values["classes"]) == (["benzodiazepine"], ["opioid"])
    assert both.values["class_count"] == 2


# --- series_pair -----------------------------------------------------------------------------------------------

STEPS = FactDefinition(name="steps", kind="daily_series", title="steps", codes=frozenset({("http://loinc.org", "41950-7")}),
                       unit="{steps}/d", daily="last")
PAIN = FactDefinition(name="pain", kind="daily_series", title="pain", codes=frozenset({("http://loinc.org", "72514-3")}),
                      unit="{score}", daily="mean")
PAIR = FactDefinition(name="pair", kind="series_pair", title="pair", unit="{score}", inputs=(STEPS, PAIN))


def obs(rid, code, value, unit, days_ago, status="final"):
    when = (NOW - dt.timedelta(days=days_ago)).replace(hour=20)
    return {"resourceType": "Observation", "id": rid, "status": status, "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "effectiveDateTime": when.isoformat(), "valueQuantity": {"value": value, "unit": unit, "code": unit}}


def pair_of(steps: dict, pain: dict):
    res = [obs(f"s{d}", "41950-7", v, "{steps}/d", d) for d, v in steps.items()]
    res += [obs(f"p{d}", "72514-3", v, "{score}", d) for d, v in pain.items()]
    return derive_facts(data_of(*res), [PAIR], NOW)["pair"]


def test_pain_after_high_activity_days():
    highs = {14, 12, 10, 8, 6, 4, 2}
    f = pair_of({d: 12000 if d in highs else 3000 for d in range(1, 16)},
                {d: 7 if d + 1 in highs else 4 for d in range(1, 15)})
    assert f.values["difference"] == pytest.approx(3)
    assert f.values["pairs_high"] == 7 and f.values["pairs_low"] == 7


def test_no_link_gives_zero_difference():
    f = pair_of({d: 12000 if d % 2 else 3000 for d in range(1, 16)}, {d: 4 for d in range(1, 15)})
    assert f.values["difference"] == 0


def test_too_few_pairs_give_no_difference_rather_than_a_guess():
    f = pair_of({2: 12000, 3: 3000, 4: 12000}, {1: 7, 2: 4, 3: 7})
    assert f.present and "difference" not in f.values


def test_entered_in_error_symptoms_are_ignored():
    highs = {14, 12, 10, 8, 6, 4, 2}
    res = [obs(f"s{d}", "41950-7", 12000 if d in highs else 3000, "{steps}/d", d) for d in range(1, 16)]
    res += [obs(f"p{d}", "72514-3", 4, "{score}", d) for d in range(1, 15)]
    res += [obs(f"e{d}", "72514-3", 10, "{score}", d - 1, status="entered-in-error") for d in highs]
    f = derive_facts(data_of(*res), [PAIR], NOW)["pair"]
    assert f.values["difference"] == 0


# --- daily_series: readings combined per code ---------------------------------------------------------------

def test_partial_counts_are_summed_and_a_daily_total_wins_on_the_same_day():
    steps = FactDefinition(name="steps", kind="daily_series", title="steps", unit="{steps}/d", daily="last",
                           codes=frozenset({("http://loinc.org", "41950-7"), ("http://loinc.org", "55423-8")}),
                           conversions=(("{steps}", 1.0),),
                           daily_by_code=(("41950-7", "last"), ("55423-8", "sum")))
    res = [obs("a1", "55423-8", 2000, "{steps}", 1), obs("a2", "55423-8", 3000, "{steps}", 1),  # day 1: 5000
           obs("b1", "55423-8", 2000, "{steps}", 2), obs("b2", "55423-8", 3000, "{steps}", 2),
           obs("b3", "41950-7", 5200, "{steps}/d", 2)]  # day 2: the total, not 10200
    f = derive_facts(data_of(*res), [steps], NOW)["steps"]
    assert f.values["last_value"] == 5000 and f.values["days_recorded"] == 2
    daily = [5000, 5200]
    assert f.values["mean_3d"] == sum(daily) / 2


def test_coded_answer_with_an_ordinal_value_is_a_score_and_without_one_is_ignored():
    item9 = FactDefinition(name="item9", kind="observation", title="PHQ-9 item 9", unit="{score}",
                           codes=frozenset({("http://loinc.org", "44260-8")}))

    def coded(rid, days_ago, ordinal=None):
        coding = {"system": "http://loinc.org", "code": "LA6569-3", "display": "Several days"}
        if ordinal is not None:
            coding["extension"] = [{"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue",
                                    "valueDecimal": ordinal}]
        return {"resourceType": "Observation", "id": rid, "status": "final", "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "44260-8"}]},
                "effectiveDateTime": (NOW - dt.timedelta(days=days_ago)).isoformat(),
                "valueCodeableConcept": {"coding": [coding]}}

    f = derive_facts(data_of(coded("q1", 3, ordinal=1)), [item9], NOW)["item9"]
    assert f.values["value"] == 1
    f = derive_facts(data_of(coded("q2", 3)), [item9], NOW)["item9"]
    assert not f.present  # no score in the record: not guessed from the answer code


def test_questionnaire_response_items_named_by_loinc_code_are_scores():
    phq9 = FactDefinition(name="phq9", kind="observation", title="PHQ-9", unit="{score}", questionnaire_items=True,
                          codes=frozenset({("http://loinc.org", "44261-6")}))

    def qr(rid, status, value, days_ago, link="/44261-6", nested=False):
        item = {"linkId": link, "answer": [{"valueInteger": value}]}
        items = [{"linkId": "group", "item": [item]}] if nested else [item]
        return {"resourceType": "QuestionnaireResponse", "id": rid, "status": status,
                "subject": {"reference": "Patient/p1"},
                "authored": (NOW - dt.timedelta(days=days_ago)).isoformat(), "item": items}

    f = derive_facts(data_of(qr("a", "completed", 12, 10), qr("b", "amended", 15, 3, nested=True),
                             qr("c", "in-progress", 27, 1), qr("d", "entered-in-error", 27, 1),
                             qr("e", "completed", 20, 2, link="/44260-8")), [phq9], NOW)["phq9"]
    assert f.values["value"] == 15 and f.values["count"] == 2
    assert f.provenance == ["QuestionnaireResponse/a", "QuestionnaireResponse/b"]


def test_questionnaire_responses_are_not_read_unless_the_fact_asks():
    phq9 = FactDefinition(name="phq9", kind="observation", title="PHQ-9", unit="{score}",
                          codes=frozenset({("http://loinc.org", "44261-6")}))
    res = {"resourceType": "QuestionnaireResponse", "id": "a", "status": "completed", "subject": {"reference": "Patient/p1"},
           "authored": NOW.isoformat(), "item": [{"linkId": "44261-6", "answer": [{"valueInteger": 12}]}]}
    assert not derive_facts(data_of(res), [phq9], NOW)["phq9"].present
    assert "QuestionnaireResponse" not in phq9.resource_types
