"""Lab results are read under every code of their published value set and converted to the fact's unit."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from engine.loader import load_tree
from fhir_adapter import pool_request
from fhir_adapter.derive import derive_facts

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = ROOT / "tests/examples/patients"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
LOINC = "http://loinc.org"


@pytest.fixture(scope="module")
def facts():
    return load_tree(ROOT / "rules").facts


def hb_value(facts, bundle: dict):
    fact = derive_facts(pool_request(bundle), [facts["hemoglobin"]], NOW)["hemoglobin"]
    return fact.values.get("value") if fact.present else None


def published_codes(stem: str) -> set[str]:
    doc = json.loads((ROOT / "rules/valuesets" / f"{stem}.json").read_text())
    return {c["code"] for inc in doc["compose"]["include"] for c in inc["concept"]}


def test_venous_hemoglobin_in_g_per_l_is_read_in_g_per_dl(facts):
    bundle = json.loads((PATIENTS / "anemia-venous-30350.json").read_text())
    assert hb_value(facts, bundle) == pytest.approx(7.2)


def test_free_plasma_hemoglobin_is_not_read_as_blood_hemoglobin(facts):
    bundle = json.loads((PATIENTS / "anemia-plasma-hb-not-read.json").read_text())
    assert any(c["code"] == "35183-3" for e in bundle["entry"] for c in (e["resource"].get("code") or {}).get("coding", []))
    assert hb_value(facts, bundle) is None


@pytest.mark.parametrize("code, value, unit, g_dl", [
    ("718-7", 13.1, "g/dL", 13.1), ("30352-9", 120, "g/L", 12.0), ("30313-1", 9.5, "g/dL", 9.5),
    ("59260-0", 5.0, "mmol/L", 5.0 * 1.611), ("75928-2", 4.0, "mmol/L", 4.0 * 1.611),
    ("93846-4", 4.5, "mmol/L", 4.5 * 1.611),
])
def test_each_hemoglobin_code_converts(facts, code, value, unit, g_dl):
    bundle = json.loads((PATIENTS / "anemia-venous-30350.json").read_text())
    for entry in bundle["entry"]:
        r = entry["resource"]
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "30350-3":
            r["code"] = {"coding": [{"system": LOINC, "code": code}]}
            r["valueQuantity"] = {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    assert hb_value(facts, bundle) == pytest.approx(g_dl)


def test_hemoglobin_fact_reads_exactly_the_value_set(facts):
    codes = {code for system, code in facts["hemoglobin"].match_keys if system == LOINC}
    assert codes == published_codes("hemoglobin-lab-test")
    assert {"718-7", "59260-0", "30350-3"} <= codes and not {"24360-0", "35183-3"} & codes


def test_tsh_in_blood_under_3015_5_is_read_in_milli_iu_per_l(facts):
    bundle = json.loads((PATIENTS / "tsh-blood-3015.json").read_text())
    fact = derive_facts(pool_request(bundle), [facts["tsh"]], NOW)["tsh"]
    assert fact.present and fact.values["value"] == pytest.approx(9.2)
    codes = {code for system, code in facts["tsh"].match_keys if system == LOINC}
    assert codes == published_codes("tsh-lab-test") == {"3016-3", "3015-5"}


@pytest.mark.parametrize("value, unit, mg_l", [(18, "mg/L", 18.0), (1.8, "mg/dL", 18.0)])
def test_crp_is_read_in_mg_per_l(facts, value, unit, mg_l):
    bundle = json.loads((PATIENTS / "iron-ferritin48-crp-raised.json").read_text())
    for entry in bundle["entry"]:
        r = entry["resource"]
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "1988-5":
            r["valueQuantity"] = {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    fact = derive_facts(pool_request(bundle), [facts["crp"]], NOW)["crp"]
    assert fact.present and fact.values["value"] == pytest.approx(mg_l)


def test_molar_crp_is_not_read_without_a_cited_conversion(facts):
    assert {code for _, code in facts["crp"].match_keys} == published_codes("crp-lab-test") == {"1988-5"}
