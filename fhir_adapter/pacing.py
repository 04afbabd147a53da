"""The patient's pacing state, quota and flare episodes, from their own daily activity and pain series.

One fact of kind `pacing` (rules/facts/activity.yaml) names its inputs by role and carries its parameters, each
with its source or labelled a choice:

- activity: the steps series (daily_series); minutes: the active-minutes series (daily_series), used when the
  patient records more days of minutes than of steps in the last 14 days (a wheelchair user, a swimmer);
- symptom: daily pain 0-10 (daily_series); goal: the goal fact that recognises pacing goals;
- resting_heart_rate (optional): shown beside a clinician-set heart-rate ceiling (median of the last 7 days); it
  never sets a ceiling (no formula is given by the clinical sources);
- medications (optional): a medication_classes fact; a sustained fall in activity after one of its drugs was
  started is reported as an association, never as a cause.

The state is one of (checked in this order, the first that holds wins):

    flare_rising, flare_peak, flare_settling   a current flare episode (pain rated in the last max_age_days)
    boom_bust                                  replaces a non-severe current flare when the boom-bust pattern holds
    flare_settled                              an episode ended in the last settled_window_days and activity is
                                               still below the pre-flare quota
    insufficient_data                          no activity recorded in the last 28 days (nothing to pace from)
    building_baseline                          fewer than min_days of activity or pain in the last 14 days
    at_maintenance                             the typical level meets the target of an agreed pacing Goal
    step_up_pain                               pain up more than pain_rise_allowed (short of a flare) after a step up:
                                               the pacing target raised by a new Goal in the last goal_step_up_days
                                               (pain in the week after its start against the week before: back to the
                                               previous target), or activity up more than the steady band this week
                                               (this week's pain against last week's: back to last week's level)
    progressing                                activity rising week on week with stable pain, or the pacing target
                                               raised in the last 7 days with stable pain (a step in progress)
    steady                                     activity steady week on week, small day-to-day swings, stable pain
    variable                                   none of these (activity falling or swinging without the boom-bust
                                               pain link, or pain creeping up): no step is advised

Missing days stay missing; the windows of activity end yesterday (today is incomplete); pain includes today.
Targets are rounded: steps to the nearest 100, minutes to the nearest 5.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics

from .facts import (
    GOAL_ANY_STATUS,
    Fact,
    _codeable_name,
    _daily_values,
    _ref,
    active_medications,
    parse_time,
    recognised_goals,
)

HISTORY_DAYS = 91  # today and the 90 days before: flares are counted over 90 days
RECENT_ACTIVITY_DAYS = 28

STEPS_UNIT = {"steps": ("steps", "steps/day", 100), "minutes": ("active minutes", "minutes/day", 5)}
# how a Goal target in the patient's unit is coded (LOINC, clinical review "activity codes"; UCUM)
MEASURE = {"steps": ("41950-7", "Number of steps in 24 hour Measured", "/d"),
           "minutes": ("55411-3", "Exercise duration", "min/d")}
STEP_CODES = {"41950-7", "55423-8"}
MINUTE_CODES = {"55411-3", "68516-4"}
STATE_TEXT = {
    "insufficient_data": "no activity recorded in the last 4 weeks",
    "building_baseline": "too few days recorded to set a baseline",
    "steady": "steady activity and stable pain",
    "progressing": "activity rising with stable pain",
    "at_maintenance": "at the agreed maintenance level",
    "variable": "no clear pattern (no step advised)",
    "flare_rising": "flare, still rising",
    "flare_peak": "flare at or near its peak",
    "flare_settling": "flare settling: pain coming down",
    "flare_settled": "flare settled: rebuilding activity",
    "boom_bust": "boom-bust: big swings with pain after busy days",
    "step_up_pain": "pain rose after a step up",
}


def round_to(value: float | None, step: int) -> int | None:
    if value is None:
        return None
    return int(math.floor(value / step + 0.5) * step)


def _mean(values):
    return statistics.fmean(values) if values else None


class Episode:
    def __init__(self, onset: int, pain: float):
        self.onset = onset  # days ago
        self.peak = onset
        self.peak_pain = pain
        self.calm_start: int | None = None
        self.calm_run = 0
        self.settled: int | None = None  # days ago of the first calm day of the settling run

    @property
    def days_to_settle(self) -> int | None:
        return None if self.settled is None else self.onset - self.settled


def episodes(pain: dict[int, float], usual: float | None, p: dict) -> list[Episode]:
    """Flare episodes in the pain series, oldest first.

    A flare day: pain at least flare_rise above the patient's usual pain (median of the 90 days), or pain at or
    above severe_pain. The episode starts on its first flare day; its peak is its first day at its highest pain;
    it has settled once pain is back within settle_margin of the usual pain on settle_days recorded days in a
    row (the first of them is the settled day). Missing days neither end nor extend an episode."""
    out, current = [], None
    for ago in sorted(pain, reverse=True):
        v = pain[ago]
        flare = v >= p["severe_pain"] or (usual is not None and v >= usual + p["flare_rise"])
        if current is None:
            if flare:
                current = Episode(ago, v)
            continue
        if v > current.peak_pain:
            current.peak, current.peak_pain = ago, v
        calm = usual is not None and v <= usual + p["settle_margin"]
        if calm:
            current.calm_run += 1
            if current.calm_run == 1:
                current.calm_start = ago
            if current.calm_run >= p["settle_days"]:
                current.settled = current.calm_start
                out.append(current)
                current = None
        else:
            current.calm_run, current.calm_start = 0, None
    if current is not None:
        out.append(current)
    return out


AGREED_GOAL = {"active", "accepted", "completed", "on-hold"}  # a level the clinician and patient agreed


def _daily_target(goal: dict, kind: str, unit_def) -> float | None:
    """A Goal's daily activity target in the patient's unit (the highest of its targets in that unit), or None."""
    codes = STEP_CODES if kind == "steps" else MINUTE_CODES
    best = None
    for t in goal.get("target") or []:
        if not isinstance(t, dict):
            continue
        measure = {c.get("code") for c in (t.get("measure") or {}).get("coding") or [] if isinstance(c, dict)}
        if not measure & codes:
            continue
        q = t.get("detailQuantity") or (t.get("detailRange") or {}).get("low")
        if not isinstance(q, dict) or not isinstance(q.get("value"), (int, float)):
            continue
        value = unit_def.to_unit(float(q["value"]), q.get("code") or q.get("unit"))
        if value is not None and (best is None or value > best):
            best = value
    return best


def _goal_target(goal_def, data, kind: str, unit_def) -> tuple[float | None, str | None]:
    """The daily target of an agreed pacing Goal in the patient's activity unit (the highest, if several)."""
    best, ref = None, None
    for goal in recognised_goals(goal_def, data, GOAL_ANY_STATUS):
        if goal.get("lifecycleStatus") not in AGREED_GOAL:
            continue
        value = _daily_target(goal, kind, unit_def)
        if value is not None and (best is None or value > best):
            best, ref = value, _ref(goal)
    return best, ref


