"""Named facts from FHIR resources.

A FactDefinition (written by clinicians in rules/facts/*.yaml) says which resources a fact
reads, which codes, its unit and how to aggregate. derive_facts() turns pooled, validated
resources into plain Fact values with their provenance. Rules never see FHIR.

Data-quality policy applied here, once, for every fact: entered-in-error, cancelled,
stopped, inactive and refuted data are ignored; data dated after "now" is ignored;
values are converted to the fact's unit before anything compares them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from . import ucum
from .codes import codeable_name as _codeable_name
from .pooling import PatientData
from .valuesets import MEMO_MAX_CHARS, ValueSet, code_key

OBSERVATION_OK = {"final", "amended", "corrected"}
CONDITION_ACTIVE = {"active", "recurrence", "relapse"}
CONDITION_BAD_VERIFICATION = {"entered-in-error", "refuted"}
MED_REQUEST_ACTIVE = {"active"}
MED_STATEMENT_ACTIVE = {"active", "intended"}
GOAL_OPEN = {"proposed", "planned", "accepted", "active", "on-hold"}

# attributes each kind of fact offers to rules (the loader checks rule references against these)
KIND_ATTRIBUTES = {
    "observation": {"value": "unit", "age_days": "d", "count": "1", "mean": "unit", "min": "unit", "max": "unit",
                    "ref_low": "unit", "ref_high": "unit", "present": None},
    "daily_series": {"days_recorded": "1", "mean_3d": "unit", "mean_7d": "unit", "prev_mean_7d": "unit",
                     "mean_14d": "unit", "cv_14d": "1", "slope_14d": "unit/d", "last_value": "unit",
                     "age_days": "d", "present": None},
    "condition": {"present": None, "count": "1", "codes": None, "names": None},
    # a coded record (Condition, Observation, Procedure, ServiceRequest) dated within the look-back
    "record": {"present": None, "count": "1", "codes": None, "names": None, "name": None, "age_days": "d"},
    "medication": {"present": None, "count": "1", "codes": None, "names": None, "name": None},
    "patient": {"value": None, "present": None},
    # open goals the fact's codes recognise (category, description or target measure); days_since_review is the
    # goal reviewed longest ago; unsmart_count: goals without a measurable target (measure and amount) or due date
    "goal": {"present": None, "count": "1", "days_since_review": "d", "unsmart_count": "1", "unsmart_text": None},
    # active medications across several classes (value sets): how many classes, how many distinct drugs
    "medication_classes": {"present": None, "class_count": "1", "drug_count": "1", "classes": None,
                           "names": None, "name": None, "codes": None},
    # total daily morphine milligram equivalents of the active opioids, with the per-drug arithmetic
    "opioid_mme": {"present": None, "total": "unit", "opioid_count": "1", "computed_count": "1",
                   "uncomputed_count": "1", "lines": None, "uncomputed": None, "names": None, "codes": None},
    # two daily series: the symptom on the day after an above-average activity day vs after the other days
    "series_pair": {"present": None, "difference": "unit", "mean_after_high": "unit", "mean_after_low": "unit",
                    "pairs_high": "1", "pairs_low": "1"},
    # the patient's pacing state and targets from their own activity and pain series (fhir_adapter.pacing);
    # numbers are in the patient's own activity unit (steps or minutes a day), named by `activity`
    "pacing": {"present": None, "state": None, "state_text": None, "activity": None, "activity_unit": None,
               "days_recorded": "1", "pain_days": "1", "typical": "1", "quota": "1", "step_up": "1",
               "step_size": "1", "flare_floor": "1", "pre_flare_quota": "1", "rebuild_from": "1",
               "rebuild_step": "1", "latest_activity": "1", "low_day": "1", "high_day": "1",
               "mean_7d": "1", "prev_mean_7d": "1", "pain_latest": "1", "pain_usual": "1",
               "pain_after_busy": "1", "pain_after_quiet": "1", "pain_rise_after_busy": "1", "swing": "1",
               "flare_onset_days_ago": "1", "flare_peak_days_ago": "1", "flare_peak_pain": "1", "flare_days": "1",
               "flares_90d": "1", "settled_flares_90d": "1", "days_to_settle": "1", "last_settled_days_ago": "1",
               "goal_target": "1", "fall_percent": "1", "fall_before": "1", "fall_after": "1",
               "fall_drug": None, "fall_drug_start": None, "fall_drug_days_ago": "1", "flare_severity": None,
               "measure_code": None, "measure_display": None, "target_ucum": None,
               "bout_active": "1", "bout_rest_min": "1", "bout_rest_max": "1", "pain_mean_7d": "1",
               "pain_prev_mean_7d": "1", "flare_history": None, "bad_day_activities": None, "bad_day_text": None,
               "hr_ceiling": "1", "hr_days": "1", "hr_over_days": "1",
               "hr_highest": "1", "rpe_ceiling": "1", "rpe_days": "1", "rpe_over_days": "1", "rpe_highest": "1",
               # the latest step up: from a pacing Goal's raised target (source goal, with its date) or seen in
               # the activity (source activity); pain before and since it; the level to go back to
               "step_up_source": None, "step_up_date": None, "step_up_days_ago": "1", "step_up_from": "1",
               "step_up_to": "1", "pain_before_step_up": "1", "pain_since_step_up": "1", "pain_since_days": "1",
               "back_to": "1", "hr_resting": "1", "hr_resting_days": "1"},
}
DEFAULT_ATTRIBUTE = {"observation": "value", "daily_series": "mean_7d", "condition": "present",
                     "medication": "present", "patient": "value", "goal": "present", "record": "present",
                     "medication_classes": "class_count", "opioid_mme": "total", "series_pair": "difference",
                     "pacing": "state"}
# attributes that are lists or text rather than numbers (for card templates)
LIST_ATTRIBUTES = {"names", "codes", "classes", "lines", "uncomputed", "flare_history", "bad_day_activities",
                   "bad_day_text"}
TEXT_ATTRIBUTES = {"name", "state", "state_text", "activity", "activity_unit", "fall_drug", "fall_drug_start",
                   "unsmart_text", "flare_severity", "measure_code", "measure_display", "target_ucum",
                   "step_up_source", "step_up_date"}


@dataclass(frozen=True)
class FactDefinition:
    name: str
    kind: str  # observation | daily_series | condition | medication | patient | goal
    title: str
    codes: frozenset = frozenset()  # (system, code) pairs
    valueset: ValueSet | None = None
    unit: str | None = None
    conversions: tuple = ()  # ((unit, factor to fact unit), ...) for non-dimensional conversions
    window_days: int | None = None  # only data this recent counts
    daily: str = "sum"  # daily_series: how several readings in one day combine (sum | mean | last)
    field: str | None = None  # patient: gender | age
    scope: str = "active"  # medication: active (the patient's list) | draft (orders being placed)
    allow_preliminary: bool = False
    classes: tuple = ()  # medication_classes: ((label, ValueSet), ...)
    # opioid_mme: {rxcui: row} from rules/drugs (ingredient, strength, unit, route) and the MME factor table
    drug_table: dict | None = dataclasses.field(default=None, hash=False, compare=False)
    factor_table: dict | None = dataclasses.field(default=None, hash=False, compare=False)
    inputs: tuple = ()  # series_pair: (activity FactDefinition, symptom FactDefinition)
    daily_by_code: tuple = ()  # daily_series: ((code, sum|mean|last), ...) overriding `daily` for that code
    questionnaire_items: bool = False  # observation: also read QuestionnaireResponse items named by the code
    roles: tuple = ()  # pacing: the role of each of `inputs` (activity, minutes, symptom, goal, medications)
    parameters: tuple = ()  # pacing: ((name, value), ...) from the fact's `parameters` (each with its source)
    on_record: bool = False  # medication: any order, statement or dispense in the look-back counts (window_days)
    # a score on a fixed scale: (min, max, codes whose definition fixes it); see _scale_problem
    scale: tuple | None = None

    @property
    def resource_types(self) -> set[str]:
        medication = {"MedicationRequest", "MedicationStatement", "MedicationDispense", "Medication"}
        return {
            "observation": {"Observation", "QuestionnaireResponse"} if self.questionnaire_items else {"Observation"},
            "daily_series": {"Observation"},
            "condition": {"Condition"},
            "record": {"Condition", "Observation", "Procedure", "ServiceRequest"},
            "medication": medication,
            "patient": {"Patient"},
            "goal": {"Goal"},
            "medication_classes": medication,
            "opioid_mme": medication,
            "series_pair": {"Observation"},
            "pacing": {"Observation", "Goal", "QuestionnaireResponse"} | medication,
        }[self.kind]

    @cached_property
    def match_keys(self) -> frozenset:
        """Every normalised (system, code) this fact reads: its own codes and its value set's."""
        return self.codes | self.valueset.codes if self.valueset is not None else self.codes

    def matches(self, codeable: dict | None) -> bool:
        return not self.match_keys.isdisjoint(coding_keys(codeable))

    def to_unit(self, value: float, unit: str | None) -> float | None:
        """Value converted to this fact's unit, or None when the unit cannot be converted."""
        factor = self.unit_factor(unit)
        return None if factor is None else value * factor

    def unit_factor(self, unit: str | None) -> float | None:
        """What a value in `unit` is multiplied by to be in this fact's unit; None when it does not convert."""
        if self.unit is None:
            return 1.0
        unit = unit if unit is not None else ""
        for alias, factor in self.conversions:
            if unit == alias:
                return factor
        try:
            return ucum.conversion_factor(unit, self.unit)
        except ucum.UnitError:
            return None


