"""Conditions inside a card. A suggestion's own `when`: offered only when it holds (issue 12 item 6, the fatigue
work-up). A section's `when`: its paragraph is in the detail only when it holds (issue 12 item 7, one medication
safety card listing each finding). Both are checked when the rules load and explained."""

import copy
import datetime as dt
import re

import pytest
from fhir.resources.R4B import get_fhir_model_class

from engine import RulesetLoadError, load_ruleset
from engine.loader import load_tree
from tests.conftest import load_example, walk

LOCATED = re.compile(r"^(?P<file>[^:]+\.ya?ml):(?P<line>\d+):(?P<col>\d+): ")
WORKUP = "labs.fatigue-workup"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)  # the example patients' "now"


def card_of(result, rule_id=WORKUP):
    return next(c for c in result.cards if c["extension"]["pacecds.rule"]["id"] == rule_id)


def labels(card):
    return [s["label"] for s in card.get("suggestions", [])]


def ordered_codes(card):
    return [a["resource"]["code"]["coding"][0]["code"] for s in card["suggestions"] for a in s["actions"]]


def test_only_the_missing_or_stale_tests_are_suggested(ruleset):
    due = card_of(ruleset.evaluate(load_example("fatigue-workup-due"), now=NOW))
    assert ordered_codes(due) == ["718-7", "3016-3", "2276-4"]  # all three over 12 months old or never done
    tsh_recent = card_of(ruleset.evaluate(load_example("fatigue-workup-tsh-recent"), now=NOW))
    assert ordered_codes(tsh_recent) == ["718-7", "2276-4"]
    assert "no hemoglobin in the last 12 months" in tsh_recent["summary"]


def test_a_result_on_file_is_never_called_not_recorded(ruleset):
    # hemoglobin in molar units (59260-0) 20 days ago, ferritin 20 days ago, TSH 500 days ago
    card = card_of(ruleset.evaluate(load_example("fatigue-workup-molar-hb"), now=NOW))
    assert ordered_codes(card) == ["3016-3"]
    assert "hemoglobin 20, TSH 500, ferritin 20" in card["detail"]
    assert "not recorded" not in card["detail"].split("on file):")[1]


def test_every_offered_suggestion_is_a_valid_service_request(ruleset):
    for name in ("fatigue-workup-due", "fatigue-workup-tsh-recent", "fatigue-workup-molar-hb"):
        for suggestion in card_of(ruleset.evaluate(load_example(name), now=NOW))["suggestions"]:
            for action in suggestion["actions"]:
                resource = copy.deepcopy(action["resource"])
                model = get_fhir_model_class(resource["resourceType"])
                model.model_validate(resource)  # raises on an invalid resource
                assert resource["subject"]["reference"].startswith("Patient/")
                texts = [v for _, v in walk(resource) if isinstance(v, str)]
                assert not [t for t in texts if "{" in t or "not recorded" in t]  # no template text left


def test_explain_says_why_a_suggestion_was_left_out(ruleset):
    explanation = ruleset.explain(load_example("fatigue-workup-molar-hb"), now=NOW)
    rule = next(r for r in explanation["rules"] if r["id"] == WORKUP)
    by_label = {s["label"]: s for s in rule["suggestions"]}
    assert by_label["Order TSH"]["offered"] is True and by_label["Order TSH"]["when"]["result"] == "true"
    hb = by_label["Order hemoglobin (blood count)"]
    assert hb["offered"] is False and hb["why_not"] == "its condition (when) does not hold"
    assert hb["when"]["result"] == "false"
    assert any("hbmolar" in p for c in hb["when"]["children"] for p in c["provenance"])


def test_explain_when_the_rule_did_not_fire(ruleset):
    explanation = ruleset.explain(load_example("pacing-steady"), now=NOW)  # recent hemoglobin and TSH
    rule = next(r for r in explanation["rules"] if r["id"] == WORKUP)
    assert rule["fired"] is False
    assert all(s["offered"] is False and "did not fire" in s["why_not"] for s in rule["suggestions"])


def test_the_audit_record_keeps_the_suggestion_explanation(ruleset):
    from audit.record import build_decision_record

    result = ruleset.evaluate(load_example("fatigue-workup-molar-hb"), now=NOW)
    record = build_decision_record(result, hook="patient-view", hook_instance="i-1", service_id="pacing-review",
                                   patient_id=result.patient_id, latency_ms=1.0, key=b"k" * 32, ruleset=ruleset)
    rule = next(r for r in record["explanation"]["rules"] if r["id"] == WORKUP)
    assert [s["offered"] for s in rule["suggestions"]] == [False, True, False]