def goal_step_up(goal_def, data, kind: str, unit_def, now: dt.datetime, max_days: float):
    """The latest raise of an agreed pacing target in the last max_days: (days ago, previous target, new target,
    the new Goal, the Goal it replaces), or None.

    Each agreed pacing Goal with a daily target in the patient's unit is dated by when its pursuit began
    (startDate, else statusDate); a Goal replaces the one dated just before it. A raise is a Goal whose target is
    higher than that of the Goal it replaces: a completed goal followed by a new, higher one, or a newer goal
    raising the target of one still open. Proposed goals (not agreed yet), and cancelled, rejected or
    entered-in-error ones, never count. A target edited in place leaves no trace in the Goal itself (no history
    is read): only a new Goal shows a step up."""
    dated = []
    for goal in recognised_goals(goal_def, data, GOAL_ANY_STATUS):
        if goal.get("lifecycleStatus") not in AGREED_GOAL:
            continue
        target = _daily_target(goal, kind, unit_def)
        when = parse_time(goal.get("startDate")) or parse_time(goal.get("statusDate"))
        if target is None or when is None or when > now:
            continue
        dated.append((when.astimezone(dt.timezone.utc).date().toordinal(), target, goal))
    dated.sort(key=lambda row: row[0])
    today = now.astimezone(dt.timezone.utc).date().toordinal()
    for (before, old, old_goal), (start, new, new_goal) in reversed(list(zip(dated, dated[1:]))):
        if today - start > max_days:
            break
        if start > before and new > old:
            return today - start, old, new, new_goal, old_goal
    return None