@dataclass
class Fact:
    name: str
    values: dict = field(default_factory=dict)  # attribute -> value
    unit: str | None = None
    provenance: list = field(default_factory=list)  # "Type/id" of the resources used
    notes: list = field(default_factory=list)  # data-quality notes (e.g. a value in an unknown unit)

    @property
    def present(self) -> bool:
        return bool(self.values.get("present"))


# -- time ---------------------------------------------------------------------------------

def parse_time(value) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return _parse_time(value)


def _parse_time(value: str) -> dt.datetime | None:
    return _parse_time_memo(value) if len(value) <= 64 else _parse_time_memo.__wrapped__(value)


@lru_cache(maxsize=65_536)  # a reopened chart repeats its timestamps; datetimes are immutable
def _parse_time_memo(value: str) -> dt.datetime | None:
    try:
        if len(value) == 4:
            parsed = dt.datetime(int(value), 1, 1)
        elif len(value) == 7:
            parsed = dt.datetime(int(value[:4]), int(value[5:7]), 1)
        else:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed


def _observation_time(obs: dict) -> dt.datetime | None:
    period = obs.get("effectivePeriod") or {}
    return (
        parse_time(obs.get("effectiveDateTime"))
        or parse_time(obs.get("effectiveInstant"))
        or parse_time(period.get("end"))
        or parse_time(period.get("start"))
        or parse_time(obs.get("issued"))
    )


def _ref(resource: dict) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id', '?')}"


# -- observations -------------------------------------------------------------------------

def _readings(data: PatientData) -> tuple[list, dict[tuple, list[int]]]:
    """The time of each Observation in the pool (by position), and an index: normalised code -> the
    positions of the Observations about this patient that carry it.

    Several facts read the same Observations (the steps series feeds three facts), and a chart holds
    hundreds of them; the subject check, the codes and the time are the same for every fact, and for
    every evaluation of the same validated chart (data.chart: content-addressed, see ResourceValidator)."""
    def compute():
        times, index = [], {}
        by_code: dict[tuple, list[int]] = {}  # (system, code) as sent, for the usual single coding
        for i, obs in enumerate(data.of_type("Observation")):
            when = obs.get("effectiveDateTime")
            times.append(_parse_time(when) if type(when) is str and when else _observation_time(obs))
            codings = (obs.get("code") or {}).get("coding") or ()
            if len(codings) == 1 and type(codings[0].get("system")) is str and type(codings[0].get("code")) is str:
                by_code.setdefault((codings[0]["system"], codings[0]["code"]), []).append(i)  # normalised below
            else:
                for key in coding_keys(obs.get("code")):
                    if _short_key(key):
                        index.setdefault(key, []).append(i)
        for (system, code), positions in by_code.items():  # normalised once per distinct code
            for key in coding_keys({"coding": [{"system": system, "code": code}]}):
                if _short_key(key):
                    index.setdefault(key, []).extend(positions)
        return times, index
    return _per_chart(data, ("readings",), compute)


