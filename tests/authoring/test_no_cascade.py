"""Item 6a: validate reports every error in every file, and a broken fact file (or one broken fact) is
reported where it is broken, not as a cascade of "unknown fact" errors in the rules that use it."""

import re

import pytest

from engine.loader import RulesetLoadError, guess_fact_names, load_tree
from pacecds.cli import main

LOCATED = re.compile(r"^(?P<file>[^:]+\.(?:ya?ml|json)):(?P<line>\d+):(?P<col>\d+): ")


def errors_of(root):
    with pytest.raises(RulesetLoadError) as info:
        load_tree(root)
    for error in info.value.errors:
        assert LOCATED.match(error), error
    return info.value.errors


def test_unparseable_fact_file_does_not_make_rules_report_unknown_facts(rules_copy):
    labs = rules_copy / "facts" / "labs.yaml"
    labs.write_text(labs.read_text().replace("    kind: observation\n    title: Thyrotropin",
                                             "\tkind: observation\n    title: Thyrotropin"))
    errors = errors_of(rules_copy)
    assert not any("unknown fact" in e for e in errors), errors
    (syntax,) = [e for e in errors if e.startswith(str(labs))]
    assert "is indented with a tab" in syntax
    # each rule using hemoglobin or tsh says so once per fact, naming the broken file
    by_rule = {}
    for e in errors:
        if "labs.yaml has errors" in e:
            by_rule.setdefault(LOCATED.match(e).group("file"), []).append(e)
    assert set(by_rule) == {str(rules_copy / p) for p in (
        "anemia/low-hemoglobin.yaml", "anemia/iron-deficiency.yaml", "thyroid/tsh-abnormal.yaml", "labs/fatigue-workup.yaml")}
    low_hb = by_rule[str(rules_copy / "anemia/low-hemoglobin.yaml")]
    assert len(low_hb) == 1
    assert f"fact 'hemoglobin' is not available: {labs} has errors" in low_hb[0]
    # fatigue-workup reads both hemoglobin and tsh: one line for each
    assert len(by_rule[str(rules_copy / "labs/fatigue-workup.yaml")]) == 2
    assert len(errors) == 1 + 5


def test_a_fact_with_a_schema_error_is_not_available_and_its_neighbours_still_load(rules_copy):
    labs = rules_copy / "facts" / "labs.yaml"
    labs.write_text(labs.read_text().replace("    unit: m[IU]/L", "    unti: m[IU]/L"))
    errors = errors_of(rules_copy)
    assert not any("unknown fact" in e for e in errors), errors
    schema = [e for e in errors if e.startswith(str(labs))]
    assert schema and all("facts.tsh:" in e for e in schema)
    assert any("'unti' was unexpected" in e for e in schema)
    assert not any("low-hemoglobin.yaml" in e for e in errors)  # hemoglobin, in the same file, is fine
    tsh_rule = [e for e in errors if "tsh-abnormal.yaml" in e]
    assert len(tsh_rule) == 1 and f"fact 'tsh' is not available: {labs} has errors" in tsh_rule[0]


def test_only_a_fact_no_file_defines_is_unknown(rules_copy):
    rule = rules_copy / "anemia" / "iron-deficiency.yaml"
    rule.write_text(rule.read_text().replace("{fact: ferritin, lt: {param: threshold}}", "{fact: feritin, lt: {param: threshold}}", 1))
    (error,) = errors_of(rules_copy)
    assert "when.any.0.all.1.fact: unknown fact 'feritin' (define it in rules/facts)" in error


def test_every_error_in_every_file_in_one_run(rules_copy, capsys):
    iron = rules_copy / "anemia" / "iron-deficiency.yaml"
    text = iron.read_text().replace("{fact: ferritin.age_days, lte: {param: max_age_days}}", "{fact: ferritn.age_days, lte: 180}")
    text = text.replace("{fact: ferritin, lt: {param: threshold}}", "{fact: ferritin, lt: {param: treshold}}")
    iron.write_text(text)
    tsh = rules_copy / "thyroid" / "tsh-abnormal.yaml"
    tsh.write_text(tsh.read_text().replace("status: active", "status: live"))
    facts = rules_copy / "facts" / "demographics.yaml"
    facts.write_text(facts.read_text().replace("field: age", "field: years"))
    assert main(["validate", str(rules_copy)]) == 1
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert any("iron-deficiency.yaml" in line and "unknown fact 'ferritn'" in line for line in lines)
    assert any("iron-deficiency.yaml" in line and "unknown parameter 'treshold'" in line for line in lines)
    assert any("tsh-abnormal.yaml:3:" in line and "status" in line for line in lines)
    assert any("demographics.yaml" in line and "facts.age.field" in line for line in lines)
    assert f"{len(lines)} error(s)" in out.err


def test_broken_value_set_file_is_named_where_it_is_used(rules_copy):
    vs = rules_copy / "valuesets" / "cds-pregnancy.json"
    vs.write_text(vs.read_text()[:-20])
    errors = errors_of(rules_copy)
    assert any(e.startswith(str(vs)) and "invalid JSON" in e for e in errors)
    demo = [e for e in errors if "demographics.yaml" in e]
    assert demo and f"value set 'cds-pregnancy' is not available: {vs} has errors" in demo[0]
    assert not any("unknown" in e for e in errors), errors


def test_fact_names_are_guessed_from_a_file_that_does_not_parse():
    text = "# labs\nfacts:\n  ferritin\n    kind: observation\n  tsh:\n    kind: observation\n    codes:\n      - x\nother:\n  nope: 1\n"
    assert guess_fact_names(text) == ["ferritin", "tsh"]
