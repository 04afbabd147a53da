"""Pacing rules on the pacing state: one pacing card, text comparisons, suggestions that are whole FHIR resources."""

import copy
import datetime as dt
import json
import re
from pathlib import Path

import pytest
import yaml
from fhir.resources.R4B import get_fhir_model_class

from engine import load_ruleset
from engine.loader import _strings  # the loader walks a suggestion resource's strings the same way
from engine.ruleset import parse_now
from service.services import build_prefetch

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = ROOT / "tests" / "examples" / "patients"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
STATE_CARDS = {"pacing.establish-baseline", "pacing.flare-scale-back", "pacing.flare-rebuild", "pacing.boom-bust",
               "pacing.progress", "pacing.goal-review", "pacing.step-up-response"}
PACING_CATEGORY = "https://pacecds.org/fhir/CodeSystem/goal-category"
CASES = yaml.safe_load((ROOT / "tests" / "examples" / "cases.yaml").read_text())["cases"]


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset(ROOT / "rules")


def chart(name):
    return json.loads((PATIENTS / f"{name}.json").read_text())


def fired(ruleset, doc, now=NOW):
    return [c["extension"]["pacecds.rule"]["id"] for c in ruleset.evaluate(doc, now=now).cards]


@pytest.mark.parametrize("name", sorted(p.stem for p in PATIENTS.glob("*.json")))
@pytest.mark.parametrize("shift", [0, 1, 3, 7])
def test_at_most_one_pacing_card_per_evaluation(ruleset, name, shift):
    doc = chart(name)
    if doc.get("resourceType") != "Bundle":
        return
    ids = fired(ruleset, doc, NOW + dt.timedelta(days=shift))
    assert len(STATE_CARDS.intersection(ids)) <= 1, ids


def test_text_comparison_on_the_state_runs_in_durable_rules_and_explain(ruleset):
    explanation = ruleset.explain(chart("pacing-flare-settling"), now=NOW)
    rule = next(r for r in explanation["rules"] if r["id"] == "pacing.flare-rebuild")
    assert rule["fired"]
    leaves = [c for c in rule["condition"]["children"][1]["children"]]
    assert leaves[0]["value"] == "flare_settling" and leaves[0]["result"] == "true"
    assert explanation["states"]["pacing"]["values"]["state"] == "flare_settling"
    assert explanation["states"]["pacing"]["values"]["pre_flare_quota"] == 4800


def test_the_settling_flare_gets_a_rebuild_never_a_cut(ruleset):
    (card,) = [c for c in ruleset.evaluate(chart("pacing-flare-settling"), now=NOW).cards
               if c["extension"]["pacecds.rule"]["id"].startswith("pacing.")]
    assert card["extension"]["pacecds.rule"]["id"] == "pacing.flare-rebuild"
    assert "rebuild from 3500 steps a day toward 4800" in card["summary"]
    goal = card["suggestions"][0]["actions"][0]["resource"]
    assert goal["target"][0]["detailQuantity"]["value"] == 4800  # up from 3500, never below what she does


def test_boom_bust_gives_one_target_from_the_quota(ruleset):
    cards = [c for c in ruleset.evaluate(chart("pacing-boom-bust-flare-days"), now=NOW).cards
             if c["extension"]["pacecds.rule"]["id"].startswith("pacing.")]
    assert [c["extension"]["pacecds.rule"]["id"] for c in cards] == ["pacing.boom-bust"]
    numbers = {a["resource"]["target"][0]["detailQuantity"]["value"]
               for s in cards[0]["suggestions"] for a in s["actions"] if a["resource"]["resourceType"] == "Goal"}
    assert numbers == {6000}


def _goals(resource):
    if resource["resourceType"] == "Goal":
        yield resource
    for contained in resource.get("contained") or []:
        yield from _goals(contained)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["input"].split("/")[-1] + ":" + c["name"][:30])
def test_every_suggestion_is_valid_fhir_without_placeholder_text(ruleset, case):
    doc = json.loads((ROOT / "tests" / "examples" / case["input"]).read_text())
    result = ruleset.evaluate(doc, now=parse_now(case["now"]), hook=case.get("hook"))
    for card in result.cards:
        for suggestion in card.get("suggestions", []):
            texts = [suggestion["label"]] + [a["description"] for a in suggestion["actions"]]
            for action in suggestion["actions"]:
                resource = action["resource"]
                get_fhir_model_class(resource["resourceType"]).model_validate(resource)
                texts += list(_strings(resource))
                for goal in _goals(resource):
                    get_fhir_model_class("Goal").model_validate(goal)
                    if any(c.get("system") == PACING_CATEGORY for cat in goal.get("category", [])
                           for c in cat.get("coding", [])):
                        (target,) = goal["target"]
                        assert target["measure"]["coding"][0]["code"] in ("41950-7", "55411-3")
                        assert isinstance(target["detailQuantity"]["value"], int)
                        assert target["dueDate"]
            for text in texts:
                assert not re.search(r"\[[a-z][a-z ]*\]", text), text  # "[activity]", "[amount]" ...
                assert "{" not in text and "}" not in text, text
                assert "not recorded" not in text, text