def _short_key(key: tuple[str, str]) -> bool:
    """Index keys are kept with the chart: a code longer than any fact's (MEMO_MAX_CHARS) is no fact's code,
    so it is left out rather than kept for as long as the chart is remembered."""
    return len(key[0]) + len(key[1]) <= MEMO_MAX_CHARS


def _per_evaluation(data: PatientData, key, compute):
    """compute() once per evaluation, kept in data.memo; recomputed if the pool was replaced since."""
    entry = data.memo.get(key)
    if entry is None or entry[0] is not data.by_type:
        entry = data.memo[key] = (data.by_type, compute())
    return entry[1]


def _per_chart(data: PatientData, key, compute):
    """compute() once per validated chart content (a reopened chart reuses it), else once per evaluation.

    Only for results that depend on nothing but the pool's resources, their order and the key (never on
    "now"), and that are not changed after: they are shared by every evaluation of the same chart."""
    if data.chart is None or data.chart_pool is not data.by_type:
        return _per_evaluation(data, key, compute)
    found = data.chart.get(key)
    if found is None:
        # bounded: a few fixed keys per chart (the chart holds only this patient's resources: identity is
        # decided when they are pooled, so no key needs to name the patient)
        if len(data.chart) >= PER_CHART_MAX:
            return _per_evaluation(data, key, compute)
        found = data.chart[key] = compute()
    return found


PER_CHART_MAX = 8  # results kept per chart content (docs/caches.md)


def _observation_values(definition: FactDefinition, data: PatientData, now: dt.datetime, fact: Fact,
                        since: dt.datetime | None = None):
    """(time, value in fact unit, resource) for usable observations (none before `since`), oldest first."""
    allowed = OBSERVATION_OK | ({"preliminary"} if definition.allow_preliminary else set())
    times, index = _readings(data)
    observations = data.of_type("Observation")
    wanted = definition.match_keys
    if len(index) <= len(wanted):
        positions = {i for key, found in index.items() if key in wanted for i in found}
    else:
        positions = {i for key in wanted for i in index.get(key, ())}
    rows = []
    # (now - when).days > window_days, as one comparison: older than window_days + 1 whole days
    too_old = now - dt.timedelta(days=definition.window_days + 1) if definition.window_days is not None else None
    factors: dict = {}  # unit as sent -> factor to the fact's unit (a chart uses one or two units per code)
    skipped: dict[str, list[str]] = {}  # why a reading is off its scale -> the readings (one note per reason)
    for i in sorted(positions):  # pool order, as a scan of the pool would give
        obs, when = observations[i], times[i]
        if when is None or when > now or obs.get("status") not in allowed:
            continue
        if (too_old is not None and when <= too_old) or (since is not None and when < since):
            continue
        quantity = obs.get("valueQuantity")
        if quantity is not None and quantity.get("value") is not None:
            unit = quantity.get("code") or quantity.get("unit")
            factor = factors[unit] if unit in factors else factors.setdefault(unit, definition.unit_factor(unit))
            if factor is None:
                fact.notes.append(f"{_ref(obs)}: unit '{unit}' does not convert to {definition.unit}; value not used")
                continue
            value = float(quantity["value"]) * factor
        elif obs.get("valueInteger") is not None:
            value = float(obs["valueInteger"])
        elif (ordinal := _ordinal_value(obs.get("valueCodeableConcept"))) is not None:
            value = ordinal  # a coded answer that carries its score (questionnaire items such as PHQ-9 item 9)
        else:
            if definition.scale is not None:
                skipped.setdefault(SCALE_NOT_A_NUMBER, []).append(_ref(obs))
            continue
        if definition.scale is not None:
            problem = _scale_problem(definition, obs, value, coded=quantity is None and "valueInteger" not in obs)
            if problem is not None:
                skipped.setdefault(problem, []).append(_ref(obs))
                continue
        rows.append((when, value, obs))
    for reason, refs in skipped.items():
        more = f" and {len(refs) - 3} more" if len(refs) > 3 else ""
        fact.notes.append(f"{definition.name}: {len(refs)} reading{'s' if len(refs) > 1 else ''} not used, "
                          f"{reason}: {', '.join(refs[:3])}{more}")
    if definition.questionnaire_items:
        rows.extend(_questionnaire_values(definition, data, now, fact))
    rows.sort(key=lambda r: r[0])
    return rows


SCALE_NOT_A_NUMBER = "not a number on the scale (a coded or text answer without a score)"


def _scale_problem(definition: FactDefinition, obs: dict, value: float, coded: bool) -> str | None:
    """Why a reading cannot be read on the fact's fixed scale, or None when it can.

    A code that fixes the scale (the 0-10 NRS, 72514-3) is enough; another code (38208-5 "Pain severity -
    Reported" fixes none, clinical review item 11) counts only as a number that states the scale itself: a
    referenceRange from the scale's min to its max. A coded answer needs a scale-fixing code."""
    low, high, fixed_by = definition.scale
    fixed = any(isinstance(c, dict) and c.get("code") in fixed_by
                and not definition.match_keys.isdisjoint(coding_keys({"coding": [c]}))
                for c in (obs.get("code") or {}).get("coding") or ())
    scale = f"{low:g}-{high:g}"
    if coded and not fixed:
        return f"a coded answer under a code that fixes no {scale} scale"
    if not low <= value <= high:
        return f"outside the {scale} scale"
    if fixed:
        return None
    for rng in obs.get("referenceRange") or ():
        lo, hi = (rng.get("low") or {}).get("value"), (rng.get("high") or {}).get("value")
        if is_number(lo) and is_number(hi) and (lo, hi) == (low, high):  # 0 == 0.0 in Python
            return None
    return f"its code fixes no {scale} scale and none is stated (referenceRange {scale})"


