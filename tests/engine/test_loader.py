import re

import pytest

from engine import RulesetLoadError, load_ruleset
from engine.loader import load_tree

LOCATED = re.compile(r"^(?P<file>[^:]+\.ya?ml):(?P<line>\d+):(?P<col>\d+): ")


def errors_of(path):
    with pytest.raises(RulesetLoadError) as info:
        load_tree(path)
    for error in info.value.errors:
        assert LOCATED.match(error), f"error without file:line:col: {error}"
    return info.value.errors


def test_bundled_rules_load_and_carry_identity(ruleset):
    assert ruleset.name and ruleset.version
    assert re.fullmatch(r"[0-9a-f]{64}", ruleset.sha256)
    assert {"anemia.low-hemoglobin", "thyroid.tsh-abnormal"} <= {r.id for r in ruleset.rules}


def test_all_errors_in_a_tree_are_reported_with_positions(rules_copy):
    rule = rules_copy / "anemia" / "low-hemoglobin.yaml"
    text = rule.read_text()
    rule.write_text(text.replace("{fact: hemoglobin, lt: {param: women_threshold}}", "{fact: hemoglobn, lt: 12}"))
    tsh = rules_copy / "thyroid" / "tsh-abnormal.yaml"
    tsh.write_text(tsh.read_text().replace("status: active", "status: live"))
    errors = errors_of(rules_copy)
    assert len(errors) == 2
    anemia = next(e for e in errors if "low-hemoglobin.yaml" in e)
    assert "unknown fact 'hemoglobn'" in anemia
    line = int(LOCATED.match(anemia).group("line"))
    assert "hemoglobn" in rule.read_text().splitlines()[line - 1]
    status = next(e for e in errors if "tsh-abnormal.yaml" in e)
    assert "status" in status and ":3:" in status


def test_unit_that_cannot_convert_is_a_load_error(rules_copy):
    rule = rules_copy / "anemia" / "low-hemoglobin.yaml"
    rule.write_text(rule.read_text().replace("men_threshold: {value: 13.0, unit: g/dL", "men_threshold: {value: 13.0, unit: mmol/L"))
    (error,) = errors_of(rules_copy)
    assert "does not convert" in error and "low-hemoglobin.yaml" in error


def test_threshold_without_unit_on_a_measured_fact_is_rejected(rules_copy):
    rule = rules_copy / "anemia" / "low-hemoglobin.yaml"
    rule.write_text(rule.read_text().replace("{fact: hemoglobin, lt: {param: severe_threshold}}", "{fact: hemoglobin, lt: 8}"))
    (error,) = errors_of(rules_copy)
    assert "needs a unit" in error


def test_unknown_value_set_duplicate_id_and_long_summary(rules_copy):
    facts = rules_copy / "facts" / "demographics.yaml"
    facts.write_text(facts.read_text().replace("valueset: cds-pregnancy", "valueset: no-such-set"))
    dup = rules_copy / "thyroid" / "zz-copy.yaml"
    dup.write_text((rules_copy / "thyroid" / "tsh-abnormal.yaml").read_text())
    long = rules_copy / "thyroid" / "tsh-abnormal.yaml"
    long.write_text(long.read_text().replace(
        'summary: "TSH {tsh.value:.2f} mIU/L is outside the reference range; thyroid dysfunction can cause fatigue."',
        'summary: "TSH {tsh.value:.2f} mIU/L is outside the reference range ' + "x" * 80 + ' {tsh.value} {tsh.ref_high}"'))
    errors = errors_of(rules_copy)
    assert any("unknown value set 'no-such-set'" in e for e in errors)
    assert any("duplicate rule id 'thyroid.tsh-abnormal'" in e for e in errors)
    assert any("summary can reach" in e and "limit is 139" in e for e in errors)


def test_yaml_is_loaded_safely(rules_copy):
    rule = rules_copy / "thyroid" / "tsh-abnormal.yaml"
    text, n = re.subn(r"(?m)^version: .*$", "version: !!python/object/apply:os.system ['echo pwned']", rule.read_text())
    assert n == 1
    rule.write_text(text)
    (error,) = errors_of(rules_copy)
    assert "tsh-abnormal.yaml:2:" in error and "not allowed" in error


def test_broken_yaml_syntax_names_the_line(rules_copy):
    rule = rules_copy / "thyroid" / "tsh-abnormal.yaml"
    lines = rule.read_text().splitlines()
    lines[4] = "hooks: [patient-view"
    rule.write_text("\n".join(lines) + "\n")
    (error,) = errors_of(rules_copy)
    assert "tsh-abnormal.yaml:" in error and "invalid YAML" in error


def test_active_rule_needs_approval_and_evidence_needs_link(rules_copy):
    rule = rules_copy / "thyroid" / "tsh-abnormal.yaml"
    text, n = re.subn(r"(?m)^approval: .*\n", "", rule.read_text())
    text, m = re.subn(r"(?m)^    url: https://.*\n", "", text, count=1)
    assert n == 1 and m == 1
    rule.write_text(text)
    errors = errors_of(rules_copy)
    assert any("approval" in e for e in errors)
    assert any("evidence.0" in e and "url" in e for e in errors)


def test_a_scale_fixed_by_a_code_the_fact_does_not_read_is_a_load_error(rules_copy):
    facts = rules_copy / "facts" / "activity.yaml"
    facts.write_text(facts.read_text().replace("fixed_by: [72514-3]", "fixed_by: [38221-8]"))
    errors = errors_of(rules_copy)
    assert any("activity.yaml" in e and "scale:" in e and "38221-8" in e for e in errors), errors


def test_cli_validate_reports_errors(rules_copy, capsys):
    from pacecds.cli import main

    assert main(["validate", str(rules_copy)]) == 0
    rule = rules_copy / "anemia" / "low-hemoglobin.yaml"
    rule.write_text(rule.read_text().replace("{fact: age, gte: 15}", "{fact: age, gte: 15, lt: 3}"))
    capsys.readouterr()
    assert main(["validate", str(rules_copy)]) == 1
    out = capsys.readouterr().out
    assert LOCATED.match(out.splitlines()[0])


def test_two_ruleset_versions_live_side_by_side(rules_copy, ruleset):
    from tests.conftest import NOW, load_example

    rule = rules_copy / "anemia" / "low-hemoglobin.yaml"
    rule.write_text(rule.read_text().replace("women_threshold: {value: 12.0", "women_threshold: {value: 10.0")
                    .replace("version: 1.0.0", "version: 1.1.0", 1))
    other = load_ruleset(rules_copy)
    assert other.sha256 != ruleset.sha256
    patient = load_example("anemia-woman-low-gdl")  # Hb 10.8: below 12.0, not below 10.0
    for _ in range(3):
        assert [c["extension"]["pacecds.rule"]["id"] for c in ruleset.evaluate(patient, now=NOW).cards] == ["anemia.low-hemoglobin"]
        assert other.evaluate(patient, now=NOW).cards == []