def _start_days_ago(resource: dict, now: dt.datetime) -> int | None:
    period = resource.get("effectivePeriod") or {}
    when = (parse_time(resource.get("authoredOn")) or parse_time(resource.get("effectiveDateTime"))
            or parse_time(period.get("start")))
    if when is None or when > now:
        return None
    return now.date().toordinal() - when.astimezone(dt.timezone.utc).date().toordinal()


def derive(definition, data, now: dt.datetime) -> Fact:
    roles = dict(zip(definition.roles, definition.inputs))
    p = dict(definition.parameters)
    fact = Fact(definition.name)
    used: list[str] = []

    series = {}
    for role in ("activity", "minutes"):
        if role in roles:
            values, refs = _daily_values(roles[role], data, now, fact, days=HISTORY_DAYS)
            series[role] = (values, refs)
    pain, pain_refs = _daily_values(roles["symptom"], data, now, fact, days=HISTORY_DAYS)

    def recent_days(values, last=14):
        return sum(1 for d in range(1, last + 1) if d in values)

    steps = series.get("activity", ({}, []))
    minutes = series.get("minutes", ({}, []))
    kind, (activity, activity_refs) = "steps", steps
    if recent_days(minutes[0]) > recent_days(steps[0]) or (not steps[0] and minutes[0]):
        kind, (activity, activity_refs) = "minutes", minutes
    label, unit_text, step = STEPS_UNIT[kind]
    activity = {d: v for d, v in activity.items() if d >= 1}  # windows end yesterday
    code, display, ucum_code = MEASURE[kind]
    fact.values.update(activity=label, activity_unit=unit_text, measure_code=code, measure_display=display,
                       target_ucum=ucum_code, bout_active=p["bout_active_minutes"],
                       bout_rest_min=p["bout_rest_min_minutes"], bout_rest_max=p["bout_rest_max_minutes"])

    # -- pain and flare episodes -------------------------------------------------------------------
    usual_days = [pain[d] for d in pain if d >= 1]
    usual = statistics.median(usual_days) if len(usual_days) >= p["min_days"] else None
    found = episodes(pain, usual, p)
    fact.values["pain_days"] = recent_days(pain)
    if usual is not None:
        fact.values["pain_usual"] = round(usual, 1)
    latest_pain_day = min(pain) if pain else None
    if latest_pain_day is not None:
        fact.values["pain_latest"] = pain[latest_pain_day]
    in_flare: set[int] = set()
    for e in found:
        end = e.settled if e.settled is not None else 0
        in_flare.update(range(end, e.onset + 1))
    fact.values["flares_90d"] = len(found)
    settled = [e for e in found if e.settled is not None]
    fact.values["settled_flares_90d"] = len(settled)
    if settled:
        fact.values["days_to_settle"] = round(statistics.fmean(e.onset - (e.settled or 0) for e in settled))
        fact.values["last_settled_days_ago"] = settled[-1].settled
    if found:  # the flare record in plain words, for cards (onset, peak and recovery of each episode)
        history = [f"{len(found)} flare{'s' if len(found) > 1 else ''} in the last 90 days"]
        for e in found[-3:]:
            when = (now - dt.timedelta(days=e.onset)).date().isoformat()
            outcome = f"settled after {e.days_to_settle} days" if e.settled is not None else "not settled yet"
            history.append(f"from {when}: peak {e.peak_pain:g}/10 on day {e.onset - e.peak + 1}, {outcome}")
        fact.values["flare_history"] = history

    # -- activity levels ------------------------------------------------------------------------------
    fact.values["days_recorded"] = recent_days(activity)
    last14 = [activity[d] for d in range(1, 15) if d in activity]
    week = [activity[d] for d in range(1, 8) if d in activity]
    prev_week = [activity[d] for d in range(8, 15) if d in activity]
    if len(week) >= 4:
        fact.values["mean_7d"] = round_to(_mean(week), step)
    if len(prev_week) >= 4:
        fact.values["prev_mean_7d"] = round_to(_mean(prev_week), step)
    if len(last14) >= p["min_days"]:
        fact.values["low_day"] = round_to(min(last14), step)
        fact.values["high_day"] = round_to(max(last14), step)
    latest_day = min((d for d in activity if d <= 3), default=None)
    if latest_day is not None:
        fact.values["latest_activity"] = round_to(activity[latest_day], step)
    # the usual level: the most recent 14 activity days within 28 that are not in a flare episode
    calm = [activity[d] for d in sorted(activity) if d <= RECENT_ACTIVITY_DAYS and d not in in_flare][:14]
    typical = statistics.median(calm) if len(calm) >= p["min_days"] else None
    if typical is not None:
        _set_levels(fact, typical, p, step)

    # boom-bust: big day-to-day swings and more pain on the day after the busier days
    swing = None
    if len(last14) >= p["min_days"]:
        mean14 = _mean(last14)
        if mean14 > 0:
            swing = math.sqrt(math.fsum((v - mean14) ** 2 for v in last14) / len(last14)) / mean14
            fact.values["swing"] = round(swing, 2)
    pairs = [(activity[d], pain[d - 1]) for d in range(2, 16) if d in activity and (d - 1) in pain]
    rise = None
    if pairs:
        split = _mean([a for a, _ in pairs])
        high = [s for a, s in pairs if a > split]
        low = [s for a, s in pairs if a <= split]
        if len(high) >= 3 and len(low) >= 3:
            rise = _mean(high) - _mean(low)
            fact.values.update(pain_after_busy=round(_mean(high), 1), pain_after_quiet=round(_mean(low), 1),
                               pain_rise_after_busy=round(rise, 1))
    boom_bust = swing is not None and rise is not None and swing >= p["boom_bust_swing"] and rise >= p["boom_bust_pain_rise"]

    # -- the state ----------------------------------------------------------------------------------------
    state = None
    current = found[-1] if found and found[-1].settled is None else None
    pain_current = latest_pain_day is not None and latest_pain_day <= p["max_age_days"]
    if current is not None and latest_pain_day is not None and pain_current:
        latest = pain[latest_pain_day]
        before = [pain[d] for d in sorted(pain) if d > latest_pain_day]
        previous = before[0] if before else None
        drop = current.peak_pain - latest
        if drop >= p["settling_drop"]:
            state = "flare_settling"
        elif current.peak == latest_pain_day and (previous is None or latest > previous):
            state = "flare_rising"
        else:
            state = "flare_peak"
        if boom_bust and current.peak_pain < p["severe_pain"] and state != "flare_settling":
            state = "boom_bust"  # the pain after a busy day is the bust of the cycle: one card, the cycle's advice
    if state == "boom_bust" and len(last14) >= p["min_days"]:
        _set_levels(fact, statistics.median(last14), p, step)  # the swings are the cycle, not flares: all 14 days
    if state and state.startswith("flare") and current is not None and latest_pain_day is not None:
        fact.values["flare_severity"] = "severe" if current.peak_pain >= p["severe_pain"] else "moderate"
        fact.values.update(flare_onset_days_ago=current.onset, flare_peak_days_ago=current.peak,
                           flare_peak_pain=current.peak_pain, flare_days=current.onset - latest_pain_day + 1)
    reference = current if state and state.startswith("flare") else None
    if state is None and settled and settled[-1] is found[-1] and settled[-1].settled <= p["settled_window_days"]:
        reference = settled[-1]
    if reference is not None:
        before = [activity[d] for d in sorted(activity) if reference.onset < d <= reference.onset + 14
                  and d not in in_flare]
        if len(before) >= p["min_pre_flare_days"]:
            pre_quota = round_to(statistics.median(before) * p["quota_fraction"], step)
            fact.values["pre_flare_quota"] = pre_quota
            fact.values["flare_floor"] = round_to(pre_quota * p["flare_floor_fraction"], step)
            fact.values["rebuild_step"] = max(step, round_to(pre_quota * p["rebuild_fraction"], step) or 0)
            if "latest_activity" in fact.values:
                fact.values["rebuild_from"] = fact.values["latest_activity"]
            if state is None and fact.values.get("latest_activity") is not None \
                    and fact.values["latest_activity"] < pre_quota:
                state = "flare_settled"
                fact.values.update(flare_onset_days_ago=reference.onset, flare_peak_days_ago=reference.peak,
                                   flare_peak_pain=reference.peak_pain,
                                   flare_days=reference.days_to_settle)
    if state is None:
        if not any(d <= RECENT_ACTIVITY_DAYS for d in activity):
            state = "insufficient_data"
        elif fact.values["days_recorded"] < p["min_days"] or fact.values["pain_days"] < p["min_days"] \
                or typical is None:
            state = "building_baseline"
        elif boom_bust:
            state = "boom_bust"
            _set_levels(fact, statistics.median(last14), p, step)
    unit_def = roles.get("activity" if kind == "steps" else "minutes")
    # a release from before Goal step-ups (1.2.0 and older) has no goal_step_up_days: it does not look for them
    raised = goal_step_up(roles["goal"], data, kind, unit_def, now, p["goal_step_up_days"]) \
        if "goal" in roles and unit_def is not None and "goal_step_up_days" in p else None
    goal_pain_rose = goal_stepping = False
    if raised is not None:  # the clinician raised the pacing target: the step-up date, and pain since then
        ago, old, new, new_goal, old_goal = raised
        fact.values.update(step_up_source="goal", step_up_days_ago=ago, step_up_from=round_to(old, step),
                           step_up_to=round_to(new, step),
                           step_up_date=(now - dt.timedelta(days=ago)).date().isoformat())
        used.extend((_ref(new_goal), _ref(old_goal)))
        since = [pain[d] for d in range(0, ago + 1) if d in pain and d >= ago - 6]  # the first week after it
        before = [pain[d] for d in range(ago + 1, ago + 8) if d in pain]
        if len(since) >= p["goal_step_up_min_days"] and len(before) >= 4:
            fact.values.update(pain_before_step_up=round(_mean(before), 1), pain_since_step_up=round(_mean(since), 1),
                               pain_since_days=len(since))
            goal_pain_rose = _mean(since) > _mean(before) + p["pain_rise_allowed"]
        goal_stepping = ago < 7  # a step in progress: stable for about a week before the next (clinical reference)
    if state is None:
        target, goal_ref = _goal_target(roles["goal"], data, kind, unit_def) \
            if "goal" in roles and unit_def is not None else (None, None)
        if target is not None and goal_ref is not None:
            fact.values["goal_target"] = round_to(target, step)
            used.append(goal_ref)
        pain_week = [pain[d] for d in range(1, 8) if d in pain]
        pain_prev = [pain[d] for d in range(8, 15) if d in pain]
        pain_stable = (len(pain_week) >= 4 and len(pain_prev) >= 4
                       and _mean(pain_week) <= _mean(pain_prev) + p["pain_rise_allowed"])
        m7, prev7 = _mean(week) if len(week) >= 4 else None, _mean(prev_week) if len(prev_week) >= 4 else None
        if len(pain_week) >= 4 and len(pain_prev) >= 4:
            fact.values.update(pain_mean_7d=round(_mean(pain_week), 1), pain_prev_mean_7d=round(_mean(pain_prev), 1))
        stepped_up = m7 is not None and prev7 and m7 > prev7 * (1 + p["steady_band"])
        pain_rose = (len(pain_week) >= 4 and len(pain_prev) >= 4
                     and _mean(pain_week) > _mean(pain_prev) + p["pain_rise_allowed"])
        if goal_pain_rose and raised is not None:
            state = "step_up_pain"  # more pain since the pacing target was raised: back to the previous target
            fact.values["back_to"] = fact.values["step_up_from"]
        elif target is not None and typical >= target * p["maintenance_met"] and pain_stable:
            state = "at_maintenance"
        elif stepped_up and pain_rose:
            state = "step_up_pain"  # more activity this week and more pain: back to last week's level
            fact.values.update(step_up_source="activity", back_to=fact.values["prev_mean_7d"],
                               step_up_from=fact.values["prev_mean_7d"], step_up_to=fact.values["mean_7d"],
                               pain_before_step_up=fact.values["pain_prev_mean_7d"],
                               pain_since_step_up=fact.values["pain_mean_7d"])
        elif pain_stable and m7 is not None and prev7 and m7 > prev7 * (1 + p["steady_band"]):
            state = "progressing"
        elif goal_stepping and pain_stable:
            state = "progressing"  # the target was raised this week: no further step until it is held
        elif (pain_stable and m7 is not None and prev7 and abs(m7 / prev7 - 1) <= p["steady_band"]
              and swing is not None and swing < p["steady_swing"]):
            state = "steady"
        else:
            state = "variable"

    # -- a sustained fall in activity after a new medication (an association, not a cause) --------------
    if "medications" in roles:
        _activity_fall(fact, roles["medications"], data, now, activity, p, step, used)

    # -- intensity cues against the patient's own ceilings (set by the clinician as a Goal target) --------
    for role, prefix in (("heart_rate", "hr"), ("exertion", "rpe")):
        if role in roles:
            _intensity(fact, roles[role], prefix, data, now, used)
    if "resting_heart_rate" in roles:  # context beside a heart-rate ceiling only: no source gives a formula
        resting, refs = _daily_values(roles["resting_heart_rate"], data, now, fact)
        week = [resting[d] for d in range(0, 7) if d in resting]
        if week:
            fact.values.update(hr_resting=round(statistics.median(week)), hr_resting_days=len(week))
            used.extend(refs)

    # -- bad-day substitutes from the activity inventory ---------------------------------------------
    substitutes, inventory_ref = bad_day_activities(data, now, p["inventory_max_age_days"])
    if substitutes and inventory_ref is not None:
        fact.values["bad_day_activities"] = substitutes
        used.append(inventory_ref)
    # one line for cards and plans (a list of one, so it renders up to the list width, not the short text width)
    fact.values["bad_day_text"] = [", ".join(substitutes) if substitutes else
                                   "none recorded yet: agree lower-demand activities for bad days with the patient"]

    fact.values["state"] = state
    fact.values["state_text"] = STATE_TEXT[state]
    fact.values["present"] = True
    fact.provenance = sorted(set(activity_refs) | set(pain_refs) | set(used))
    return fact