QR_OK = {"completed", "amended"}


def _questionnaire_values(definition, data, now, fact):
    """(time, value, resource) from QuestionnaireResponse items whose linkId is one of the fact's codes.

    LOINC-coded questionnaires (LOINC forms, LHC-Forms) name each item by its LOINC code ("44261-6" or
    "/44261-6"); that is the only match made. The answer must be a number, a quantity that converts to the
    fact's unit, or a coded answer carrying its score in the ordinalValue extension."""
    wanted = {code for _, code in definition.codes}
    rows = []
    for qr in data.of_type("QuestionnaireResponse"):
        if qr.get("status") not in QR_OK:
            continue
        when = parse_time(qr.get("authored"))
        if when is None or when > now:
            continue
        if definition.window_days is not None and (now - when).days > definition.window_days:
            continue
        stack = list(qr.get("item") or [])
        while stack:
            item = stack.pop()
            stack.extend(item.get("item") or [])
            for answer in item.get("answer") or []:
                stack.extend(answer.get("item") or [])
            link = str(item.get("linkId") or "").rsplit("/", 1)[-1]
            if link not in wanted or not item.get("answer"):
                continue
            answer = item["answer"][0]
            value = None
            if is_number(answer.get("valueInteger")) or is_number(answer.get("valueDecimal")):
                value = float(answer.get("valueInteger", answer.get("valueDecimal")))
            elif isinstance(answer.get("valueQuantity"), dict) and is_number(answer["valueQuantity"].get("value")):
                q = answer["valueQuantity"]
                value = definition.to_unit(float(q["value"]), q.get("code") or q.get("unit"))
            elif isinstance(answer.get("valueCoding"), dict):
                value = _ordinal_value({"coding": [answer["valueCoding"]]})
            if value is None:
                fact.notes.append(f"{_ref(qr)}: item {item.get('linkId')} has no usable score; not used")
                continue
            rows.append((when, value, qr))
    return rows


ORDINAL_EXTENSIONS = ("http://hl7.org/fhir/StructureDefinition/ordinalValue",  # FHIR R4
                      "http://hl7.org/fhir/StructureDefinition/itemWeight")  # its R5 name


def _ordinal_value(codeable: dict | None) -> float | None:
    """The score a coded answer carries in the standard ordinalValue (itemWeight) extension, if any.

    Only the extension is used, never a guess from the code or its text: an answer without a score gives no value."""
    for coding in (codeable or {}).get("coding") or []:
        for ext in coding.get("extension") or []:
            if ext.get("url") in ORDINAL_EXTENSIONS and is_number(ext.get("valueDecimal")):
                return float(ext["valueDecimal"])
    return None


def _reference_range(obs: dict, definition: FactDefinition) -> dict:
    out = {}
    for rng in obs.get("referenceRange") or []:
        for bound, attr in (("low", "ref_low"), ("high", "ref_high")):
            q = rng.get(bound)
            if q and q.get("value") is not None:
                v = definition.to_unit(float(q["value"]), q.get("code") or q.get("unit"))
                if v is not None:
                    out[attr] = v
        if out:
            break
    return out


def _derive_observation(definition, data, now) -> Fact:
    fact = Fact(definition.name, unit=definition.unit)
    rows = _observation_values(definition, data, now, fact)
    if not rows:
        fact.values["present"] = False
        return fact
    when, value, obs = rows[-1]
    values = [r[1] for r in rows]
    fact.values.update(
        present=True, value=value, age_days=(now - when).total_seconds() / 86400.0, count=len(rows),
        mean=statistics.fmean(values), min=min(values), max=max(values), **_reference_range(obs, definition),
    )
    fact.provenance = [_ref(r[2]) for r in rows]
    return fact


def _daily_values(definition, data, now, fact, days: int | None = None) -> tuple[dict[int, float], list[str]]:
    """Days ago (0 = today, up to SERIES_DAYS - 1) -> the day's value, and the resources used. Missing days stay missing.

    Computed once per evaluation: a daily series fact and a series_pair reading it share the result."""
    def compute():
        scratch = Fact(definition.name)
        daily, used = _compute_daily_values(definition, data, now, scratch, days or SERIES_DAYS)
        return daily, used, scratch.notes
    key = ("daily_values", definition.name, now) + ((days,) if days else ())
    daily, used, notes = _per_evaluation(data, key, compute)
    fact.notes.extend(notes)
    return dict(daily), list(used)


SERIES_DAYS = 28  # a daily series holds today and the 27 days before (windows end yesterday)


def _compute_daily_values(definition, data, now, fact, series_days: int = SERIES_DAYS):
    # a reading from before the series' days is never used (nor noted): 2 days' margin for time zones
    rows = _observation_values(definition, data, now, fact, since=now - dt.timedelta(days=series_days + 2))
    today = now.date().toordinal()
    by_code = dict(definition.daily_by_code)
    per_day: dict[int, dict[str, list[float]]] = {}  # days ago -> combine mode -> readings
    used = []
    for when, value, obs in rows:
        ago = today - _utc_day(when)
        if ago < series_days:
            mode = definition.daily
            if by_code:
                mode = next((by_code[c["code"]] for c in (obs.get("code") or {}).get("coding") or []
                             if c.get("code") in by_code), mode)
            per_day.setdefault(ago, {}).setdefault(mode, []).append(value)
            used.append(_ref(obs))
    combine = {"sum": sum, "mean": statistics.fmean, "last": lambda v: v[-1], "max": max}
    # a day's total ('last') wins over partial counts ('sum') of the same day: nothing is counted twice
    return {ago: next(combine[m](modes[m]) for m in ("last", "max", "mean", "sum") if m in modes)
            for ago, modes in per_day.items()}, used


