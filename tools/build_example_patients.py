#!/usr/bin/env python3
"""Write the knowledge-base example patients (FHIR R4 Bundles) to tests/examples/patients/.

Each patient is a small, realistic chart built to prove one behaviour of one rule: where it must fire, where it
must not, and the data-quality traps (entered-in-error, stopped, stale, wrong or unusual unit). The series
(daily steps, pain, sleep) are written out day by day with fixed numbers, so the files are stable and the case
expectations in tests/examples/cases.yaml can be checked by hand. Every file is validated with fhir.resources
(R4B models) before it is written.

Run: python tools/build_example_patients.py
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from pathlib import Path

from population.generate import (  # noqa: F401 - the builder and codes are shared with the population generator
    CHRONIC_LBP_ICD,
    CHRONIC_LBP_SCT,
    FIBROMYALGIA_ICD,
    ICD10,
    KNEE_OA_ICD,
    LOINC,
    OSA_ICD,
    SNOMED,
    day_before,
    flat,
    iso,
    labs_recent,
    steady,
)
from population.generate import Chart as _Chart

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "examples" / "patients"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)  # the cases' "now"


def day(days_ago: int, hour: int = 20, minute: int = 0) -> dt.datetime:
    """A time on the calendar day `days_ago` days before NOW."""
    return day_before(NOW, days_ago, hour, minute)


class Chart(_Chart):
    """A chart dated relative to the cases' NOW."""

    def __init__(self, name: str, pid: str, gender: str, birth: str, family: str, given: str):
        super().__init__(name, pid, gender, birth, family, given, now=NOW)


