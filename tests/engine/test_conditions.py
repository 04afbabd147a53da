"""Condition semantics end to end: value sets (YAML code lists), `not`, missing data, fact-to-fact tests."""

import textwrap

from engine import load_ruleset
from tests.conftest import NOW

RULE = """\
id: test.{name}
version: 1.0.0
status: active
title: test rule {name}
hooks: [patient-view]
evidence: [{{citation: "test citation", url: "https://example.org/evidence"}}]
authors: [{{name: tester}}]
approval: {{by: tester, date: 2026-11-01}}
when:
{when}
card:
  summary: "rule {name} fired"
  indicator: info
"""


def make_rules(tmp_path, rules: dict[str, str]):
    root = tmp_path / "rules"
    (root / "facts").mkdir(parents=True)
    (root / "valuesets").mkdir()
    (root / "r").mkdir()
    (root / "ruleset.yaml").write_text("name: test\nversion: 0.0.1\n")
    (root / "valuesets" / "fibro.yaml").write_text(textwrap.dedent("""\
        valueset:
          title: Fibromyalgia
          source: ICD-10-CM M79.7 and SNOMED CT 203082005 (pacecds clinical reference)
          codes:
            - {system: http://hl7.org/fhir/sid/icd-10-cm, code: M79.7, display: Fibromyalgia}
            - {system: http://snomed.info/sct, code: "203082005", display: Fibromyalgia}
        """))
    (root / "facts" / "f.yaml").write_text(textwrap.dedent("""\
        facts:
          pain_conditions:
            kind: condition
            title: any condition
            codes:
              - {system: http://hl7.org/fhir/sid/icd-10-cm, code: M79.7}
              - {system: http://hl7.org/fhir/sid/icd-10-cm, code: M54.50}
          pain:
            kind: observation
            title: pain 0-10
            codes: [{system: http://loinc.org, code: 72514-3}]
            unit: "{score}"
          worst_pain:
            kind: observation
            title: worst pain
            codes: [{system: http://loinc.org, code: 38208-5}]
            unit: "{score}"
        """))
    for name, when in rules.items():
        (root / "r" / f"{name}.yaml").write_text(RULE.format(name=name, when=textwrap.indent(when, "  ")))
    return load_ruleset(root)


def bundle(*resources):
    patient = {"resourceType": "Patient", "id": "p1"}
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in (patient, *resources)]}


def condition(code, system="http://hl7.org/fhir/sid/icd-10-cm"):
    return {"resourceType": "Condition", "id": f"c-{code}", "clinicalStatus": {"coding": [{"code": "active"}]},
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": system, "code": code}]}}


def score(oid, loinc, value):
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-10-30T10:00:00Z", "valueQuantity": {"value": value, "code": "{score}"}}


def fired(rs, data):
    return sorted(c["extension"]["pacecds.rule"]["id"] for c in rs.evaluate(data, now=NOW).cards)


def test_value_set_from_yaml_code_list(tmp_path):
    rs = make_rules(tmp_path, {"vs": "{fact: pain_conditions, in_valueset: fibro}",
                               "not-vs": "{not: {fact: pain_conditions, in_valueset: fibro}}"})
    assert fired(rs, bundle(condition("M79.7"))) == ["test.vs"]
    assert fired(rs, bundle(condition("M54.50"))) == ["test.not-vs"]


def test_missing_data_is_neither_true_nor_false(tmp_path):
    rs = make_rules(tmp_path, {"high": "{fact: pain, gte: 7}", "not-high": "{not: {fact: pain, gte: 7}}",
                               "missing": "{fact: pain, present: false}"})
    assert fired(rs, bundle(score("p", "72514-3", 8))) == ["test.high"]
    assert fired(rs, bundle(score("p", "72514-3", 3))) == ["test.not-high"]
    assert fired(rs, bundle()) == ["test.missing"]


def test_comparing_two_facts(tmp_path):
    rs = make_rules(tmp_path, {"worse": "{fact: worst_pain, gte: {fact: pain, plus: 2}}"})
    assert fired(rs, bundle(score("a", "72514-3", 4), score("b", "38208-5", 6))) == ["test.worse"]
    assert fired(rs, bundle(score("a", "72514-3", 4), score("b", "38208-5", 5))) == []
    assert fired(rs, bundle(score("b", "38208-5", 9))) == []  # the other fact missing: unknown, not fired


def test_any_all_not_combinations(tmp_path):
    when = """\
all:
  - any:
      - {fact: pain, gte: 7}
      - {fact: worst_pain, gte: 9}
  - not:
      any:
        - {fact: pain_conditions, present: true}
        - {fact: worst_pain, lt: 2}
"""
    rs = make_rules(tmp_path, {"combo": when})
    assert fired(rs, bundle(score("a", "72514-3", 8), score("b", "38208-5", 5))) == ["test.combo"]
    # worst pain missing: "not (worst pain < 2)" is unknown, so the rule does not fire on a guess
    assert fired(rs, bundle(score("a", "72514-3", 8))) == []
    assert fired(rs, bundle(score("a", "72514-3", 8), score("b", "38208-5", 5), condition("M79.7"))) == []
    assert fired(rs, bundle(score("b", "38208-5", 9))) == ["test.combo"]
    assert fired(rs, bundle(score("a", "72514-3", 3), score("b", "38208-5", 5))) == []
