"""Item 6c: a threshold whose unit converts but lands outside the fact's plausible range is refused."""

import re

import pytest
import yaml

from engine.loader import RulesetLoadError, load_tree
from tests.conftest import RULES

MEASURED = ("observation", "daily_series")


def errors_of(root):
    with pytest.raises(RulesetLoadError) as info:
        load_tree(root)
    return info.value.errors


def test_wrong_unit_on_a_parameter_is_refused_with_its_position(rules_copy):
    rule = rules_copy / "anemia" / "iron-deficiency.yaml"
    rule.write_text(rule.read_text().replace("threshold: {value: 30, unit: ng/mL", "threshold: {value: 30, unit: g/dL"))
    errors = errors_of(rules_copy)
    assert len(errors) == 2  # the threshold is used twice: the low-ferritin test, and the inflammation card variant
    for error, path in zip(errors, ("when.any.0.all.1.lt", "card.variants.0.when.all.0.gte")):
        match = re.match(rf"^{re.escape(str(rule))}:(\d+):(\d+): {re.escape(path)}: (.*)$", error)
        assert match, error
        assert match.group(3) == ("parameter threshold 30 g/dL for ferritin is 300000000 ng/mL, outside the "
                                  "plausible 0\u2013100000 ng/mL for ferritin; check the unit")
        assert "{param: threshold}" in rule.read_text().splitlines()[int(match.group(1)) - 1]


def test_wrong_unit_on_an_inline_quantity_is_refused(rules_copy):
    rule = rules_copy / "anemia" / "low-hemoglobin.yaml"
    rule.write_text(rule.read_text().replace("{fact: hemoglobin, lt: {param: severe_threshold}}",
                                             "{fact: hemoglobin, lt: {value: 80, unit: g/dL}}"))
    (error,) = errors_of(rules_copy)
    assert "80 g/dL for hemoglobin outside the plausible 0\u201325 g/dL for hemoglobin; check the unit" in error


def test_a_unit_that_converts_into_range_is_fine(rules_copy):
    rule = rules_copy / "anemia" / "low-hemoglobin.yaml"
    rule.write_text(rule.read_text().replace("severe_threshold: {value: 8.0, unit: g/dL", "severe_threshold: {value: 80, unit: g/L"))
    tree = load_tree(rules_copy)
    assert any(r.id == "anemia.low-hemoglobin" for r in tree.rules)
    assert tree.plausible["hemoglobin"] == (0.0, 25.0)


def test_score_outside_its_scale_is_refused(rules_copy):
    rule = rules_copy / "mood" / "depression-screen.yaml"
    rule.write_text(rule.read_text().replace('positive: {value: 10, unit: "{score}"', 'positive: {value: 100, unit: "{score}"'))
    errors = errors_of(rules_copy)
    assert any("parameter positive 100 {score} for phq9_total outside the plausible 0\u201327 {score} for phq9_total; "
               "check the value" in e for e in errors), errors


def test_plausible_range_is_checked_in_the_fact_file(rules_copy):
    facts = rules_copy / "facts" / "iron.yaml"
    facts.write_text(facts.read_text().replace("plausible: {min: 0, max: 100000}", "plausible: {min: 10, max: 1}"))
    errors = errors_of(rules_copy)
    assert any(e.startswith(str(facts)) and "plausible: needs the fact's unit and min <= max" in e for e in errors)
    assert not any("unknown fact" in e for e in errors)


def test_every_bundled_measured_fact_declares_a_commented_plausible_range():
    for path in sorted((RULES / "facts").glob("*.yaml")):
        text = path.read_text()
        for name, raw in yaml.safe_load(text)["facts"].items():
            if raw["kind"] in MEASURED:
                assert "plausible" in raw, f"{path.name}: {name} has no plausible range"
                assert raw["plausible"]["min"] <= raw["plausible"]["max"]
        assert text.count("plausible:") == text.count("unit-sanity bound"), path.name
