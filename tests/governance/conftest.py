"""A small, self-contained rules tree to release, change and compare."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

RULE = textwrap.dedent("""\
    id: anemia.low-hemoglobin
    version: 1.0.0
    status: active
    title: Hemoglobin below the WHO anaemia threshold
    hooks: [patient-view]
    evidence:
      - citation: "WHO. Haemoglobin concentrations for the diagnosis of anaemia. 2011"
        url: https://iris.who.int/handle/10665/85839
    authors:
      - {name: pacecds clinical content team, role: author}
    developer: pacecds project
    funding: None (volunteer effort)
    approval: {by: clinical governance group, date: 2026-11-20}
    released: 2026-11-20
    intended_use: Prompt review of a low hemoglobin.
    population: Adults with chronic musculoskeletal pain.
    exclusions: [Results older than 90 days]
    parameters:
      women_threshold: {value: 12.0, unit: g/dL}
    when:
      all:
        - {fact: age, gte: 15}
        - {fact: sex, eq: female}
        - {fact: hemoglobin, lt: {param: women_threshold}}
    card:
      summary: "Hemoglobin is low"
      indicator: warning
    """)

PACING = textwrap.dedent("""\
    id: pacing.boom-bust
    version: 2.0.0
    status: draft
    title: Boom-bust activity pattern
    hooks: [patient-view]
    evidence: [{citation: "Antcliff D et al. Activity pacing. 2021"}]
    authors: [{name: A. Author}]
    when:
      all:
        - {fact: daily_steps_cv, gt: 0.5}
        - {fact: pain_score, gte: 7}
    card:
      summary: "Activity swings between busy and rest days"
      indicator: info
    """)

VALUESET = {
    "resourceType": "ValueSet", "id": "opioids", "status": "active",
    "compose": {"include": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                             "concept": [{"code": "1049621", "display": "oxycodone 5 MG Oral Tablet"},
                                         {"code": "197696", "display": "codeine 30 MG Oral Tablet"}]}]},
}
EXPANDED = {
    "resourceType": "ValueSet", "id": "benzos", "status": "active",
    "expansion": {"contains": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197591",
                                "display": "diazepam 5 MG Oral Tablet"}]},
}
CODES = textwrap.dedent("""\
    valueset:
      title: Sleep apnoea
      source: SNOMED CT
      system: http://snomed.info/sct
      codes:
        - {code: "73430006", display: Sleep apnea}
    """)


def make_tree(root: Path) -> Path:
    (root / "anemia").mkdir(parents=True)
    (root / "pacing").mkdir()
    (root / "facts").mkdir()
    (root / "valuesets").mkdir()
    (root / "anemia" / "low-hemoglobin.yaml").write_text(RULE)
    (root / "pacing" / "boom-bust.yaml").write_text(PACING)
    (root / "facts" / "labs.yaml").write_text("facts:\n  hemoglobin: {kind: observation, unit: g/dL}\n")
    (root / "valuesets" / "opioids.json").write_text(json.dumps(VALUESET, indent=2))
    (root / "valuesets" / "benzos.json").write_text(json.dumps(EXPANDED, indent=2))
    (root / "valuesets" / "sleep-apnoea.yaml").write_text(CODES)
    (root / "ruleset.yaml").write_text("name: pacecds-test\nversion: 1.0.0\n")
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "rules")