def _ceiling(definition, data) -> tuple[float | None, str | None]:
    """The patient's own ceiling for a measure: the lowest upper limit (detailRange.high, or detailQuantity) of an
    active or accepted Goal whose target measures it. None when no clinician has set one: no default applies."""
    best, ref = None, None
    for goal in data.of_type("Goal"):
        if goal.get("lifecycleStatus") not in ("active", "accepted"):
            continue
        for t in goal.get("target") or []:
            if not isinstance(t, dict) or not definition.matches(t.get("measure")):
                continue
            q = (t.get("detailRange") or {}).get("high") or t.get("detailQuantity")
            if not isinstance(q, dict) or not isinstance(q.get("value"), (int, float)):
                continue
            value = definition.to_unit(float(q["value"]), q.get("code") or q.get("unit"))
            if value is not None and (best is None or value < best):
                best, ref = value, _ref(goal)
    return best, ref


def _intensity(fact, definition, prefix, data, now, used) -> None:
    """Days of the last 7 with a reading, the highest, and the days above the patient's ceiling."""
    values, refs = _daily_values(definition, data, now, fact)
    week = [values[d] for d in range(0, 7) if d in values]  # today counts: a reading above the ceiling is news
    ceiling, ref = _ceiling(definition, data)
    fact.values[f"{prefix}_days"] = len(week)
    if week:
        fact.values[f"{prefix}_highest"] = round(max(week))
    if ceiling is None:
        return
    fact.values[f"{prefix}_ceiling"] = round(ceiling)
    if week:
        fact.values[f"{prefix}_over_days"] = sum(1 for v in week if v > ceiling)
        used.extend(refs)
    used.append(ref)


