"""The pacing fact (fhir_adapter.pacing) on real FHIR example charts: state, quota, targets, flare episodes."""

import copy
import datetime as dt
import json
from pathlib import Path

import pytest

from engine.loader import load_tree
from fhir_adapter.derive import derive_facts
from fhir_adapter.facts import goal_is_smart
from fhir_adapter.pacing import episodes, round_to
from fhir_adapter.pooling import pool_request

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = ROOT / "tests" / "examples" / "patients"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def tree():
    return load_tree(ROOT / "rules")


def pacing(tree, doc, now=NOW):
    facts = derive_facts(pool_request(doc), [tree.facts["pacing"], tree.facts["pacing_goal"]], now)
    return facts["pacing"], facts["pacing_goal"]


def chart(name):
    return json.loads((PATIENTS / f"{name}.json").read_text())


# name -> (state, expected values); numbers worked out by hand from the generator's series
EXPECTED = {
    "pacing-steady": ("steady", {"typical": 6000, "quota": 4800, "step_up": 6600, "step_size": 600}),
    "pacing-new-tracker": ("building_baseline", {"days_recorded": 4, "pain_days": 4}),
    "pacing-stale-steps": ("building_baseline", {"days_recorded": 0}),
    "pacing-flare": ("flare_rising", {"pre_flare_quota": 4400, "flare_floor": 2200, "flare_peak_pain": 7.5}),
    "pacing-flare-no-steps": ("flare_rising", {"flare_onset_days_ago": 3, "pain_usual": 3.0}),
    "pacing-severe-pain": ("flare_peak", {"flare_severity": "severe", "flare_peak_pain": 8.5}),
    "pacing-flare-entered-in-error": ("steady", {"flares_90d": 0, "typical": 7000}),
    "pacing-boom-bust": ("boom_bust", {"quota": 6000, "low_day": 2500, "high_day": 12500}),
    "pacing-boom-bust-flare-days": ("boom_bust", {"quota": 6000, "typical": 7500}),
    "pacing-variable-no-pain-link": ("variable", {"quota": 6000}),
    "pacing-flare-settling": ("flare_settling", {
        "rebuild_from": 3500, "pre_flare_quota": 4800, "rebuild_step": 500, "flare_peak_pain": 9.0,
        "flare_onset_days_ago": 5, "flare_peak_days_ago": 4, "flares_90d": 2, "settled_flares_90d": 1,
        "days_to_settle": 3}),
    "pacing-flare-settled": ("flare_settled", {"rebuild_from": 3700, "pre_flare_quota": 4000, "flare_days": 6}),
    "pacing-at-maintenance": ("at_maintenance", {"goal_target": 6000}),
    "goal-overdue": ("at_maintenance", {"goal_target": 5000}),
    "pacing-goal-review-other-goal": ("at_maintenance", {"goal_target": 5000}),
    "pacing-goal-not-smart": ("progressing", {"mean_7d": 5500, "prev_mean_7d": 4800}),
    "pacing-wheelchair-minutes": ("steady", {"activity": "active minutes", "typical": 30, "quota": 25,
                                             "step_up": 35, "step_size": 5, "measure_code": "55411-3",
                                             "target_ucum": "min/d"}),
    "pacing-fall-after-new-drug": ("variable", {"fall_percent": 40, "fall_before": 6000, "fall_after": 3600,
                                                "fall_drug_start": "2026-11-10", "fall_drug_days_ago": 10}),
    "pacing-new-drug-no-fall": ("steady", {}),
    "sleep-short-minutes": ("insufficient_data", {}),
    "pacing-heart-rate-over-ceiling": ("steady", {"hr_ceiling": 120, "hr_days": 6, "hr_over_days": 4,
                                                  "hr_highest": 132, "hr_resting": 64, "hr_resting_days": 5}),
    "pacing-exertion-over-ceiling": ("steady", {"rpe_ceiling": 13, "rpe_over_days": 3, "rpe_highest": 15}),
    # clinical review item 11: the 38208-5 readings with no 0-10 scale (9, "severe", 40) would make a flare
    "pacing-pain-no-scale": ("steady", {"pain_usual": 4.0, "pain_latest": 4.0, "flares_90d": 0, "pain_days": 14}),
    "pacing-goal-step-up-pain": ("step_up_pain", {
        "step_up_source": "goal", "step_up_date": "2026-11-15", "step_up_days_ago": 5, "step_up_from": 5000,
        "step_up_to": 5500, "pain_before_step_up": 3.0, "pain_since_step_up": 4.5, "pain_since_days": 5,
        "back_to": 5000, "mean_7d": 5400, "prev_mean_7d": 5000}),
    "pacing-goal-step-up-tolerated": ("progressing", {"step_up_date": "2026-11-15", "pain_since_step_up": 3.0}),
    "pacing-goal-step-up-entered-in-error": ("variable", {"goal_target": 5000}),
    "pacing-maintenance-goal-completed": ("at_maintenance", {"goal_target": 6000}),
    "pacing-step-up-pain": ("step_up_pain", {"mean_7d": 5800, "prev_mean_7d": 5000, "pain_mean_7d": 4.5,
                                             "pain_prev_mean_7d": 3.0, "step_up_source": "activity",
                                             "back_to": 5000}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_state_and_numbers_of_each_example_patient(tree, name):
    state, values = EXPECTED[name]
    fact, _ = pacing(tree, chart(name))
    assert fact.values["state"] == state
    for key, value in values.items():
        assert fact.values.get(key) == value, (key, fact.values.get(key))


def test_a_settling_flare_never_asks_for_less_than_the_patient_does(tree):
    fact, _ = pacing(tree, chart("pacing-flare-settling"))
    v = fact.values
    assert v["rebuild_from"] == v["latest_activity"] == 3500
    assert v["pre_flare_quota"] > v["rebuild_from"]
    # the quota comes from the days before the flare, not from a mean that includes the flare days
    assert v["pre_flare_quota"] == round_to(6000 * 0.8, 100)


def test_missing_activity_is_missing_not_zero(tree):
    fact, _ = pacing(tree, chart("pacing-flare-no-steps"))
    for key in ("quota", "typical", "pre_flare_quota", "flare_floor", "rebuild_from", "latest_activity"):
        assert key not in fact.values
    assert fact.values["days_recorded"] == 0


def test_entered_in_error_and_cancelled_pain_never_make_a_flare(tree):
    doc = chart("pacing-steady")
    doc = copy.deepcopy(doc)
    pain = [e for e in doc["entry"] if e["resource"]["resourceType"] == "Observation"
            and e["resource"]["code"]["coding"][0]["code"] == "72514-3"]
    for status, e in zip(("entered-in-error", "cancelled"), pain[-2:]):
        bad = copy.deepcopy(e)
        bad["resource"]["id"] += "-bad"
        bad["fullUrl"] += "-bad"
        bad["resource"]["status"] = status
        bad["resource"]["valueQuantity"]["value"] = 10
        doc["entry"].append(bad)
    fact, _ = pacing(tree, doc)
    assert fact.values["state"] == "steady"
    assert fact.values["flares_90d"] == 0


def test_targets_are_rounded_to_100_steps_and_5_minutes():
    assert round_to(4849, 100) == 4800
    assert round_to(4850, 100) == 4900
    assert round_to(33, 5) == 35
    assert round_to(32, 5) == 30


PARAMS = {"severe_pain": 8, "flare_rise": 2, "settle_margin": 1, "settle_days": 2}


def test_episode_onset_peak_and_settling():
    # days ago -> pain; usual 3: flare from day 10 (6), peak day 8 (9), calm from day 4 on two days in a row
    pain = {12: 3, 11: 3, 10: 6, 9: 7, 8: 9, 7: 8, 6: 6, 5: 5, 4: 4, 3: 3, 2: 3, 1: 3}
    (e,) = episodes(pain, 3.0, PARAMS)
    assert (e.onset, e.peak, e.peak_pain, e.settled, e.days_to_settle) == (10, 8, 9, 4, 6)


def test_missing_days_neither_end_nor_extend_an_episode():
    pain = {10: 3, 9: 7, 6: 8, 3: 5}  # days 8, 7, 5, 4 missing; never back within 1 point of usual
    (e,) = episodes(pain, 3.0, PARAMS)
    assert e.settled is None and e.peak == 6


def test_severe_pain_is_a_flare_even_without_a_usual_level():
    (e,) = episodes({2: 8, 1: 8.5}, None, PARAMS)
    assert e.onset == 2 and e.peak_pain == 8.5


def test_goal_review_looks_only_at_pacing_goals(tree):
    _, goal = pacing(tree, chart("pacing-goal-review-other-goal"))
    assert goal.values["count"] == 1  # the diabetes goal (free text) is not a pacing goal
    assert round(goal.values["days_since_review"]) == 120
    assert goal.values["unsmart_count"] == 0


def test_a_pacing_goal_without_target_or_date_is_not_smart(tree):
    _, goal = pacing(tree, chart("pacing-goal-not-smart"))
    assert goal.values["unsmart_count"] == 1 and goal.values["unsmart_text"] == "Walk more"
    assert not goal_is_smart({"target": [{"measure": {"text": "steps"}, "detailQuantity": {"value": 5000}}]})
    assert goal_is_smart({"target": [{"measure": {"text": "steps"}, "detailQuantity": {"value": 5000},
                                      "dueDate": "2026-12-01"}]})


def test_minutes_from_a_duration_in_hours_are_converted(tree):
    doc = copy.deepcopy(chart("pacing-wheelchair-minutes"))
    for e in doc["entry"]:
        r = e["resource"]
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "55411-3":
            r["valueQuantity"] = {"value": r["valueQuantity"]["value"] / 60, "unit": "h",
                                  "system": "http://unitsofmeasure.org", "code": "h"}
    fact, _ = pacing(tree, doc)
    assert fact.values["typical"] == 30 and fact.values["state"] == "steady"


def test_no_intensity_ceiling_without_a_clinician_set_goal(tree):
    doc = copy.deepcopy(chart("pacing-heart-rate-over-ceiling"))
    doc["entry"] = [e for e in doc["entry"] if e["resource"]["resourceType"] != "Goal"]
    fact, _ = pacing(tree, doc)
    assert fact.values["hr_highest"] == 132 and fact.values["hr_days"] == 6  # days 0-6, today has none
    assert "hr_ceiling" not in fact.values and "hr_over_days" not in fact.values


def test_an_old_drug_start_is_not_looked_at(tree):
    fact, _ = pacing(tree, chart("pacing-fall-after-new-drug"), now=NOW + dt.timedelta(days=60))
    assert "fall_percent" not in fact.values


def test_flare_history_in_plain_words(tree):
    fact, _ = pacing(tree, chart("pacing-flare-settling"))
    assert fact.values["flare_history"] == [
        "2 flares in the last 90 days",
        "from 2026-09-21: peak 8/10 on day 2, settled after 3 days",
        "from 2026-11-15: peak 9/10 on day 2, not settled yet",
    ]


def test_bad_day_substitutes_come_from_the_activity_inventory(tree):
    fact, _ = pacing(tree, chart("pacing-boom-bust-flare-days"))
    assert fact.values["bad_day_activities"] == ["Gentle walk round the block", "Seated stretching"]
    assert any(p.startswith("QuestionnaireResponse/") for p in fact.provenance)
    fact, _ = pacing(tree, chart("pacing-boom-bust"))  # no inventory: said so, never invented
    assert "bad_day_activities" not in fact.values
    assert fact.values["bad_day_text"] == ["none recorded yet: agree lower-demand activities for bad days with the patient"]


def test_an_inventory_in_progress_is_not_used(tree):
    doc = copy.deepcopy(chart("pacing-boom-bust-flare-days"))
    for e in doc["entry"]:
        if e["resource"]["resourceType"] == "QuestionnaireResponse":
            e["resource"]["status"] = "in-progress"
    fact, _ = pacing(tree, doc)
    assert "bad_day_activities" not in fact.values


def _pain_observations(doc, code):
    return [e for e in doc["entry"] if e["resource"]["resourceType"] == "Observation"
            and e["resource"]["code"]["coding"][0]["code"] == code]


def test_pain_under_38208_5_counts_only_as_a_number_on_a_stated_0_10_scale(tree):
    """Clinical review item 11, on the real chart: each skipped reading is named with its reason."""
    doc = chart("pacing-pain-no-scale")
    fact, _ = pacing(tree, doc)
    notes = [n for n in fact.notes if n.startswith("pain_daily:")]
    reported = [e["resource"]["id"] for e in _pain_observations(doc, "38208-5")]
    no_scale = next(n for n in notes if "fixes no 0-10 scale and none is stated" in n)
    assert no_scale.startswith("pain_daily: 3 readings not used")
    assert all(f"Observation/{rid}" in no_scale for rid in reported[:3])
    assert any("1 reading not used, a coded answer" in n and f"Observation/{reported[3]}" in n for n in notes)
    assert any("1 reading not used, outside the 0-10 scale" in n and f"Observation/{reported[4]}" in n
               for n in notes)
    # the readings stated on a 0-10 scale are used: they alone make the pain series once the NRS is gone
    doc = copy.deepcopy(doc)
    doc["entry"] = [e for e in doc["entry"] if e not in _pain_observations(doc, "72514-3")]
    fact, _ = pacing(tree, doc)
    assert fact.values["pain_days"] == 7 and fact.values["pain_usual"] == 4.0
    assert all(f"Observation/{rid}" in fact.provenance for rid in reported[5:])
    assert not any(f"Observation/{rid}" in fact.provenance for rid in reported[:5])


def test_the_0_10_nrs_is_read_on_its_scale_only(tree):
    """72514-3 fixes the scale: a coded answer with its score counts, a value above 10 is skipped and named."""
    doc = copy.deepcopy(chart("pacing-steady"))
    nrs = _pain_observations(doc, "72514-3")
    high, coded = nrs[-1]["resource"], nrs[-2]["resource"]
    high["valueQuantity"]["value"] = 55
    del coded["valueQuantity"]
    coded["valueCodeableConcept"] = {"coding": [{
        "system": "https://example.org/fhir/CodeSystem/pain-answer", "code": "four", "display": "4",
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue", "valueDecimal": 4}]}]}
    fact, _ = pacing(tree, doc)
    assert fact.values["state"] == "steady" and fact.values["flares_90d"] == 0
    assert f"Observation/{coded['id']}" in fact.provenance
    assert any(n == f"pain_daily: 1 reading not used, outside the 0-10 scale: Observation/{high['id']}"
               for n in fact.notes), fact.notes


def _goals(doc):
    return [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Goal"]


def test_a_step_up_is_only_a_raise_over_the_goal_it_replaces(tree):
    """The newer goal lower than the one before is no step up; nor is a raise proposed but not agreed yet, nor one
    older than goal_step_up_days; a raise over a goal still open (not completed) is one."""
    base = chart("pacing-goal-step-up-pain")
    for change, expect_step_up in (
        (lambda old, new: new["target"][0]["detailQuantity"].update(value=4500), False),
        (lambda old, new: new.update(lifecycleStatus="proposed"), False),
        (lambda old, new: new.update(startDate="2026-10-20"), False),
        (lambda old, new: old.update(lifecycleStatus="active"), True),
    ):
        doc = copy.deepcopy(base)
        old, new = _goals(doc)
        change(old, new)
        fact, _ = pacing(tree, doc)
        assert (fact.values.get("step_up_source") == "goal") is expect_step_up, (new, fact.values.get("state"))
        assert (fact.values["state"] == "step_up_pain") is expect_step_up


def test_a_goal_without_a_start_date_is_dated_by_its_status_date(tree):
    doc = copy.deepcopy(chart("pacing-goal-step-up-pain"))
    new = _goals(doc)[1]
    del new["startDate"]
    new["statusDate"] = "2026-11-16"
    fact, _ = pacing(tree, doc)
    assert fact.values["step_up_date"] == "2026-11-16" and fact.values["state"] == "step_up_pain"
    assert f"Goal/{new['id']}" in fact.provenance


def test_resting_heart_rate_sets_no_ceiling(tree):
    """No cited formula (resting + N, a fraction of an age-predicted maximum): resting heart rate is shown, never
    turned into a ceiling."""
    doc = copy.deepcopy(chart("pacing-wheelchair-minutes"))
    doc["entry"] = [e for e in doc["entry"] if e["resource"]["resourceType"] != "Goal"]
    fact, _ = pacing(tree, doc)
    assert fact.values["hr_resting"] == 68 and fact.values["hr_resting_days"] == 6
    assert "hr_ceiling" not in fact.values and "hr_over_days" not in fact.values
