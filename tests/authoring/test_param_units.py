"""Item 6d: a parameter with a unit renders with it in cards ("30 ng/mL"), and the summary limit counts it."""

import json

import pytest

from engine import load_ruleset
from engine.loader import SUMMARY_MAX, RulesetLoadError, load_tree
from engine.templates import NUMBER_WIDTH, Quantity, Template, display_unit, format_value
from tests.conftest import EXAMPLES, NOW


def test_quantity_renders_value_and_unit_and_computes_as_a_number():
    lookup = {"param.threshold": Quantity(30, "ng/mL"), "param.tsh": Quantity(4.5, "m[IU]/L"),
              "param.score": Quantity(10, "{score}"), "param.plain": 7}.get
    assert Template("below {param.threshold}").render(lookup) == "below 30 ng/mL"
    assert Template("{param.threshold:.1f}").render(lookup) == "30.0 ng/mL"
    assert Template("{param.tsh}").render(lookup) == "4.5 mIU/L"
    assert Template("{param.score}").render(lookup) == "10"  # a score has no unit to show
    assert Template("{param.threshold * 2:.0f}").render(lookup) == "60"  # arithmetic: the number
    assert Template("{param.threshold}").render_value(lookup) == 30  # FHIR values: the number
    assert Template("{param.plain:d} days").render(lookup) == "7 days"
    assert format_value(Quantity(None, "ng/mL")) == "not recorded"
    assert display_unit("{MME}/d") == "MME/d" and display_unit("1") == ""


def test_longest_rendering_counts_the_unit():
    template = Template("x {param.threshold}")
    assert template.max_length({"param.threshold": "quantity:ng/mL"}) == 2 + NUMBER_WIDTH + 1 + len("ng/mL")
    assert template.max_length({"param.threshold": "number"}) == 2 + NUMBER_WIDTH


def _with_summary(rules_copy, summary):
    rule = rules_copy / "anemia" / "iron-deficiency.yaml"
    text = rule.read_text().replace(
        'summary: "Ferritin {ferritin.value:.0f} ng/mL is below 30 ng/mL: iron deficiency, a treatable cause of fatigue."',
        f'summary: "{summary}"')
    assert summary in text
    rule.write_text(text)
    return rule


def summary_for(rs, patient):
    request = json.loads((EXAMPLES / "patients" / f"{patient}.json").read_text())
    (card,) = [c for c in rs.evaluate(request, now=NOW.replace(month=11, day=20)).cards
               if c["extension"]["pacecds.rule"]["id"] == "anemia.iron-deficiency"]
    return card["summary"]


def test_card_prints_the_parameter_with_its_unit(rules_copy):
    _with_summary(rules_copy, "Ferritin {ferritin.value:.0f} ng/mL is below {param.threshold}: iron deficiency.")
    rule = rules_copy / "anemia" / "iron-deficiency.yaml"
    rule.write_text(rule.read_text().replace(
        "below the strict WHO cutoff of 15 ng/mL: iron", "below the strict WHO cutoff of {param.strict}: iron"))
    rs = load_ruleset(rules_copy)
    assert summary_for(rs, "complex-fibromyalgia") == "Ferritin 22 ng/mL is below 30 ng/mL: iron deficiency."
    assert summary_for(rs, "iron-low-ferritin") == ("Ferritin 12 ng/mL is below the strict WHO cutoff of 15 ng/mL: iron deficiency, "
                               "a treatable cause of fatigue.")


def test_summary_limit_counts_the_unit(rules_copy):
    fixed = "Ferritin is low: "
    pad = "x" * (SUMMARY_MAX - len(fixed) - NUMBER_WIDTH)
    _with_summary(rules_copy, fixed + pad + "{param.max_age_days}")  # no unit: exactly the limit
    load_tree(rules_copy)
    _with_summary_again = (rules_copy / "anemia" / "iron-deficiency.yaml")
    _with_summary_again.write_text(_with_summary_again.read_text().replace("{param.max_age_days}\"", "{param.threshold}\""))
    with pytest.raises(RulesetLoadError) as info:
        load_tree(rules_copy)
    (error,) = info.value.errors
    assert f"summary can reach {SUMMARY_MAX + 1 + len('ng/mL')} characters" in error