INVENTORY_QUESTIONNAIRE = "https://pacecds.org/fhir/Questionnaire/activity-inventory"
INVENTORY_DEMAND_SYSTEM = "https://pacecds.org/fhir/CodeSystem/activity-demand"
QR_OK = {"completed", "amended"}


def bad_day_activities(data, now: dt.datetime, max_age_days: float) -> tuple[list[str], str | None]:
    """The low-demand activities of the patient's latest activity inventory, and the inventory's reference.

    The inventory is a QuestionnaireResponse to the pacecds questionnaire INVENTORY_QUESTIONNAIRE (a documented
    local choice: no standard activity inventory was found): repeating groups `activity`, each with `name`
    (valueString) and `demand` (valueCoding low | moderate | high in INVENTORY_DEMAND_SYSTEM). The low-demand
    ones are the bad-day substitutes."""
    latest, when_latest = None, None
    for qr in data.of_type("QuestionnaireResponse"):
        if qr.get("status") not in QR_OK or str(qr.get("questionnaire") or "").split("|")[0] != INVENTORY_QUESTIONNAIRE:
            continue
        when = parse_time(qr.get("authored"))
        if when is None or when > now or (now - when).days > max_age_days:
            continue
        if when_latest is None or when > when_latest:
            latest, when_latest = qr, when
    if latest is None:
        return [], None
    names = []
    for group in latest.get("item") or []:
        if not isinstance(group, dict) or group.get("linkId") != "activity":
            continue
        answers = {i.get("linkId"): (i.get("answer") or [{}])[0] for i in group.get("item") or [] if isinstance(i, dict)}
        name = (answers.get("name") or {}).get("valueString")
        demand = (answers.get("demand") or {}).get("valueCoding") or {}
        if name and demand.get("system") == INVENTORY_DEMAND_SYSTEM and demand.get("code") == "low":
            names.append(name)
    return names[:5], _ref(latest)