def patients() -> list[Chart]:
    out = []

    # 1. Steady pacing, pain stable: pacing.progress fires; nothing else (recent labs, reviewed goal).
    c = Chart("pacing-steady", "pt-steady", "female", "1972-03-05", "Okafor", "Ngozi")
    c.condition(*CHRONIC_LBP_SCT)
    c.steps(steady(6000))
    c.pain(flat(4, range(1, 15)))
    c.sleep(flat(7.5))
    c.goal("Walk 6000 steps a day on at least 5 days a week", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 2. New tracker: only 4 days of steps in the last 14 -> establish-baseline.
    c = Chart("pacing-new-tracker", "pt-new", "male", "1980-07-19", "Lindqvist", "Jonas")
    c.condition(*CHRONIC_LBP_ICD)
    c.steps({1: 4200, 2: 3900, 3: 4500, 4: 4100})
    c.pain({1: 5, 2: 5, 3: 6, 4: 5})
    c.goal("Record daily steps for two weeks", status_days_ago=5)
    labs_recent(c)
    out.append(c)

    # 3. Data-quality trap: 14 days of steady steps, but they stopped 16 days ago (stale) -> no progress card;
    #    the baseline has to be re-established.
    c = Chart("pacing-stale-steps", "pt-stale", "female", "1968-11-30", "Moreau", "Claire")
    c.condition(*FIBROMYALGIA_ICD)
    c.steps(steady(5000, days=range(16, 30)))
    c.pain(flat(5, range(16, 30)))
    c.goal("Short walks twice a day", status_days_ago=12)
    labs_recent(c)
    out.append(c)

    # 4. Flare: steady activity, pain up from 4 to 7-7.5 over the last 3 days -> flare-scale-back, never progress.
    c = Chart("pacing-flare", "pt-flare", "female", "1975-06-14", "Haddad", "Layla")
    c.condition(*CHRONIC_LBP_SCT)
    c.steps(steady(5500))
    pain = flat(4, range(4, 15))
    pain.update({1: 7.5, 2: 7, 3: 7})
    c.pain(pain)
    c.goal("Walk 5500 steps a day", status_days_ago=8)
    labs_recent(c)
    out.append(c)

    # 5. Trap: the flare-level pain scores were entered in error -> no flare; steady -> progress fires instead.
    c = Chart("pacing-flare-entered-in-error", "pt-flare-eie", "male", "1966-01-22", "Novak", "Petr")
    c.condition(*KNEE_OA_ICD)
    c.steps(steady(7000))
    pain = flat(3, range(1, 15))
    c.pain(pain)
    for ago in (1, 2, 3):  # wrong-chart entries, later marked entered-in-error
        c.obs("pain", 9, "{score}", day(ago, 22), status="entered-in-error", ucum_code="{score}")
    c.goal("Keep 7000 steps a day", status_days_ago=3)
    labs_recent(c)
    out.append(c)

    # 5b. Flare recorded by a patient who logs pain but not steps -> flare advice without a step target.
    c = Chart("pacing-flare-no-steps", "pt-flarenosteps", "male", "1981-08-08", "Said", "Karim")
    c.condition(*CHRONIC_LBP_ICD)
    pain = flat(3, range(4, 15))
    pain.update({1: 6.5, 2: 6, 3: 6})
    c.pain(pain)
    c.goal("Walk 15 minutes twice a day", status_days_ago=5)
    labs_recent(c)
    out.append(c)

    # 6. Severe pain (8/10 yesterday and today's mean >= 8) -> flare, critical wording.
    c = Chart("pacing-severe-pain", "pt-severe", "female", "1983-09-09", "Ivanova", "Mila")
    c.condition(*CHRONIC_LBP_ICD)
    c.steps(steady(4000))
    pain = flat(7, range(4, 15))
    pain.update({1: 8, 2: 8.5, 3: 8})
    c.pain(pain)
    c.goal("Walk 4000 steps a day", status_days_ago=6)
    labs_recent(c)
    out.append(c)

    # 7. Boom-bust: big swings, pain higher on the day after the high days.
    c = Chart("pacing-boom-bust", "pt-boom", "female", "1978-02-27", "Sato", "Yuki")
    c.condition(*FIBROMYALGIA_ICD)
    highs = {14, 12, 10, 8, 6, 4, 2}
    c.steps({d: (12500 if d in highs else 2500) for d in range(1, 15)})
    # pain on day d-1 (the day after d) is high when d was a high day
    c.pain({d: (7 if (d + 1) in highs else 4) for d in range(1, 15)})
    c.goal("Spread housework across the week", status_days_ago=14)
    labs_recent(c)
    out.append(c)

    # 8. Trap: just as variable, but pain does not rise after the busy days (shift work) -> no boom-bust.
    c = Chart("pacing-variable-no-pain-link", "pt-shift", "male", "1985-05-03", "Mensah", "Kofi")
    c.condition(*CHRONIC_LBP_SCT)
    c.steps({d: (12500 if d in highs else 2500) for d in range(1, 15)})
    c.pain(flat(3, range(1, 15)))
    c.goal("Stretch after each shift", status_days_ago=9)
    labs_recent(c)
    out.append(c)

    # 8b. Trap: the same swings, but the high pain ratings after the busy days were entered in error (device
    #     test data); the corrected ratings are flat -> no boom-bust.
    c = Chart("pacing-boom-bust-entered-in-error", "pt-boomeie", "female", "1976-09-14", "Berg", "Sofia")
    c.condition(*FIBROMYALGIA_ICD)
    c.steps({d: (12500 if d in highs else 2500) for d in range(1, 15)})
    c.pain(flat(4, range(1, 15)))
    for d in range(1, 15):
        if (d + 1) in highs:
            c.obs("pain", 8, "{score}", day(d, 22), status="entered-in-error", ucum_code="{score}")
    c.goal("Spread housework across the week", status_days_ago=14)
    labs_recent(c)
    out.append(c)

    # 9. Goal review: the only goal was last reviewed 70 days ago; a second goal was cancelled.
    c = Chart("goal-overdue", "pt-goal", "male", "1961-12-01", "Fischer", "Hans")
    c.condition(*KNEE_OA_ICD)
    c.steps(steady(5000))
    c.pain(flat(4))
    c.goal("Walk 5000 steps a day (maintenance)", status_days_ago=70, start_days_ago=120, target=("steps", 5000),
           due_days=30)
    c.goal("Swim twice a week", status="cancelled", status_days_ago=2)
    labs_recent(c)
    out.append(c)

    # ---- Pacing 2.0 (issue 11): one pacing state, one card; each wrong-direction situation of the issue -----
    # P1. Settling flare: usual pain 3, flare 5 days ago peaking at 9 (4 days ago), now 5; steps cut from about
    #     6000 to 2000 and climbing back (3500 yesterday). An earlier flare 60 days ago settled in 3 days.
    #     Before: "scale back to about 2500" (half a 14-day mean that includes the flare days), below yesterday.
    #     Expected: rebuild from 3500 toward the pre-flare quota 4800 (80% of 6000), never a cut below 3500.
    c = Chart("pacing-flare-settling", "pt-settling", "female", "1974-04-12", "Bauer", "Anna")
    c.condition(*CHRONIC_LBP_SCT)
    steps = steady(6000, days=range(6, 41))
    steps.update({5: 4500, 4: 2000, 3: 2500, 2: 3000, 1: 3500})
    c.steps(steps)
    pain = flat(3, range(6, 56))
    pain.update({60: 7, 59: 8, 58: 6, 57: 4, 56: 3})
    pain.update({5: 6, 4: 9, 3: 8, 2: 6.5, 1: 5})
    c.pain(pain)
    labs_recent(c)
    out.append(c)

    # P2. Settled flare: a flare 12 days ago (peak 8) settled 6 days ago (pain back to 3-4); steps 5000 before it,
    #     3700 yesterday, still below the pre-flare quota of 4000. Expected: keep rebuilding from 3700 to 4000.
    c = Chart("pacing-flare-settled", "pt-settled", "male", "1969-09-02", "Kowalczyk", "Piotr")
    c.condition(*CHRONIC_LBP_ICD)
    steps = steady(5000, days=range(13, 41))
    steps.update({12: 3000, 11: 2000, 10: 2200, 9: 2500, 8: 2800, 7: 3000, 6: 3200, 5: 3300, 4: 3400, 3: 3500,
                  2: 3600, 1: 3700})
    c.steps(steps)
    pain = flat(3, range(13, 41))
    pain.update({12: 7, 11: 8, 10: 7, 9: 6, 8: 5, 7: 4.5, 6: 4, 5: 3.5, 4: 3, 3: 3, 2: 3, 1: 3})
    c.pain(pain)
    labs_recent(c)
    out.append(c)

    # P3. Boom-bust whose bust days look like flares: usual pain 3, 7.5/10 on the day after each busy day (yesterday
    #     too). Before: a boom-bust card ("about 7500", the mean) and a flare card ("about 3750"). Expected: one
    #     boom-bust card, one target from the quota (80% of the usual 7500 = 6000), no flare card.
    c = Chart("pacing-boom-bust-flare-days", "pt-boomflare", "female", "1980-12-01", "Rahman", "Amina")
    c.condition(*FIBROMYALGIA_ICD)
    c.steps({d: (12500 if d in highs else 2500) for d in range(1, 15)})
    c.pain({d: (7.5 if (d + 1) in highs else 3) for d in range(1, 15)})
    # her activity inventory (pacecds questionnaire): the low-demand ones are the bad-day substitutes
    c.activity_inventory([("Gardening", "high"), ("Vacuuming the house", "high"), ("Swimming", "moderate"),
                          ("Gentle walk round the block", "low"), ("Seated stretching", "low")], days_ago=20)
    labs_recent(c)
    out.append(c)

    # P4. At maintenance: steady at 6000 steps with stable pain, and his pacing Goal (reviewed 10 days ago) agrees
    #     6000 steps a day as the maintenance level. Expected: no step-up, no goal card: nothing to do.
    c = Chart("pacing-at-maintenance", "pt-maint", "male", "1958-05-17", "Osei", "Kwame")
    c.condition(*KNEE_OA_ICD)
    c.steps(steady(6000))
    c.pain(flat(4))
    c.goal("Walk 6000 steps a day, every day (maintenance level)", status_days_ago=10, start_days_ago=90,
           target=("steps", 6000), due_days=60)
    labs_recent(c)
    out.append(c)

    # P4b. At maintenance with an achieved goal: steady at 6000 steps, stable pain; his pacing Goal of 6000 steps a
    #      day was completed (achieved) 20 days ago and none is open. Expected: at maintenance, no step-up; the
    #      goal-review nudge to agree the next goal (no open pacing goal). The completed Goal must be prefetched
    #      (lifecycle-status includes completed), or he would be told to step up.
    c = Chart("pacing-maintenance-goal-completed", "pt-maintdone", "male", "1957-02-11", "Mensah", "Kofi")
    c.condition(*KNEE_OA_ICD)
    c.steps(steady(6000))
    c.pain(flat(4))
    done = c.goal("Walk 6000 steps a day, every day (maintenance level)", status="completed", status_days_ago=20,
                  start_days_ago=120, target=("steps", 6000), due_days=-20, pacing_category=True)
    done["achievementStatus"] = {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/goal-achievement", "code": "achieved", "display": "Achieved"}]}
    labs_recent(c)
    out.append(c)

    # P5. Steps fell 40% after cyclobenzaprine was started 10 days ago (6000 -> 3600), pain unchanged; a pacing
    #     goal reviewed 10 days ago. Expected: an association card naming cyclobenzaprine and its start date.
    c = Chart("pacing-fall-after-new-drug", "pt-newdrug", "female", "1965-02-08", "Santos", "Maria")
    c.condition(*CHRONIC_LBP_SCT)
    steps = steady(6000, days=range(11, 29))
    steps.update(steady(3600, days=range(1, 11)))
    c.steps(steps)
    c.pain(flat(4, range(1, 29)))
    c.med_request("cyclobenzaprine10", freq=1, period=1, period_unit="d", authored_days_ago=10)
    c.goal("Walk 6000 steps a day", status_days_ago=10, target=("steps", 6000), due_days=30)
    labs_recent(c)
    out.append(c)

    # P5b. Trap: the same drug started 10 days ago, steps unchanged at 6000 -> no association card.
    c = Chart("pacing-new-drug-no-fall", "pt-newdrugok", "male", "1971-07-21", "Ito", "Kenji")
    c.condition(*CHRONIC_LBP_SCT)
    c.steps(steady(6000, days=range(1, 29)))
    c.pain(flat(4, range(1, 29)))
    c.med_request("cyclobenzaprine10", freq=1, period=1, period_unit="d", authored_days_ago=10)
    labs_recent(c)
    out.append(c)

    # P6. Wheelchair user: no steps; exercise sessions (55411-3) of about 30 minutes a day, heart rate and Borg
    #     RPE recorded, pain stable. Expected: minute-based pacing: steady at 30 minutes, step up to 35.
    c = Chart("pacing-wheelchair-minutes", "pt-wheel", "male", "1979-10-30", "Adeyemi", "Tunde")
    c.condition(*CHRONIC_LBP_ICD)
    c.series("exercise_minutes", steady(30), "min", "min", hour=17)
    c.pain(flat(4))
    for d in range(1, 15):
        c.obs("heart_rate", 112, "beats/minute", day(d, 17, 20), category="vital-signs", ucum_code="/min")
        c.obs("resting_heart_rate", 68, "beats/minute", day(d, 7), category="vital-signs", ucum_code="/min")
        c.obs("rpe", 12, "{score}", day(d, 17, 25), category="survey", ucum_code="{score}")
    c.ceiling_goal("heart_rate", 120, "/min", "Keep heart rate below 120/min during exercise")
    c.ceiling_goal("rpe", 13, "{score}", "Keep perceived exertion at 13 (somewhat hard) or below")
    labs_recent(c)
    out.append(c)

    # P6b. The same wheelchair user, but heart rate 132/min on 4 of the last 7 days, above the ceiling of 120/min
    #      his physiotherapist set (a Goal). Expected: intensity card (gentler, shorter bouts) besides the step-up;
    #      his resting heart rate (40443-4, about 64/min on 5 of the last 7 days) shown as context, not a ceiling.
    c = Chart("pacing-heart-rate-over-ceiling", "pt-hrover", "male", "1979-10-30", "Adeyemi", "Tayo")
    c.condition(*CHRONIC_LBP_ICD)
    c.series("exercise_minutes", steady(30), "min", "min", hour=17)
    c.pain(flat(4))
    for d in range(1, 15):
        c.obs("heart_rate", 132 if d in (1, 2, 4, 6) else 112, "beats/minute", day(d, 17, 20),
              category="vital-signs", ucum_code="/min")
    for d, rest in zip((1, 2, 3, 5, 6), (63, 65, 64, 66, 62)):
        c.obs("resting_heart_rate", rest, "beats/minute", day(d, 7), category="vital-signs", ucum_code="/min")
    c.ceiling_goal("heart_rate", 120, "/min", "Keep heart rate below 120/min during exercise")
    labs_recent(c)
    out.append(c)

    # P6c. Perceived exertion 15 (hard) on 3 of the last 7 days, above her agreed ceiling of 13; no heart rate.
    #      Expected: the exertion wording of the intensity card.
    c = Chart("pacing-exertion-over-ceiling", "pt-rpeover", "female", "1986-06-06", "Kaur", "Simran")
    c.condition(*FIBROMYALGIA_ICD)
    c.steps(steady(4000))
    c.pain(flat(4))
    for d in range(1, 15):
        c.obs("rpe", 15 if d in (1, 3, 5) else 11, "{score}", day(d, 17, 25), category="survey", ucum_code="{score}")
    c.ceiling_goal("rpe", 13, "{score}", "Keep perceived exertion at 13 (somewhat hard) or below")
    labs_recent(c)
    out.append(c)

    # P7. Goal review on pacing goals only: a diabetes goal reviewed 7 days ago, the pacing goal (5000 steps a
    #     day, met) last reviewed 120 days ago. Before: no card (the diabetes review hid it). Expected: goal review,
    #     "last reviewed 120 days ago".
    c = Chart("pacing-goal-review-other-goal", "pt-goalmix", "female", "1960-03-03", "Lindgren", "Eva")
    c.condition(*KNEE_OA_ICD)
    c.steps(steady(5000))
    c.pain(flat(4))
    c.goal("Walk 5000 steps a day", status_days_ago=120, start_days_ago=150, target=("steps", 5000), due_days=20)
    c.goal("HbA1c below 7% (diabetes)", status_days_ago=7, start_days_ago=200)
    labs_recent(c)
    out.append(c)

    # P8. Pacing goal that is not SMART: activity rising (4800 -> 5500, pain stable) and the pacing goal pacecds
    #     category "activity pacing" says only "Walk more", no target, no date. Expected: a nudge to make it SMART.
    c = Chart("pacing-goal-not-smart", "pt-notsmart", "female", "1982-08-19", "Moretti", "Giulia")
    c.condition(*CHRONIC_LBP_SCT)
    steps = steady(4800, days=range(8, 15))
    steps.update(steady(5500, days=range(1, 8)))
    c.steps(steps)
    c.pain(flat(4))
    c.goal("Walk more", status_days_ago=5, pacing_category=True)
    labs_recent(c)
    out.append(c)

    # P9. Response to a step up: steps 5000 last week, 5800 this week; pain 3 last week, 4.5 this week (short of a
    #     flare). Expected: go back to about 5000 for a week; no step-up, no flare card.
    c = Chart("pacing-step-up-pain", "pt-stepup", "male", "1976-01-25", "Nakamura", "Hiro")
    c.condition(*CHRONIC_LBP_ICD)
    steps = steady(5000, days=range(8, 15))
    steps.update(steady(5800, days=range(1, 8)))
    c.steps(steps)
    pain = flat(3, range(8, 15))
    pain.update(flat(4.5, range(1, 8)))
    c.pain(pain)
    c.goal("Walk 5800 steps a day", status_days_ago=7, target=("steps", 5800), due_days=7)
    labs_recent(c)
    out.append(c)

    # P10. Clinical review item 11: pain also sent under LOINC 38208-5, which fixes no scale. Steady 6000 steps and
    #      a 0-10 NRS (72514-3) of 4 every day; on days 1-3 the app also sent 38208-5 as "9" with no scale, on day
    #      2 a coded answer "severe" (scored 9 by the sender's own list), on day 5 "40" (a 0-100 scale). Only 38208-5
    #      numbers stated on a 0-10 scale (referenceRange 0-10, days 8-14: 4) count. Before: the day means rose to
    #      6.5 (a flare). Expected: steady, step up; no flare card; the skipped readings named in explain.
    c = Chart("pacing-pain-no-scale", "pt-painscale", "female", "1968-09-12", "Haddad", "Leila")
    c.condition(*CHRONIC_LBP_SCT)
    c.steps(steady(6000))
    c.pain(flat(4))
    for d in (1, 2, 3):
        c.obs("pain_reported", 9, "{score}", day(d, 21), ucum_code="{score}")
    coded = c.obs("pain_reported", 0, None, day(2, 22))
    del coded["valueQuantity"]
    coded["valueCodeableConcept"] = {"coding": [{
        # a sender's own answer list (an example local system, not a standard code), scored by ordinalValue
        "system": "https://example.org/fhir/CodeSystem/pain-answer", "code": "severe", "display": "Severe",
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue", "valueDecimal": 9}]}],
        "text": "Severe"}
    c.obs("pain_reported", 40, "{score}", day(5, 21), ucum_code="{score}")
    for d in range(8, 15):
        c.obs("pain_reported", 4, "{score}", day(d, 21), ucum_code="{score}", ref_range=(0, 10, "{score}"))
    labs_recent(c)
    out.append(c)

    # P11. A step up from a Goal change: his 5000-step pacing goal was completed 5 days ago and the physiotherapist
    #      set a new one of 5500 steps a day from that day. Steps 5000, then 5500 for the last 5 days (this week's
    #      mean is only 7% above last week's: the activity alone shows no step up). Pain 3 until then, 4.5 since
    #      (short of a flare). Before: no card (pain up, no step seen: "variable"). Expected: the step-up response
    #      naming the goal change and its date, back to 5000 steps a day.
    def goal_step_up_chart(name, pid, given, pain_after):
        c = Chart(name, pid, "male", "1969-04-30", "Brennan", given)
        c.condition(*CHRONIC_LBP_ICD)
        steps = steady(5000, days=range(6, 29))
        steps.update(steady(5500, days=range(1, 6)))
        c.steps(steps)
        pain = flat(3, range(6, 29))
        pain.update(flat(pain_after, range(1, 6)))
        c.pain(pain)
        c.goal("Walk 5000 steps a day", status="completed", status_days_ago=5, start_days_ago=60,
               target=("steps", 5000), due_days=-5, pacing_category=True)
        c.goal("Walk 5500 steps a day (a step up of 500)", status_days_ago=5, start_days_ago=5,
               target=("steps", 5500), due_days=28, pacing_category=True)
        labs_recent(c)
        return c

    out.append(goal_step_up_chart("pacing-goal-step-up-pain", "pt-goalstep", "Sean", 4.5))
    # P11b. The same raise with pain steady at 3: a step in progress, no step-up card and no further step advised.
    out.append(goal_step_up_chart("pacing-goal-step-up-tolerated", "pt-goalstepok", "Liam", 3))
    # P11c. Trap: the new, higher goal was entered in error: no step up, no card about it.
    c = goal_step_up_chart("pacing-goal-step-up-entered-in-error", "pt-goalstepeie", "Owen", 4.5)
    next(e["resource"] for e in reversed(c.entries) if e["resource"]["resourceType"] == "Goal")["lifecycleStatus"] = \
        "entered-in-error"
    out.append(c)

    # 10. Short sleep recorded in minutes (about 5.8 h a night).
    c = Chart("sleep-short-minutes", "pt-sleep", "female", "1970-08-08", "Rossi", "Giulia")
    c.condition(*CHRONIC_LBP_ICD)
    c.sleep({d: v for d, v in zip(range(1, 15), [350, 340, 360, 345, 355, 330, 365, 350, 340, 360, 345, 355,
                                                  335, 350])}, unit="min", code="min")
    c.score("isi", 18, 20)
    c.goal("Wind-down routine at 22:00", status_days_ago=15)
    labs_recent(c)
    out.append(c)

    # 11. Enough sleep (7.6 h) and an ISI of 20 that was entered in error -> neither sleep rule fires.
    c = Chart("sleep-ok-isi-entered-in-error", "pt-sleepok", "male", "1974-04-04", "Kowalski", "Adam")
    c.condition(*CHRONIC_LBP_SCT)
    c.sleep(flat(7.6))
    c.score("isi", 20, 5, status="entered-in-error")
    c.score("isi", 8, 30)
    c.goal("Keep a regular wake time", status_days_ago=20)
    labs_recent(c)
    out.append(c)

    # 11b. Trap: a run of 5-hour nights, but 3-5 weeks ago (stale); nothing recorded in the last 14 nights.
    c = Chart("sleep-stale-short", "pt-sleepstale", "male", "1969-03-18", "Olsen", "Erik")
    c.condition(*CHRONIC_LBP_SCT)
    c.sleep(flat(5.0, range(20, 34)))
    c.goal("Regular bedtime", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 11c. Trap: STOP-Bang 6 two years ago (stale), no sleep apnea diagnosis -> no apnea card.
    c = Chart("apnea-stale-score", "pt-apneastale", "female", "1956-11-05", "Costa", "Ines")
    c.condition(*KNEE_OA_ICD)
    c.score("stopbang", 6, 730)
    c.goal("Walk to the park", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 12. STOP-Bang 4 (intermediate) while on oxycodone, no sleep apnea diagnosis -> apnea-risk.
    c = Chart("apnea-risk-on-opioid", "pt-apnea", "male", "1963-10-10", "Brown", "Michael")
    c.condition(*CHRONIC_LBP_ICD)
    c.score("stopbang", 4, 15)
    c.med_request("oxycodone5", freq=3, period=1, period_unit="d")
    c.goal("Walk after lunch", status_days_ago=7)
    labs_recent(c)
    out.append(c)

    # 13. STOP-Bang 6 but obstructive sleep apnea already diagnosed (ICD-10 G47.33) -> no apnea-risk card.
    c = Chart("apnea-known-osa", "pt-osa", "male", "1958-02-14", "Jensen", "Lars")
    c.condition(*CHRONIC_LBP_SCT)
    c.condition(*OSA_ICD)
    c.score("stopbang", 6, 10)
    c.goal("Use CPAP nightly", status_days_ago=7)
    labs_recent(c)
    out.append(c)

    # 14. PHQ-9 14 with item 9 = 1 -> depression-screen, critical. GAD-7 12 -> anxiety-screen.
    c = Chart("mood-phq9-item9", "pt-mood", "female", "1990-01-30", "Garcia", "Lucia")
    c.condition(*CHRONIC_LBP_ICD)
    c.score("phq9", 14, 6)
    c.obs("phq9_item9", 1, None, day(6, 10), integer=True)
    c.score("gad7", 12, 6)
    c.goal("Call a friend twice a week", status_days_ago=6)
    labs_recent(c)
    out.append(c)

    # 15. Traps: PHQ-9 16 is 14 months old (stale); GAD-7 15 entered in error; current PHQ-9 5, GAD-7 6.
    c = Chart("mood-stale-and-entered-in-error", "pt-moodok", "male", "1969-07-07", "Dubois", "Marc")
    c.condition(*FIBROMYALGIA_ICD)
    c.score("phq9", 16, 430)
    c.score("phq9", 5, 400)
    c.score("gad7", 15, 4, status="entered-in-error")
    c.score("gad7", 6, 20)
    c.goal("Garden for 20 minutes a day", status_days_ago=11)
    labs_recent(c)
    out.append(c)

    # 15a. PHQ-9 total only 7, but item 9 = 2 (more than half the days) -> critical safety card regardless.
    c = Chart("mood-item9-low-total", "pt-item9", "male", "1992-06-30", "Novak", "Luka")
    c.condition(*FIBROMYALGIA_ICD)
    c.score("phq9", 7, 3)
    c.obs("phq9_item9", 2, None, day(3, 10), integer=True)
    c.goal("Swim once a week", status_days_ago=3)
    labs_recent(c)
    out.append(c)

    # 15b. PHQ-9 completed on a LOINC-coded form (QuestionnaireResponse, total 16, item 9 "Not at all" with its
    #      score 0) -> depression screen (warning, not critical). Trap: a GAD-7 form still in progress (14) is ignored.
    c = Chart("mood-questionnaire-response", "pt-moodqr", "female", "1984-10-19", "Yilmaz", "Derya")
    c.condition(*CHRONIC_LBP_ICD)
    c.add({"resourceType": "QuestionnaireResponse", "id": "qr-phq9-pt-moodqr", "status": "completed",
           "questionnaire": "http://loinc.org/q/44249-1", "subject": c.subject, "authored": iso(day(5, 10)),
           "item": [
               {"linkId": "/44260-8", "text": "Thoughts that you would be better off dead, or of hurting yourself",
                "answer": [{"valueCoding": {
                    "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue", "valueDecimal": 0}],
                    "system": LOINC, "code": "LA6568-5", "display": "Not at all"}}]},
               {"linkId": "/44261-6", "text": "Patient Health Questionnaire 9 item (PHQ-9) total score",
                "answer": [{"valueInteger": 16}]}]})
    c.add({"resourceType": "QuestionnaireResponse", "id": "qr-gad7-pt-moodqr", "status": "in-progress",
           "questionnaire": "http://loinc.org/q/69737-5", "subject": c.subject, "authored": iso(day(5, 10)),
           "item": [{"linkId": "/70274-6", "text": "GAD-7 total score", "answer": [{"valueInteger": 14}]}]})
    c.goal("Walk with a friend twice a week", status_days_ago=5)
    labs_recent(c)
    out.append(c)

    # 16. Low ferritin (12 ug/L) with normal hemoglobin -> iron-deficiency only.
    c = Chart("iron-low-ferritin", "pt-iron", "female", "1988-03-21", "Nguyen", "Linh")
    c.condition(*FIBROMYALGIA_ICD)
    c.lab("hb", 12.4, "g/dL", 20)
    c.lab("ferritin", 12, "ug/L", 20)
    c.lab("tsh", 2.2, "m[IU]/L", 20)
    c.goal("Walk 20 minutes a day", status_days_ago=10)
    out.append(c)

    # 17. Ferritin 85 ng/mL, normal -> no iron card; an old ferritin of 8 (2 years ago) must not count.
    c = Chart("iron-normal-old-low", "pt-ironok", "female", "1981-12-12", "Smith", "Emma")
    c.condition(*CHRONIC_LBP_SCT)
    c.lab("hb", 13.1, "g/dL", 30)
    c.lab("ferritin", 8, "ng/mL", 730)
    c.lab("ferritin", 85, "ng/mL", 30)
    c.lab("tsh", 1.4, "m[IU]/L", 30)
    c.goal("Cycle 15 minutes on the exercise bike", status_days_ago=10)
    out.append(c)

    # 17b. Data-quality trap: ferritin reported in pmol/L (molar: no conversion to ng/mL is declared) -> the value
    #      is not compared (and not guessed); the evaluation notes the unit.
    c = Chart("iron-wrong-unit", "pt-ironunit", "female", "1986-07-07", "Horvat", "Ana")
    c.condition(*CHRONIC_LBP_ICD)
    c.lab("hb", 12.8, "g/dL", 25)
    c.lab("ferritin", 18, "pmol/L", 25)
    c.lab("tsh", 2.4, "m[IU]/L", 25)
    c.goal("Walk 20 minutes a day", status_days_ago=10)
    out.append(c)

    # 17c. Trap: a TSH of 8.5 was entered in error (wrong patient) and replaced by 2.1 -> no thyroid card.
    c = Chart("thyroid-entered-in-error", "pt-tsheie", "female", "1973-01-27", "Weber", "Anja")
    c.condition(*CHRONIC_LBP_ICD)
    c.lab("hb", 13.2, "g/dL", 20)
    c.lab("tsh", 8.5, "m[IU]/L", 20, status="entered-in-error")
    c.lab("tsh", 2.1, "m[IU]/L", 19)
    c.goal("Walk 20 minutes a day", status_days_ago=10)
    out.append(c)

    # 18. Chronic pain (ICD-10 M54.50), no hemoglobin or TSH in 12 months (last ones 20 months ago).
    c = Chart("fatigue-workup-due", "pt-workup", "female", "1965-05-25", "Okonkwo", "Ada")
    c.condition(*CHRONIC_LBP_ICD)
    c.lab("hb", 13.0, "g/dL", 600)
    c.lab("tsh", 2.0, "m[IU]/L", 600)
    c.goal("Walk the dog every morning", status_days_ago=10)
    out.append(c)

    # 18b. Chronic pain; TSH 30 days ago (recent), hemoglobin 500 days ago (stale), no ferritin: the work-up card
    # suggests hemoglobin and ferritin, never the TSH (issue 12, item 6).
    c = Chart("fatigue-workup-tsh-recent", "pt-workup-tsh", "female", "1971-02-14", "Moreau", "Claire")
    c.condition(*CHRONIC_LBP_ICD)
    c.lab("hb", 13.1, "g/dL", 500)
    c.lab("tsh", 1.8, "m[IU]/L", 30)
    c.goal("Swim twice a week", status_days_ago=10)
    out.append(c)

    # 18c. Chronic pain; hemoglobin in molar units (LOINC 59260-0, 8.4 mmol/L = 13.5 g/dL) and ferritin 60 ng/mL
    # 20 days ago, TSH 500 days ago: the card suggests only the TSH and gives the hemoglobin's age (on file).
    c = Chart("fatigue-workup-molar-hb", "pt-workup-molar", "male", "1968-08-30", "de Vries", "Pieter")
    c.condition(*CHRONIC_LBP_ICD)
    c.lab("hb_molar", 8.4, "mmol/L", 20)
    c.lab("ferritin", 60, "ng/mL", 20)
    c.lab("tsh", 2.2, "m[IU]/L", 500)
    c.goal("Cycle to work three days a week", status_days_ago=10)
    out.append(c)

    # 19. Trap: the chronic pain diagnosis was entered in error and there are no labs -> no workup card.
    c = Chart("fatigue-workup-condition-entered-in-error", "pt-noworkup", "male", "1979-09-19", "Ahmed", "Omar")
    c.condition(*CHRONIC_LBP_ICD, verification="entered-in-error")
    c.goal("Return to five-a-side football", status_days_ago=10)
    out.append(c)

    # 20. Opioid (MedicationRequest) + benzodiazepine (MedicationStatement): opioid-benzodiazepine.
    c = Chart("meds-opioid-benzo", "pt-ob", "female", "1960-04-16", "Wilson", "Sarah")
    c.condition(*CHRONIC_LBP_ICD)
    c.med_request("oxycodone5", freq=3, period=1, period_unit="d")
    c.med_statement("alprazolam05", freq=1, period=1, period_unit="d")
    c.goal("Walk 3000 steps a day", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 21. Trap: the benzodiazepine was stopped; hydrocodone/acetaminophen alone -> no combination card.
    c = Chart("meds-benzo-stopped", "pt-obstop", "male", "1957-08-30", "Taylor", "James")
    c.condition(*KNEE_OA_ICD)
    c.med_request("hydrocodone_apap", freq=2, period=1, period_unit="d")
    c.med_request("lorazepam1", status="stopped", freq=1, period=1, period_unit="d")
    c.goal("Walk 4000 steps a day", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 22. Tramadol + gabapentin (MedicationStatement): opioid-gabapentinoid.
    c = Chart("meds-opioid-gabapentinoid", "pt-og", "female", "1971-10-02", "Martin", "Julie")
    c.condition(*FIBROMYALGIA_ICD)
    c.med_request("tramadol50", freq=2, period=1, period_unit="d")
    c.med_statement("gabapentin300", freq=3, period=1, period_unit="d")
    c.goal("Pool exercise twice a week", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 23. Trap: the opioid order was entered in error; pregabalin alone -> no opioid-gabapentinoid card.
    c = Chart("meds-opioid-entered-in-error", "pt-ogeie", "male", "1976-06-06", "Schmidt", "Felix")
    c.condition(*CHRONIC_LBP_SCT)
    c.med_request("oxycodone10", status="entered-in-error", freq=4, period=1, period_unit="d")
    c.med_statement("pregabalin75", freq=2, period=1, period_unit="d")
    c.goal("Walk 20 minutes a day", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 24. Muscle relaxant + z-drug (two sedating classes, no opioid): sedative-burden.
    c = Chart("meds-sedative-burden", "pt-sed", "female", "1982-11-11", "Lopez", "Maria")
    c.condition(*CHRONIC_LBP_ICD)
    c.med_request("cyclobenzaprine10", freq=3, period=1, period_unit="d")
    c.med_statement("zolpidem10", freq=1, period=1, period_unit="d")
    c.goal("Walk 25 minutes a day", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 25. 72-year-old: amitriptyline + trazodone + zolpidem (3 CNS-active drugs, Beers) + diphenhydramine.
    c = Chart("meds-older-adult-cns", "pt-beers", "female", "1954-01-15", "Andersson", "Ingrid")
    c.condition(*KNEE_OA_ICD)
    c.med_request("amitriptyline25", freq=1, period=1, period_unit="d")
    c.med_request("trazodone50", freq=1, period=1, period_unit="d")
    c.med_statement("zolpidem10", freq=1, period=1, period_unit="d")
    c.med_statement("diphenhydramine25", freq=1, period=1, period_unit="d", prn=True)
    c.goal("Tai chi class weekly", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 26. Only one sedating drug (trazodone) -> no sedative-burden.
    c = Chart("meds-single-sedative", "pt-single", "male", "1977-03-03", "Kim", "Joon")
    c.condition(*CHRONIC_LBP_SCT)
    c.med_request("trazodone50", freq=1, period=1, period_unit="d")
    c.goal("Walk 30 minutes a day", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 27. High MME: oxycodone 10 mg every 6 h (60 MME) + morphine 15 mg 3 times a day (45 MME) = 105 MME.
    c = Chart("mme-high", "pt-mme", "male", "1959-09-29", "Clark", "Robert")
    c.condition(*CHRONIC_LBP_ICD)
    c.med_request("oxycodone10", freq=1, period=6, period_unit="h")
    c.med_statement("morphine15", freq=3, period=1, period_unit="d")
    c.goal("Walk 2000 steps a day", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 28. Fentanyl 25 mcg/h patch every 72 h (60 MME): warning band.
    c = Chart("mme-fentanyl-patch", "pt-fent", "female", "1962-02-02", "Lewis", "Helen")
    c.condition(*CHRONIC_LBP_SCT)
    c.med_request("fentanyl25", dose=1, unit="patch", freq=1, period=72, period_unit="h")
    c.goal("Sit-to-stand practice daily", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 29. Tramadol 50 mg 4 times a day = 40 MME (below 50); a stopped oxycodone order must not count.
    c = Chart("mme-below-threshold", "pt-mmelow", "female", "1973-05-17", "Walker", "Anne")
    c.condition(*KNEE_OA_ICD)
    c.med_request("tramadol50", freq=4, period=1, period_unit="d")
    c.med_request("oxycodone10", status="stopped", freq=1, period=4, period_unit="h")
    c.goal("Walk 4000 steps a day", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 30. Oxycodone "as directed" (no dose timing): MME cannot be computed -> info card says so, no guess.
    c = Chart("mme-not-computable", "pt-mmeunk", "male", "1967-12-24", "Hall", "Peter")
    c.condition(*CHRONIC_LBP_ICD)
    c.med_request("oxycodone5", dose=None, freq=None, text="Take as directed")
    c.goal("Walk 3000 steps a day", status_days_ago=10)
    labs_recent(c)
    out.append(c)

    # 32. Steps as partial counts (LOINC 55423-8, morning + afternoon) summed per day to about 6000; on three days
    #     the phone also sent the day's total (41950-7): the total is used, not added (no double counting).
    c = Chart("pacing-partial-counts", "pt-partial", "male", "1970-02-11", "Duarte", "Rui")
    c.condition(*CHRONIC_LBP_ICD)
    for d, total in steady(6000).items():
        c.obs("steps_partial", round(total * 0.4), "steps", day(d, 12), category="activity", ucum_code="{steps}")
        c.obs("steps_partial", total - round(total * 0.4), "steps", day(d, 19), category="activity",
              ucum_code="{steps}")
        if d in (2, 5, 9):
            c.obs("steps", total, "steps/day", day(d, 23), category="activity", ucum_code="{steps}/d")
    c.pain(flat(3))
    c.goal("Walk 6000 steps a day", status_days_ago=4)
    labs_recent(c)
    out.append(c)

    # 31. A realistic, complicated chart: several findings at once, mixed code systems and units.
    #     58-year-old woman, fibromyalgia (SNOMED CT) and knee osteoarthritis (ICD-10-CM); boom-bust steps;
    #     sleep in minutes; GAD-7 11, PHQ-9 8; Hb 112 g/L, ferritin 22 ug/L, TSH normal with the lab's range;
    #     oxycodone/acetaminophen 1-2 tablets every 6 h as needed (order), gabapentin and cyclobenzaprine
    #     (statements), an old stopped lorazepam; goal reviewed 10 days ago.
    c = Chart("complex-fibromyalgia", "pt-complex", "female", "1968-04-02", "Petrova", "Elena")
    c.condition(SNOMED, "203082005", "Fibromyalgia")
    c.condition(*KNEE_OA_ICD)
    c.condition(SNOMED, "44054006", "Diabetes mellitus type 2", clinical="resolved")  # not active: ignored
    highs = {14, 12, 10, 8, 6, 4, 2}
    c.steps({d: (11800 if d in highs else 2900) for d in range(1, 15)}, unit="/d", code="/d")
    c.pain({d: (6.5 if (d + 1) in highs else 4) for d in range(1, 15)})
    c.sleep({d: v for d, v in zip(range(1, 15), [370, 355, 380, 360, 345, 390, 365, 350, 375, 360, 340, 385,
                                                  355, 365])}, unit="min", code="min")
    c.score("gad7", 11, 12)
    c.score("phq9", 8, 12)
    c.lab("hb", 112, "g/L", 15)
    c.lab("ferritin", 22, "ug/L", 15)
    c.lab("tsh", 3.9, "m[IU]/L", 15, ref_range=(0.4, 4.0, "m[IU]/L"))
    r = c.med_request("oxycodone_apap", dose=None, freq=1, period=6, period_unit="h", prn=True)
    r["dosageInstruction"][0]["timing"]["repeat"]["frequencyMax"] = 1
    r["dosageInstruction"][0]["doseAndRate"] = [{"doseRange": {
        "low": {"value": 1, "unit": "tablet", "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm", "code": "TAB"},
        "high": {"value": 2, "unit": "tablet", "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm", "code": "TAB"}}}]
    r["dosageInstruction"][0]["text"] = "1-2 tablets every 6 hours as needed for pain"
    c.med_statement("gabapentin300", freq=3, period=1, period_unit="d")
    c.med_statement("cyclobenzaprine10", freq=1, period=1, period_unit="d")
    c.med_request("lorazepam1", status="stopped", freq=1, period=1, period_unit="d", authored_days_ago=400)
    c.goal("Walk 20 minutes on 5 days a week", status_days_ago=10)
    out.append(c)

    # ---- issue 12: opioid guidance exclusions, naloxone, look-back, molar hemoglobin (now 2026-11-20) ----------
    # 33. Metastatic breast cancer (ICD-10-CM C50.911, CDC malignant cancer set) on fentanyl 75 mcg/h every 72 h
    #     = 180 MME/day: the CDC opioid guidance does not apply -> no dose card, no naloxone card.
    c = Chart("safety-cancer-fentanyl", "pt-cancer", "female", "1960-08-08", "Moreau", "Claire")
    c.condition(*CHRONIC_LBP_ICD)
    c.condition(ICD10, "C50.911", "Malignant neoplasm of unspecified site of right female breast", onset_days_ago=200)
    c.med_request("fentanyl75", dose=1, unit="patch", freq=1, period=72, period_unit="h")
    labs_recent(c)
    out.append(c)

    # 34. Hospice care ordered 20 days ago (SNOMED 385763009, CDC end-of-life therapies) on 105 MME/day -> no card.
    c = Chart("safety-hospice-opioid", "pt-hospice", "male", "1948-01-20", "Novak", "Jan")
    c.condition(*CHRONIC_LBP_ICD)
    c.service_request("385763009", "Hospice care (regime/therapy)", 20)
    c.med_request("oxycodone10", freq=1, period=6, period_unit="h")
    c.med_statement("morphine15", freq=3, period=1, period_unit="d")
    labs_recent(c)
    out.append(c)

    # 35. The same, but the hospice order was 200 days ago (outside the CDC 90-day look-back) -> cards fire.
    c = Chart("safety-hospice-old", "pt-hospold", "male", "1948-01-20", "Novak", "Petr")
    c.condition(*CHRONIC_LBP_ICD)
    c.service_request("385763009", "Hospice care (regime/therapy)", 200)
    c.med_request("oxycodone10", freq=1, period=6, period_unit="h")
    c.med_statement("morphine15", freq=3, period=1, period_unit="d")
    labs_recent(c)
    out.append(c)

    # 36. 16-year-old on oxycodone 10 mg every 4 h (90 MME/day) and alprazolam: under 18 -> no opioid cards.
    c = Chart("safety-teen-opioid", "pt-teen", "male", "2010-03-03", "Silva", "Leo")
    c.condition(*CHRONIC_LBP_ICD)
    c.med_request("oxycodone10", freq=1, period=4, period_unit="h")
    c.med_request("alprazolam05", freq=2, period=1, period_unit="d")
    labs_recent(c)
    out.append(c)

    # 37. 105 MME/day with naloxone dispensed 200 days ago (on record) -> high-MME card, no naloxone card.
    c = Chart("safety-naloxone-on-file", "pt-nalox", "male", "1959-09-29", "Clark", "Roberta")
    c.condition(*CHRONIC_LBP_ICD)
    c.med_request("oxycodone10", freq=1, period=6, period_unit="h")
    c.med_statement("morphine15", freq=3, period=1, period_unit="d")
    c.med_dispense("naloxone_nasal", 200, None, quantity=2)
    labs_recent(c)
    out.append(c)

    # 38. Oxycodone 5 mg 4 times a day (30 MME) and an "active" alprazolam order authored 3 years ago, never
    #     dispensed since: the benzodiazepine is not current -> no opioid + benzodiazepine card, no naloxone card.
    c = Chart("safety-old-benzo-order", "pt-oldbenzo", "female", "1966-11-11", "Rossi", "Giulia")
    c.condition(*CHRONIC_LBP_ICD)
    c.med_request("oxycodone5", freq=4, period=1, period_unit="d")
    c.med_request("alprazolam05", freq=2, period=1, period_unit="d", authored_days_ago=1095)
    labs_recent(c)
    out.append(c)

    # 39. The same 3-year-old alprazolam order, but dispensed 10 days ago for 30 days: current again -> opioid +
    #     benzodiazepine card, and the naloxone card (benzodiazepine is a risk factor, no naloxone on record).
    c = Chart("safety-old-benzo-dispensed", "pt-benzodisp", "female", "1966-11-11", "Rossi", "Marta")
    c.condition(*CHRONIC_LBP_ICD)
    c.med_request("oxycodone5", freq=4, period=1, period_unit="d")
    c.med_request("alprazolam05", freq=2, period=1, period_unit="d", authored_days_ago=1095)
    c.med_dispense("alprazolam05", 10, 30, quantity=60)
    labs_recent(c)
    out.append(c)

    # 40. Woman, hemoglobin 4.2 mmol/L under LOINC 59260-0 (x 1.611 = 6.8 g/dL): severe anaemia, critical.
    c = Chart("anemia-molar-59260", "pt-molar", "female", "1980-04-04", "Jansen", "Sanne")
    c.condition(*CHRONIC_LBP_ICD)
    c.lab("hb_molar", 4.2, "mmol/L", 5)
    c.lab("tsh", 2.0, "m[IU]/L", 5)
    out.append(c)

    # 41. Man, venous hemoglobin 72 g/L under LOINC 30350-3 (a VSAC Hemoglobin lab test member): 7.2 g/dL, severe
    #     anaemia, critical.
    c = Chart("anemia-venous-30350", "pt-venoushb", "male", "1971-02-17", "Okafor", "Daniel")
    c.condition(*CHRONIC_LBP_ICD)
    c.lab("hb_venous", 72, "g/L", 5)
    c.lab("tsh", 2.0, "m[IU]/L", 5)
    out.append(c)

    # 42. Woman with only a free plasma hemoglobin (35183-3, 5 mg/dL; left out of the hemoglobin value set): it is
    #     not a blood hemoglobin, so no anaemia card (read as one it would be 0.005 g/dL, "critical").
    c = Chart("anemia-plasma-hb-not-read", "pt-plasmahb", "female", "1983-09-30", "Lindqvist", "Elin")
    c.condition(*CHRONIC_LBP_ICD)
    c.lab("hb_plasma", 5, "mg/dL", 5)
    c.lab("tsh", 2.0, "m[IU]/L", 5)
    out.append(c)

    # 43. TSH 9.2 u[IU]/mL sent under 3015-5 (TSH in blood, the ISiK Labor code): 9.2 mIU/L, above the usual
    #     adult range -> thyroid card.
    c = Chart("tsh-blood-3015", "pt-tshblood", "female", "1969-05-12", "Weber", "Anke")
    c.condition(*CHRONIC_LBP_ICD)
    c.lab("hb", 13.4, "g/dL", 5)
    c.lab("tsh_blood", 9.2, "u[IU]/mL", 5)
    out.append(c)

    # 44-46. Ferritin 48 ng/mL: above the default 30, below WHO 2020's 70 with inflammation (CRP > 5 mg/L).
    # 44: CRP 18 mg/L on the same day -> iron-deficiency card (inflammation wording).
    # 45: CRP 3 mg/L -> no card.  46: CRP 18 mg/L but 200 days old, not measured with the ferritin -> no card.
    for name, pid, crp, crp_days in (("iron-ferritin48-crp-raised", "pt-ferrcrp", 18, 10),
                                     ("iron-ferritin48-crp-normal", "pt-ferrcrpn", 3, 10),
                                     ("iron-ferritin48-crp-old", "pt-ferrcrpo", 18, 200)):
        c = Chart(name, pid, "female", "1977-08-21", "Moreau", "Claire")
        c.condition(*CHRONIC_LBP_ICD)
        c.lab("hb", 12.6, "g/dL", 10)
        c.lab("ferritin", 48, "ng/mL", 10)
        c.lab("crp", crp, "mg/L", crp_days)
        c.lab("tsh", 2.0, "m[IU]/L", 10)
        out.append(c)

    return out


def order_requests() -> dict[str, dict]:
    """CDS Hooks order-select / order-sign requests: a draft order plus the chart as prefetch."""

    def request(name, hook, chart: Chart, draft: dict):
        chart.entries = [e for e in chart.entries if e["resource"] is not draft]
        draft = dict(draft, status="draft")
        patient = chart.entries[0]["resource"]
        meds = [e for e in chart.entries if e["resource"]["resourceType"].startswith("Medication")]
        conds = [e for e in chart.entries if e["resource"]["resourceType"] == "Condition"]
        ctx = {"userId": "PractitionerRole/prescriber-1", "patientId": chart.pid,
               "draftOrders": {"resourceType": "Bundle", "type": "collection",
                               "entry": [{"resource": draft}]}}
        if hook == "order-select":
            ctx["selections"] = [f"MedicationRequest/{draft['id']}"]
        return {
            "hook": hook, "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://pacecds.org/examples/{name}")),
            "context": ctx,
            "prefetch": {
                "patient": patient,
                "medications": {"resourceType": "Bundle", "type": "searchset", "entry": meds},
                "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": conds},
            },
        }

    out = {}
    c = Chart("order-benzo-on-opioid", "pt-order1", "female", "1964-06-21", "Young", "Karen")
    c.condition(*CHRONIC_LBP_ICD)
    c.med_request("oxycodone5", freq=4, period=1, period_unit="d")
    draft = c.med_request("alprazolam05", freq=2, period=1, period_unit="d", authored_days_ago=0)
    out[c.name] = request(c.name, "order-select", c, draft)

    c = Chart("order-gabapentin-on-opioid-sign", "pt-order2", "male", "1958-03-13", "King", "David")
    c.condition(*KNEE_OA_ICD)
    c.med_statement("morphine15", freq=2, period=1, period_unit="d")
    draft = c.med_request("gabapentin300", freq=3, period=1, period_unit="d", authored_days_ago=0)
    out[c.name] = request(c.name, "order-sign", c, draft)

    c = Chart("order-muscle-relaxant-on-z-drug", "pt-order4", "male", "1979-12-02", "Baker", "Tom")
    c.condition(*CHRONIC_LBP_ICD)
    c.med_statement("zolpidem10", freq=1, period=1, period_unit="d")
    draft = c.med_request("cyclobenzaprine10", freq=3, period=1, period_unit="d", authored_days_ago=0)
    out[c.name] = request(c.name, "order-select", c, draft)

    c = Chart("order-benzo-on-z-drug-and-opioid", "pt-order5", "female", "1961-05-05", "Evans", "Ruth")
    c.condition(*FIBROMYALGIA_ICD)
    c.med_statement("zolpidem10", freq=1, period=1, period_unit="d")
    c.med_request("tramadol50", freq=3, period=1, period_unit="d")
    draft = c.med_request("lorazepam1", freq=2, period=1, period_unit="d", authored_days_ago=0)
    out[c.name] = request(c.name, "order-sign", c, draft)

    c = Chart("order-benzo-opioid-stopped", "pt-order3", "female", "1970-10-30", "Scott", "Laura")
    c.condition(*CHRONIC_LBP_SCT)
    c.med_request("oxycodone5", status="stopped", freq=4, period=1, period_unit="d")
    draft = c.med_request("lorazepam1", freq=1, period=1, period_unit="d", authored_days_ago=0)
    out[c.name] = request(c.name, "order-select", c, draft)

    # issue 12: the draft opioid counts into the total MME at order time.
    c = Chart("order-mme-crosses-50", "pt-order6", "female", "1972-07-07", "Lopez", "Maria")
    c.condition(*KNEE_OA_ICD)
    c.med_request("tramadol50", freq=4, period=1, period_unit="d")
    draft = c.med_request("oxycodone5", freq=4, period=1, period_unit="d", authored_days_ago=0)
    out[c.name] = request(c.name, "order-select", c, draft)

    c = Chart("order-mme-crosses-90", "pt-order7", "male", "1963-02-14", "Weber", "Hans")
    c.condition(*CHRONIC_LBP_ICD)
    c.med_request("oxycodone10", freq=1, period=6, period_unit="h")
    draft = c.med_request("morphine15", freq=3, period=1, period_unit="d", authored_days_ago=0)
    out[c.name] = request(c.name, "order-sign", c, draft)

    c = Chart("order-mme-cancer", "pt-order8", "male", "1963-02-14", "Weber", "Karl")
    c.condition(*CHRONIC_LBP_ICD)
    c.condition(ICD10, "C61", "Malignant neoplasm of prostate", onset_days_ago=100)
    c.med_request("oxycodone10", freq=1, period=6, period_unit="h")
    draft = c.med_request("morphine15", freq=3, period=1, period_unit="d", authored_days_ago=0)
    out[c.name] = request(c.name, "order-sign", c, draft)
    return out


def validate(bundle: dict) -> None:
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(bundle)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for chart in patients():
        b = chart.bundle()
        validate(b)
        (OUT / f"{chart.name}.json").write_text(json.dumps(b, indent=2, ensure_ascii=False) + "\n")
    requests = order_requests()
    for name, req in requests.items():
        validate({"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": req["prefetch"]["patient"]}]
                  + req["prefetch"]["medications"]["entry"] + req["context"]["draftOrders"]["entry"]})
        (OUT / f"{name}.json").write_text(json.dumps(req, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(patients())} patients and {len(requests)} order requests to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