@lru_cache(maxsize=65_536)  # the times of a chart repeat (parse_time gives the same objects)
def _utc_day(when: dt.datetime) -> int:
    """The UTC calendar day of a time, as a proleptic Gregorian ordinal."""
    return when.astimezone(dt.timezone.utc).toordinal()


def _derive_daily_series(definition, data, now) -> Fact:
    fact = Fact(definition.name, unit=definition.unit)
    # day 0 is today, often incomplete: windows end yesterday so a partial day never reads as a drop
    daily, used = _daily_values(definition, data, now, fact)

    def window(start, length):
        return [daily[d] for d in range(start, start + length) if d in daily]

    last14 = window(1, 14)
    fact.values["days_recorded"] = len(last14)
    fact.values["present"] = bool(daily)
    if not daily:
        return fact
    latest_day = min(daily)
    fact.values["last_value"] = daily[latest_day]
    fact.values["age_days"] = latest_day
    for attr, (start, length, minimum) in {
        "mean_3d": (1, 3, 2), "mean_7d": (1, 7, 4), "prev_mean_7d": (8, 7, 4), "mean_14d": (1, 14, 7),
    }.items():
        vals = window(start, length)
        if len(vals) >= minimum:  # too few days give no mean rather than a misleading one
            fact.values[attr] = statistics.fmean(vals)
    if len(last14) >= 7:
        mean = statistics.fmean(last14)
        if mean > 0:
            # math.fsum, not statistics.pstdev: the same value to the last bit or two, without pstdev's
            # exact fraction arithmetic (a tenth of a warm evaluation's facts)
            spread = math.sqrt(math.fsum((v - mean) ** 2 for v in last14) / len(last14))
            fact.values["cv_14d"] = spread / mean
        xs = [-d for d in range(1, 15) if d in daily]
        ys = [daily[-x] for x in xs]
        fact.values["slope_14d"] = _slope(xs, ys)
    fact.provenance = used
    return fact


def _slope(xs, ys) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den


# -- conditions, medications, goals, patient ---------------------------------------------

def _status_code(codeable: dict | None) -> str | None:
    for coding in (codeable or {}).get("coding") or []:
        if coding.get("code"):
            return coding["code"]
    return None


def coding_keys(codeable: dict | None) -> frozenset:
    """The normalised (system, code) of every coding of a CodeableConcept."""
    codings = (codeable or {}).get("coding") or ()
    if len(codings) == 1:  # the usual case: one memoised set per code
        system, code = codings[0].get("system"), codings[0].get("code")
        if type(system) is str and type(code) is str and len(system) + len(code) <= MEMO_MAX_CHARS:
            return _one_key(system, code)
    keys = {code_key(c.get("system"), c.get("code")) for c in codings}
    keys.discard(None)
    return frozenset(keys)


@lru_cache(maxsize=16_384)  # keys of at most MEMO_MAX_CHARS: 7.8 MB worst case, measured (docs/caches.md)
def _one_key(system: str, code: str) -> frozenset:
    key = code_key(system, code)
    return frozenset() if key is None else frozenset((key,))


def _codes(codeable: dict | None) -> list[str]:
    return [f"{c.get('system')}|{c.get('code')}" for c in (codeable or {}).get("coding") or [] if c.get("code")]


def _derive_condition(definition, data, now) -> Fact:
    fact = Fact(definition.name)
    hits = []
    for cond in data.of_type("Condition"):
        if _status_code(cond.get("clinicalStatus")) not in CONDITION_ACTIVE:
            continue
        if _status_code(cond.get("verificationStatus")) in CONDITION_BAD_VERIFICATION:
            continue
        if not definition.matches(cond.get("code")):
            continue
        hits.append(cond)
    fact.values.update(present=bool(hits), count=len(hits))
    if hits:
        fact.values["codes"] = [c for h in hits for c in _codes(h.get("code"))]
        fact.values["names"] = [_codeable_name(h.get("code")) for h in hits]
    fact.provenance = [_ref(h) for h in hits]
    return fact


RECORD_STATUS_BAD = {"entered-in-error", "cancelled", "revoked", "not-done", "stopped", "draft", "unknown"}


def _record_time(r: dict) -> dt.datetime | None:
    """When a coded record happened: performed, occurred, authored, effective, onset or recorded."""
    for key in ("performedDateTime", "occurrenceDateTime", "effectiveDateTime", "onsetDateTime"):
        if (when := parse_time(r.get(key))) is not None:
            return when
    for key in ("performedPeriod", "occurrencePeriod", "effectivePeriod", "onsetPeriod"):
        period = r.get(key) or {}
        if (when := parse_time(period.get("end")) or parse_time(period.get("start"))) is not None:
            return when
    return (parse_time(r.get("authoredOn")) or parse_time(r.get("recordedDate")) or parse_time(r.get("issued")))


