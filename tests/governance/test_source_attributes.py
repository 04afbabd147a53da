from __future__ import annotations

import json

import yaml

from governance.attributes import rule_source_attributes

from .conftest import PACING, RULE
from .test_release import run


def test_attributes_from_rule_yaml():
    a = rule_source_attributes(yaml.safe_load(RULE))
    assert a["id"] == "anemia.low-hemoglobin" and a["version"] == "1.0.0" and a["status"] == "active"
    assert a["bibliography"][0]["url"] == "https://iris.who.int/handle/10665/85839"
    assert a["developer"] == "pacecds project"
    assert a["funding"] == "None (volunteer effort)"
    assert a["released"] == "2026-11-20" and a["revised"] is None
    assert a["intended_use"] == "Prompt review of a low hemoglobin."
    assert a["population"].startswith("Adults")
    assert a["exclusions"] == ["Results older than 90 days"]
    assert a["inputs"] == ["age", "hemoglobin", "sex"]
    assert a["uses"]["sex"] and a["uses"]["date_of_birth"] and not a["uses"]["race"]


def test_missing_attributes_are_said_as_missing():
    a = rule_source_attributes(yaml.safe_load(PACING))
    assert a["developer"] == "A. Author"          # falls back to the authors
    assert a["funding"] == "not stated" and a["intended_use"] == "not stated"
    assert a["uses"]["health_status_assessments"]  # pain_score


def test_accepts_a_loaded_rule_object():
    class Rule:
        source = yaml.safe_load(RULE)
    assert rule_source_attributes(Rule())["id"] == "anemia.low-hemoglobin"


def test_rules_cli_json_and_markdown(tree, capsys):
    rc, out, _ = run(capsys, "rules", "--rules", str(tree), "--format", "json")
    items = json.loads(out)
    assert rc == 0 and [i["id"] for i in items] == ["anemia.low-hemoglobin", "pacing.boom-bust"]
    rc, out, _ = run(capsys, "rules", "--rules", str(tree), "--format", "markdown")
    assert "## Hemoglobin below the WHO anaemia threshold" in out
    assert "**Funding source**: None (volunteer effort)" in out
    assert "Sex, Date of birth (age)" in out
    rc, out, _ = run(capsys, "rules", "--rules", str(tree), "--format", "json", "pacing.boom-bust")
    assert [i["id"] for i in json.loads(out)] == ["pacing.boom-bust"]
    rc, _, err = run(capsys, "rules", "--rules", str(tree), "nope")
    assert rc == 1 and "no rule nope" in err


def test_data_elements_follow_fact_definitions():
    facts = {
        "sex": {"kind": "patient", "field": "gender"},
        "age": {"kind": "patient", "field": "age"},
        "pain_daily": {"kind": "daily_series", "unit": "{score}",
                       "codes": [{"code": "72514-3", "display": "Pain severity - 0-10 verbal numeric rating [Score] - Reported"}]},
        "daily_steps": {"kind": "daily_series", "unit": "{steps}/d"},
        "pain_after_active_days": {"kind": "series_pair", "activity": "daily_steps", "symptom": "pain_daily"},
    }
    rule = {"id": "r", "version": "1.0.0", "when": {"all": [{"fact": "pain_after_active_days", "gt": 0.5},
                                                         {"fact": "age", "gte": 18}]}}
    uses = rule_source_attributes(rule, facts)["uses"]
    assert uses["health_status_assessments"]          # through the derived fact's symptom series
    assert uses["date_of_birth"] and not uses["sex"] and not uses["race"]
    steps_only = {"id": "s", "version": "1.0.0", "when": {"fact": "daily_steps", "gte": 1000}}
    assert not any(rule_source_attributes(steps_only, facts)["uses"].values())


def test_engine_rule_finds_its_fact_definitions(tree):
    (tree / "facts" / "demographics.yaml").write_text("facts:\n  sex: {kind: patient, field: gender}\n")

    class Rule:
        source = yaml.safe_load(RULE)
        file = str(tree / "anemia" / "low-hemoglobin.yaml")
    uses = rule_source_attributes(Rule())["uses"]
    assert uses["sex"]