def test_careplan_suggestion_holds_the_quota_goals_and_the_plan(ruleset):
    (card,) = [c for c in ruleset.evaluate(chart("pacing-wheelchair-minutes"), now=NOW).cards
               if c["extension"]["pacecds.rule"]["id"] == "pacing.progress"]
    plan = next(a["resource"] for s in card["suggestions"] for a in s["actions"]
                if a["resource"]["resourceType"] == "CarePlan")
    model = get_fhir_model_class("CarePlan").model_validate(plan)
    assert model.subject.reference == "Patient/pt-wheel"
    goals = {g["id"]: g for g in plan["contained"]}
    assert goals["quota"]["target"][0]["detailQuantity"] == {
        "value": 25, "unit": "minutes/day", "system": "http://unitsofmeasure.org", "code": "min/d"}
    assert goals["step-up"]["target"][0]["detailQuantity"]["value"] == 35
    assert [g["reference"] for g in plan["goal"]] == ["#quota", "#step-up"]
    activities = " ".join(a["detail"]["description"] for a in plan["activity"])
    assert "bouts of about 20 minutes" in activities and "5-10 minutes of rest" in activities
    assert "scale back to about 15 active minutes" in activities
    assert plan["period"]["end"] == "2026-12-18"


def test_a_suggestion_with_a_missing_value_is_not_offered(ruleset):
    """A settling flare with no step counts: the card still advises, but offers no Goal it cannot fill."""
    doc = copy.deepcopy(chart("pacing-flare-settling"))
    doc["entry"] = [e for e in doc["entry"] if not (e["resource"]["resourceType"] == "Observation"
                                                     and e["resource"]["code"]["coding"][0]["code"] == "41950-7")]
    (card,) = [c for c in ruleset.evaluate(doc, now=NOW).cards
               if c["extension"]["pacecds.rule"]["id"] == "pacing.flare-rebuild"]
    assert "rebuild activity gradually from today's level" in card["summary"]
    assert "suggestions" not in card


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["input"].split("/")[-1] + ":" + c["name"][:30])
def test_pacing_cards_never_print_missing_values_or_statistics_jargon(ruleset, case):
    doc = json.loads((ROOT / "tests" / "examples" / case["input"]).read_text())
    for card in ruleset.evaluate(doc, now=parse_now(case["now"]), hook=case.get("hook")).cards:
        if not card["extension"]["pacecds.rule"]["id"].startswith("pacing."):
            continue
        text = card["summary"] + "\n" + card.get("detail", "")
        assert "not recorded" not in text, text
        for jargon in ("coefficient", "variation", "cv ", "slope", "standard deviation", "mean_"):
            assert jargon not in text.lower(), (jargon, text)


def test_prefetch_asks_only_for_what_the_pacing_fact_reads(ruleset):
    """The pacing fact reads other facts by role: Observations by their codes, every open Goal (recognised after
    they arrive), medications by theirs; never the union of all of them for every type."""
    reqs = {r["resourceType"]: set(r["codes"]) for r in ruleset.data_requirements("patient-view")}
    assert {"http://loinc.org|55411-3", "http://loinc.org|68516-4", "http://loinc.org|8867-4",
            "http://loinc.org|41950-7", "http://loinc.org|72514-3", "http://loinc.org|40443-4"} <= reqs["Observation"]
    assert not any("rxnorm" in c for c in reqs["Observation"])
    # short enough to stay a code filter in the prefetch template (the lab value sets added codes)
    (obs,) = [p for p in build_prefetch(ruleset.data_requirements("patient-view"), 365)
              if p.resource_type == "Observation"]
    assert "&code=" in obs.template
    assert reqs["Goal"] == set()


def test_boom_bust_plan_names_the_bad_day_substitutes(ruleset):
    (card,) = [c for c in ruleset.evaluate(chart("pacing-boom-bust-flare-days"), now=NOW).cards
               if c["extension"]["pacecds.rule"]["id"] == "pacing.boom-bust"]
    # the detail is Markdown with patient text escaped (a backslash before punctuation): read as rendered
    assert "Gentle walk round the block, Seated stretching" in re.sub(r"\\(.)", r"\1", card["detail"])
    plan = next(a["resource"] for s in card["suggestions"] for a in s["actions"]
                if a["resource"]["resourceType"] == "CarePlan")
    assert any("Gentle walk round the block, Seated stretching" in a["detail"]["description"]
               for a in plan["activity"])


def _card(ruleset, doc, rule_id):
    return next(c for c in ruleset.evaluate(doc, now=NOW).cards if c["extension"]["pacecds.rule"]["id"] == rule_id)


def test_the_goal_step_up_card_names_the_change_and_suggests_the_previous_target(ruleset):
    card = _card(ruleset, chart("pacing-goal-step-up-pain"), "pacing.step-up-response")
    assert "raised from 5000 to" in card["detail"] and "**5500 steps a day**" in card["detail"]
    assert "previous target of about **5000 steps a day**" in card["detail"]
    goal = card["suggestions"][0]["actions"][0]["resource"]
    assert goal["target"][0]["detailQuantity"]["value"] == 5000


def test_resting_heart_rate_is_context_beside_the_ceiling_never_a_ceiling(ruleset):
    card = _card(ruleset, chart("pacing-heart-rate-over-ceiling"), "pacing.intensity-above-ceiling")
    assert "resting heart rate recorded on\n5 of the last 7 days was about 64/min".replace("\n", " ") in \
        " ".join(card["detail"].split())
    # the wheelchair user records resting heart rate too; without his ceiling Goals no intensity card can fire
    doc = copy.deepcopy(chart("pacing-wheelchair-minutes"))
    doc["entry"] = [e for e in doc["entry"] if e["resource"]["resourceType"] != "Goal"]
    for e in doc["entry"]:
        r = e["resource"]
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "8867-4":
            r["valueQuantity"]["value"] = 190
    assert "pacing.intensity-above-ceiling" not in fired(ruleset, doc)
