"""docs/rules.md is generated from the YAML and must match it; the catalog of issue 3 is complete and governed."""

from pathlib import Path

import pytest

from engine import load_ruleset
from governance.reference import build

ROOT = Path(__file__).resolve().parents[2]
CATALOG = [
    "pacing.establish-baseline", "pacing.progress", "pacing.flare-scale-back", "pacing.boom-bust",
    "pacing.goal-review", "sleep.short-duration", "sleep.insomnia-severity", "sleep.apnea-risk",
    "mood.depression-screen", "mood.anxiety-screen", "anemia.low-hemoglobin", "anemia.iron-deficiency",
    "thyroid.tsh-abnormal", "labs.fatigue-workup", "meds.order-sedating-combination",
    # opioid + benzodiazepine, opioid + gabapentinoid, sedative burden and high MME: one card since 1.3.0
    # (issue 12 item 7); the four rules that made them are retired
    "meds.medication-safety",
]
RETIRED_INTO_MEDICATION_SAFETY = ["meds.opioid-benzodiazepine", "meds.opioid-gabapentinoid", "meds.sedative-burden",
                                  "meds.high-mme"]


@pytest.mark.parametrize("rule_id", RETIRED_INTO_MEDICATION_SAFETY)
def test_retired_medication_rules_point_to_their_replacement(ruleset, rule_id):
    rule = ruleset.rule(rule_id)
    assert rule.status == "retired" and "meds.medication-safety" in rule.source["description"]


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset(ROOT / "rules")


def test_rules_doc_is_generated_from_the_yaml():
    assert (ROOT / "docs" / "rules.md").read_text() == build(ROOT / "rules"), "re-run python tools/build_rules_doc.py"


def test_rules_doc_lists_every_rule_with_its_thresholds_and_evidence(ruleset):
    text = (ROOT / "docs" / "rules.md").read_text()
    for rule in ruleset.rules:
        assert f"### `{rule.id}` {rule.version}" in text
        for name, param in (rule.source.get("parameters") or {}).items():
            assert f"| `{name}` |" in text
        for evidence in rule.source["evidence"]:
            assert evidence["url"] in text


@pytest.mark.parametrize("rule_id", CATALOG)
def test_catalog_rule_is_active_approved_and_cited(ruleset, rule_id):
    rule = ruleset.rule(rule_id)
    assert rule is not None, f"{rule_id} missing from rules/"
    assert rule.status == "active"
    assert rule.source["approval"]["by"] and rule.source["approval"]["date"]
    assert all(e["url"].startswith("https://") for e in rule.source["evidence"])
    for name, param in (rule.source.get("parameters") or {}).items():
        assert param.get("note"), f"{rule_id}: parameter {name} must say where its value comes from"


@pytest.mark.parametrize("rule_id", CATALOG)
def test_catalog_rule_has_a_firing_case_and_a_data_quality_trap(rule_id):
    import yaml

    cases = yaml.safe_load((ROOT / "tests" / "examples" / "cases.yaml").read_text())["cases"]
    assert any(rule_id in c.get("fires", []) for c in cases), f"{rule_id}: no example where it fires"
    assert any(rule_id in c.get("does_not_fire", []) and "trap" in c["name"] for c in cases), \
        f"{rule_id}: no data-quality trap (entered-in-error, stopped, stale, wrong unit) where it must not fire"