def _set_when(rules_copy, old, new):
    path = rules_copy / "labs" / "fatigue-workup.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def test_unknown_fact_in_a_suggestion_condition_is_a_located_load_error(rules_copy):
    path = _set_when(rules_copy, "- {fact: tsh, present: false}\n          - {fact: tsh.age_days",
                     "- {fact: tshh, present: false}\n          - {fact: tsh.age_days")
    with pytest.raises(RulesetLoadError) as info:
        load_tree(rules_copy)
    (error,) = info.value.errors
    assert "card.suggestions.1.when.any.0.fact: unknown fact 'tshh'" in error
    line = int(LOCATED.match(error).group("line"))
    assert "tshh" in path.read_text().splitlines()[line - 1]


def test_a_malformed_suggestion_condition_is_a_schema_error(rules_copy):
    _set_when(rules_copy, "      when:\n        any:\n          - {fact: tsh, present: false}",
              "      when:\n        some:\n          - {fact: tsh, present: false}")
    with pytest.raises(RulesetLoadError) as info:
        load_tree(rules_copy)
    assert any("card.suggestions.1.when" in e for e in info.value.errors)


def test_a_suggestion_without_when_is_always_offered(rules_copy):
    _set_when(rules_copy, "      when:\n        any:\n          - {fact: tsh, present: false}\n"
                          "          - {fact: tsh.age_days, gt: {param: max_age_days}}\n", "")
    rs = load_ruleset(rules_copy)
    card = card_of(rs.evaluate(load_example("fatigue-workup-molar-hb"), now=NOW))
    assert labels(card) == ["Order TSH"]  # unchanged: TSH is stale anyway
    card = card_of(rs.evaluate(load_example("fatigue-workup-tsh-recent"), now=NOW))
    assert labels(card) == ["Order hemoglobin (blood count)", "Order TSH", "Order ferritin"]


SAFETY = "meds.medication-safety"


def test_one_medication_card_lists_each_finding_in_order(ruleset):
    # oxycodone/APAP as needed (60 MME/day) + gabapentin + cyclobenzaprine: three findings, one card
    result = ruleset.evaluate(load_example("complex-fibromyalgia"), now=NOW)
    meds = {c["extension"]["pacecds.rule"]["id"]: c for c in result.cards if c["extension"]["pacecds.rule"]["id"].startswith("meds.")}
    assert set(meds) == {SAFETY, "meds.naloxone"}  # naloxone is its own concern, with its own order suggestion
    card = meds[SAFETY]
    detail = card["detail"]
    order = [detail.index(t) for t in ("**Opioid with gabapentinoid**", "**3 sedating medication classes**",
                                       "**Total opioid dose 60 MME/day**")]
    assert order == sorted(order)
    assert card["indicator"] == "warning" and "\n\n\n" not in detail


def test_explain_shows_which_sections_were_shown(ruleset):
    explanation = ruleset.explain(load_example("meds-opioid-gabapentinoid"), now=NOW)
    rule = next(r for r in explanation["rules"] if r["id"] == SAFETY)
    shown = [s["shown"] for s in rule["sections"]]
    assert shown == [False, False, True] + [False] * 7  # opioid + gabapentinoid only
    assert rule["sections"][0]["when"]["result"] == "false"


def test_unknown_fact_in_a_section_condition_is_a_located_load_error(rules_copy):
    path = rules_copy / "meds" / "medication-safety.yaml"
    text = path.read_text()
    old = "    - when: *beers_count\n      detail: |"
    assert old in text
    path.write_text(text.replace(old, "    - when: {fact: cns_activ.drug_count, gte: 3}\n      detail: |"))
    with pytest.raises(RulesetLoadError) as info:
        load_tree(rules_copy)
    (error,) = info.value.errors
    assert "card.sections.5.when.fact: unknown fact 'cns_activ'" in error
    line = int(LOCATED.match(error).group("line"))
    assert "cns_activ" in path.read_text().splitlines()[line - 1]


def test_a_section_needs_a_condition_and_a_detail(rules_copy):
    path = rules_copy / "meds" / "medication-safety.yaml"
    text = path.read_text()
    path.write_text(text.replace("    - when: *beers_count\n      detail: |", "    - detail: |", 1))
    with pytest.raises(RulesetLoadError) as info:
        load_tree(rules_copy)
    assert any("card.sections.5" in e and "'when' is a required property" in e for e in info.value.errors)