def _set_levels(fact, typical: float, p: dict, step: int) -> None:
    """The usual level and every target derived from its quota, rounded to the activity's step."""
    quota = round_to(typical * p["quota_fraction"], step)
    fact.values.update(
        typical=round_to(typical, step), quota=quota,
        step_up=round_to(typical * (1 + p["step_up_fraction"]), step),
        step_size=max(step, round_to(typical * p["step_up_fraction"], step) or 0),
        flare_floor=round_to(quota * p["flare_floor_fraction"], step))


def _activity_fall(fact, meds_def, data, now, activity, p, step, used) -> None:
    """The largest fall in activity in the 14 days after a medication of the class fact was started, against
    the 14 days before, when at least fall_min_days are recorded on each side and the fall is fall_percent or
    more. Only drugs started between fall_min_days and fall_max_start_days ago are looked at."""
    best = None
    for resource, concept in active_medications(data, "active"):
        if concept is None or not meds_def.matches(concept):
            continue
        start = _start_days_ago(resource, now)
        if start is None or start < p["fall_min_days"] or start > p["fall_max_start_days"]:
            continue
        before = [activity[d] for d in range(start + 1, start + 15) if d in activity]
        after = [activity[d] for d in range(max(1, start - 13), start + 1) if d in activity]
        if len(before) < p["fall_min_days"] or len(after) < p["fall_min_days"]:
            continue
        b, a = _mean(before), _mean(after)
        if b <= 0:
            continue
        fall = (b - a) / b * 100
        if fall >= p["fall_percent"] and (best is None or fall > best[0]):
            best = (fall, b, a, resource, concept, start)
    if best is None:
        return
    fall, b, a, resource, concept, start = best
    when = (now - dt.timedelta(days=start)).date().isoformat()
    fact.values.update(fall_percent=round_to(fall, 5), fall_before=round_to(b, step), fall_after=round_to(a, step),
                       fall_drug=_codeable_name(concept), fall_drug_start=when, fall_drug_days_ago=start)
    used.append(_ref(resource))