def _derive_record(definition, data, now) -> Fact:
    """Coded records of any of the fact's resource types dated within the look-back (window_days).

    Entered-in-error, cancelled, revoked, not-done, stopped and draft records never count; a Condition must be
    clinically active (or recurrence/relapse) and not refuted; an Observation must be final, amended or
    corrected. A record with no date is left out and named in the
    notes (its age cannot be told); so is one older than the look-back."""
    fact = Fact(definition.name, unit="d")
    start = now - dt.timedelta(days=definition.window_days) if definition.window_days else None
    hits = []
    for rtype in ("Condition", "Observation", "Procedure", "ServiceRequest"):
        for r in data.of_type(rtype):
            codeable = r.get("code")
            if not definition.matches(codeable):
                continue
            if rtype == "Condition":
                if _status_code(r.get("clinicalStatus")) not in CONDITION_ACTIVE or \
                        _status_code(r.get("verificationStatus")) in CONDITION_BAD_VERIFICATION:
                    continue
            elif rtype == "Observation":
                if r.get("status") not in OBSERVATION_OK:
                    continue
            elif r.get("status") in RECORD_STATUS_BAD:
                continue
            when = _record_time(r)
            name = _codeable_name(codeable)
            if when is None:
                if rtype == "Condition":  # an active condition with no date is active now
                    hits.append((r, codeable, now))
                else:
                    fact.notes.append(f"{definition.name}: {_ref(r)} ({name}) has no date; not used")
                continue
            if when > now and rtype != "ServiceRequest":
                continue
            if start is not None and when < start and rtype != "Condition":
                fact.notes.append(f"{definition.name}: {_ref(r)} ({name}) dated {_day_text(when)}, older than the "
                                  f"{definition.window_days}-day look-back; not used")
                continue
            hits.append((r, codeable, when))
    fact.values.update(present=bool(hits), count=len(hits))
    if hits:
        fact.values["codes"] = [c for _, codeable, _ in hits for c in _codes(codeable)]
        fact.values["names"] = [_codeable_name(codeable) for _, codeable, _ in hits]
        fact.values["name"] = fact.values["names"][0]
        fact.values["age_days"] = max(0.0, min((now - when).total_seconds() / 86400.0 for _, _, when in hits))
    fact.provenance = [_ref(r) for r, _, _ in hits]
    return fact


def medication_concept(resource: dict, data: PatientData) -> dict | None:
    """The medication CodeableConcept of a MedicationRequest/Statement (inline or referenced)."""
    if resource.get("medicationCodeableConcept"):
        return resource["medicationCodeableConcept"]
    ref = (resource.get("medicationReference") or {}).get("reference")
    if not ref:
        return None
    if ref.startswith("#"):
        for contained in resource.get("contained") or []:
            if contained.get("resourceType") == "Medication" and contained.get("id") == ref[1:]:
                return contained.get("code")
        return None
    med_id = ref.split("/")[-1]
    for med in data.of_type("Medication"):
        if med.get("id") == med_id:
            return med.get("code")
    return None


MED_DISPENSE_OK = {"completed", "in-progress"}


def _request_time(r: dict) -> dt.datetime | None:
    return parse_time(r.get("authoredOn"))


def _statement_time(r: dict) -> dt.datetime | None:
    """The latest time a MedicationStatement speaks of: end of its period, else its time, else when asserted."""
    period = r.get("effectivePeriod") or {}
    return (parse_time(period.get("end")) or parse_time(r.get("effectiveDateTime")) or parse_time(period.get("start"))
            or parse_time(r.get("dateAsserted")))


def _dispense_time(r: dict) -> dt.datetime | None:
    return parse_time(r.get("whenHandedOver")) or parse_time(r.get("whenPrepared"))


def _days_supply(r: dict) -> float | None:
    q = r.get("daysSupply") or {}
    value, unit = q.get("value"), (q.get("code") or q.get("unit") or "d")
    if value is None or not is_number(value) or value <= 0:
        return None
    days = {"d": 1, "day": 1, "days": 1, "wk": 7, "mo": 30}.get(str(unit).strip().lower())
    return None if days is None else float(value) * days


def _day_text(when: dt.datetime) -> str:
    return when.date().isoformat()


def active_medications(data: PatientData, scope: str = "active", now: dt.datetime | None = None,
                       window_days: int | None = None, on_record: bool = False, notes: list | None = None):
    """(resource, medication concept) for every usable medication of the scope.

    active: the patient's current list; draft: the orders being placed (order-select/order-sign);
    all: both, i.e. the list as it would be once the orders are signed.

    With a look-back (`now` and `window_days`), an "active" record is not taken as proof of current use:
    a MedicationRequest counts when authored within the look-back (or when a MedicationDispense of the same
    drug is current), a MedicationStatement when its time is within it, and a MedicationDispense (completed)
    while its days' supply lasts. `on_record`: any usable order, statement or dispense dated within the
    look-back counts (for drugs kept at hand, such as naloxone). A record with no date at all is counted and
    named in `notes`; records left out as too old are named in `notes` too."""
    if scope == "all":
        yield from active_medications(data, "active", now, window_days, on_record, notes)
        yield from active_medications(data, "draft", now, window_days, on_record, notes)
        return
    if scope == "draft":
        sources = [r for r in data.draft_orders if r.get("resourceType") in ("MedicationRequest", "MedicationStatement")]
        for r in sources:
            if r.get("status") in ("draft", "active"):
                yield r, medication_concept(r, data)
        return
    requests = [r for r in data.of_type("MedicationRequest")
                if r.get("status") in MED_REQUEST_ACTIVE and r.get("intent") not in ("proposal", "plan")]
    statements = [r for r in data.of_type("MedicationStatement") if r.get("status") in MED_STATEMENT_ACTIVE]
    if now is None or window_days is None:  # no look-back: the record's status decides (v1 behaviour)
        for r in requests + statements:
            yield r, medication_concept(r, data)
        return
    notes = notes if notes is not None else []
    start = now - dt.timedelta(days=window_days)
    dispenses = [r for r in data.of_type("MedicationDispense") if r.get("status") in MED_DISPENSE_OK]
    current_dispensed: set[str] = set()
    dispense_rows = []
    for r in dispenses:
        concept = medication_concept(r, data)
        when = _dispense_time(r)
        name = _codeable_name(concept)
        if when is None:
            notes.append(f"{_ref(r)} ({name}): dispense with no date; not counted")
            continue
        if when > now:
            continue
        supply = _days_supply(r)
        if on_record:
            ok = when >= start
            why = f"dispensed {_day_text(when)}, before the {window_days}-day look-back"
        else:
            ok = supply is not None and when + dt.timedelta(days=supply) >= now
            why = (f"dispensed {_day_text(when)} with no days' supply; not counted as current use" if supply is None
                   else f"dispensed {_day_text(when)} for {supply:.0f} days, supply ran out "
                        f"{_day_text(when + dt.timedelta(days=supply))}; not counted as current use")
        if ok:
            current_dispensed.add(_drug_key(concept))
            dispense_rows.append((r, concept))
        else:
            notes.append(f"{_ref(r)} ({name}): {why}")
    for r, timing, kind in [(r, _request_time(r), "ordered") for r in requests] + \
                           [(r, _statement_time(r), "recorded") for r in statements]:
        concept = medication_concept(r, data)
        name = _codeable_name(concept)
        if timing is None:
            notes.append(f"{_ref(r)} ({name}): no date on the record; counted as current (cannot tell its age)")
            yield r, concept
        elif timing >= start and timing <= now:
            yield r, concept
        elif timing > now and kind == "recorded" and r.get("effectivePeriod"):
            yield r, concept  # a statement whose period runs past now is current
        elif timing < start and _drug_key(concept) in current_dispensed:
            notes.append(f"{_ref(r)} ({name}): {kind} {_day_text(timing)}, older than the {window_days}-day look-back, "
                         f"but a current dispense of the same drug keeps it current")
            yield r, concept
        elif timing < start:
            notes.append(f"{_ref(r)} ({name}): {kind} {_day_text(timing)}, older than the {window_days}-day look-back; "
                         f"not counted as current")
    yield from dispense_rows


@dataclass(slots=True)
class _Medication:
    resource: dict
    concept: dict | None
    keys: frozenset  # normalised codes of the concept
    drug: str  # one key per drug product (see _drug_key)


def _medications(data: PatientData, scope: str, now: dt.datetime | None = None, window_days: int | None = None,
                 on_record: bool = False) -> tuple[list[_Medication], list[str]]:
    """active_medications() with each drug's codes and product key, and the look-back notes, once per
    evaluation, scope and look-back (a ruleset has several medication facts, and a class fact asks once per class)."""
    def compute():
        notes: list[str] = []
        meds = [_Medication(r, concept, coding_keys(concept), _drug_key(concept))
                for r, concept in active_medications(data, scope, now, window_days, on_record, notes)]
        return meds, notes
    return _per_evaluation(data, ("medications", scope, now if window_days else None, window_days, on_record), compute)


def _medication_notes(fact: Fact, notes: list[str], wanted: frozenset, data: PatientData) -> None:
    """The look-back notes about records this fact would have read (named in explain's data notes)."""
    for note in notes:
        ref = note.split(" ", 1)[0]
        rtype, _, rid = ref.partition("/")
        for r in data.of_type(rtype):
            if r.get("id") == rid and not coding_keys(medication_concept(r, data)).isdisjoint(wanted):
                fact.notes.append(f"{fact.name}: {note}")
                break


def _derive_medication(definition, data, now) -> Fact:
    fact = Fact(definition.name)
    wanted = definition.match_keys
    meds, notes = _medications(data, definition.scope, now, definition.window_days, definition.on_record)
    _medication_notes(fact, notes, wanted, data)
    hits = [(m.resource, m.concept) for m in meds if not m.keys.isdisjoint(wanted)]
    fact.values.update(present=bool(hits), count=len(hits))
    if hits:
        fact.values["codes"] = [c for _, concept in hits for c in _codes(concept)]
        fact.values["names"] = [_codeable_name(concept) for _, concept in hits]
        fact.values["name"] = fact.values["names"][0]
    fact.provenance = [_ref(r) for r, _ in hits]
    return fact


def _drug_key(concept: dict | None) -> str:
    """One key per drug product: its RxNorm code when it has one, else its name (for de-duplication)."""
    for coding in (concept or {}).get("coding") or []:
        key = code_key(coding.get("system"), coding.get("code"))
        if key and key[0] == "http://www.nlm.nih.gov/research/umls/rxnorm":
            return f"rxnorm|{key[1]}"
    return f"name|{_codeable_name(concept).lower()}"


def _unique_medications(data: PatientData, definition: FactDefinition, wanted: frozenset, now: dt.datetime,
                        fact: Fact | None = None):
    """(resource, concept) of usable medications with a code in `wanted`, one per drug product.

    The same drug often appears twice (an order and a reconciled MedicationStatement); it is one drug, so it
    is counted once, preferring the MedicationRequest (it carries the prescriber's dosage)."""
    chosen: dict[str, tuple] = {}
    meds, notes = _medications(data, definition.scope, now, definition.window_days, definition.on_record)
    if fact is not None:
        _medication_notes(fact, notes, wanted, data)
    for med in meds:
        if med.keys.isdisjoint(wanted):
            continue
        if med.drug not in chosen or (chosen[med.drug][0].get("resourceType") != "MedicationRequest"
                                      and med.resource.get("resourceType") == "MedicationRequest"):
            chosen[med.drug] = (med.resource, med.concept)
    return list(chosen.values())


def _derive_medication_classes(definition, data, now) -> Fact:
    fact = Fact(definition.name)
    classes_found: list[str] = []
    drugs: dict[str, tuple] = {}
    for label, valueset in definition.classes:
        hits = _unique_medications(data, definition, valueset.codes, now, fact)
        if hits:
            classes_found.append(label)
            for resource, concept in hits:
                drugs.setdefault(_drug_key(concept), (resource, concept))
    fact.values.update(present=bool(drugs), class_count=len(classes_found), drug_count=len(drugs))
    if drugs:
        fact.values["classes"] = classes_found
        fact.values["names"] = [_codeable_name(c) for _, c in drugs.values()]
        fact.values["name"] = fact.values["names"][0]
        fact.values["codes"] = [code for _, c in drugs.values() for code in _codes(c)]
    fact.provenance = [_ref(r) for r, _ in drugs.values()]
    return fact


def _derive_opioid_mme(definition, data, now) -> Fact:
    from . import mme

    fact = Fact(definition.name, unit=definition.unit)
    opioids = _unique_medications(data, definition, definition.match_keys, now, fact)
    total, lines, uncomputed = 0.0, [], []
    for resource, concept in opioids:
        result = mme.daily_mme(resource, concept, definition.drug_table or {}, definition.factor_table or {})
        if result.mme is None:
            uncomputed.append(f"{result.name}: {result.reason}")
        else:
            total += result.mme
            lines.append(result.line)
    fact.values.update(present=bool(opioids), opioid_count=len(opioids), computed_count=len(lines),
                       uncomputed_count=len(uncomputed))
    if lines:  # a total only when at least one dose was computed; otherwise it is unknown, not zero
        fact.values["total"] = round(total, 1)
    if opioids:
        fact.values["names"] = [_codeable_name(c) for _, c in opioids]
        fact.values["codes"] = [code for _, c in opioids for code in _codes(c)]
    if lines:
        fact.values["lines"] = lines
    if uncomputed:
        fact.values["uncomputed"] = uncomputed
    fact.provenance = [_ref(r) for r, _ in opioids]
    return fact


def _derive_series_pair(definition, data, now) -> Fact:
    """Symptom on the day after an above-average activity day, minus the symptom after the other days.

    Activity days are the 14 complete days before yesterday's symptom (2..15 days ago, so the day after is
    within the last 14 days); "above average" means above the mean of those activity days. At least
    MIN_PAIRS pairs on each side are needed, otherwise the difference is missing rather than a guess."""
    activity_def, symptom_def = definition.inputs
    fact = Fact(definition.name, unit=symptom_def.unit)
    activity, used_a = _daily_values(activity_def, data, now, fact)
    symptom, used_s = _daily_values(symptom_def, data, now, fact)
    pairs = [(activity[d], symptom[d - 1]) for d in range(2, 16) if d in activity and (d - 1) in symptom]
    fact.values["present"] = bool(pairs)
    if not pairs:
        return fact
    split = statistics.fmean(a for a, _ in pairs)
    after_high = [s for a, s in pairs if a > split]
    after_low = [s for a, s in pairs if a <= split]
    fact.values.update(pairs_high=len(after_high), pairs_low=len(after_low))
    if len(after_high) >= MIN_PAIRS and len(after_low) >= MIN_PAIRS:
        high, low = statistics.fmean(after_high), statistics.fmean(after_low)
        fact.values.update(mean_after_high=high, mean_after_low=low, difference=high - low)
    fact.provenance = used_a + used_s
    return fact


MIN_PAIRS = 3


GOAL_ANY_STATUS = GOAL_OPEN | {"completed"}  # a completed goal still says which level was agreed


def recognised_goals(definition, data, statuses=GOAL_OPEN) -> list[dict]:
    """Goals of the given lifecycle statuses that the definition's codes recognise (any category, the
    description or a target's measure); every goal of those statuses when the definition has no codes."""
    goals = [g for g in data.of_type("Goal") if g.get("lifecycleStatus") in statuses]
    if definition.codes or definition.valueset is not None:
        goals = [g for g in goals if definition.matches(g.get("description"))
                 or any(definition.matches(c) for c in g.get("category") or [] if isinstance(c, dict))
                 or any(definition.matches(t.get("measure")) for t in g.get("target") or [] if isinstance(t, dict))]
    return goals


def goal_is_smart(goal: dict) -> bool:
    """A measurable target (a measure and an amount) and a due date (or duration) on at least one target."""
    for t in goal.get("target") or []:
        if not isinstance(t, dict) or not t.get("measure"):
            continue
        amount = any(k in t for k in ("detailQuantity", "detailRange", "detailInteger", "detailRatio"))
        due = "dueDate" in t or "dueDuration" in t
        if amount and due:
            return True
    return False


def _derive_goal(definition, data, now) -> Fact:
    fact = Fact(definition.name, unit="d")
    goals = recognised_goals(definition, data)
    fact.values.update(present=bool(goals), count=len(goals))
    reviewed = []
    for g in goals:
        when = parse_time(g.get("statusDate")) or parse_time((g.get("meta") or {}).get("lastUpdated")) or parse_time(g.get("startDate"))
        if when is not None and when <= now:
            reviewed.append((now - when).total_seconds() / 86400.0)
    if reviewed:  # every goal is due its review: the one reviewed longest ago decides
        fact.values["days_since_review"] = max(reviewed)
    unsmart = [g for g in goals if not goal_is_smart(g)]
    if goals:
        fact.values["unsmart_count"] = len(unsmart)
    if unsmart:
        fact.values["unsmart_text"] = (unsmart[0].get("description") or {}).get("text") or "unnamed goal"
    fact.provenance = [_ref(g) for g in goals]
    return fact


def _derive_patient(definition, data, now) -> Fact:
    fact = Fact(definition.name, unit="a" if definition.field == "age" else None)
    patient = data.patient
    value = None
    if patient is not None:
        if definition.field == "gender":
            value = patient.get("gender")
        elif definition.field == "age":
            born = parse_time(patient.get("birthDate"))
            if born is not None and born <= now:
                years = now.year - born.year - ((now.month, now.day) < (born.month, born.day))
                value = float(years)
        fact.provenance = [_ref(patient)]
    fact.values["present"] = value is not None
    if value is not None:
        fact.values["value"] = value
    return fact


# how each kind of fact is derived (fhir_adapter.derive adds the kinds other modules own, e.g. pacing)
DERIVERS = {
    "observation": _derive_observation,
    "daily_series": _derive_daily_series,
    "condition": _derive_condition,
    "record": _derive_record,
    "medication": _derive_medication,
    "patient": _derive_patient,
    "goal": _derive_goal,
    "medication_classes": _derive_medication_classes,
    "opioid_mme": _derive_opioid_mme,
    "series_pair": _derive_series_pair,
}


def is_number(value) -> bool:
    """A finite int or float (not a bool) that converts to float."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind is int or (kind is not bool and isinstance(value, (int, float))):
        return -1e308 < value < 1e308  # an integer too large for a float is no measurement
    return False
