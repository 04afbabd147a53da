"""Daily morphine milligram equivalents (MME) of one opioid order or statement.

Knows FHIR dosage (doseAndRate, timing.repeat, timing.code, asNeeded, maxDosePerPeriod) and units; the drug
knowledge (each product's opioid ingredient, strength and route; the MME factor of each ingredient) comes from
the rules as data (rules/drugs/*.json), so a clinician can read and change it without touching code.

    MME/day = strength per unit x units per dose x doses per day x factor
    transdermal fentanyl: MME/day = patch rate in mcg/h x patches worn x factor

Anything that cannot be computed from the record (no dose, no frequency, an unknown product, a route the
factor does not cover, an opioid without a factor such as buprenorphine) gives no number and says why: a
missing dose is never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ucum
from .codes import codeable_name
from .valuesets import normalize_code

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# HL7 v3 GTSAbbreviation timing codes (FHIR timing-abbreviation value set): doses per day
TIMING_CODES = {
    "QD": 1, "AM": 1, "PM": 1, "BED": 1, "BID": 2, "TID": 3, "QID": 4, "QOD": 0.5,
    "Q1H": 24, "Q2H": 12, "Q3H": 8, "Q4H": 6, "Q6H": 4, "Q8H": 3, "WK": 1 / 7, "MO": 1 / 30,
}
PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}
# dose units that count dose units (tablets, capsules, patches, sprays) rather than an amount of drug
COUNT_UNITS = {"tablet", "tablets", "tab", "tbl", "capsule", "capsules", "cap", "patch", "patches", "each", "ea",
               "1", "actuat", "actuation", "actuations", "spray", "sprays", "puff", "lozenge", "film", "dose",
               "suppository", "supp"}


@dataclass
class MmeResult:
    name: str
    mme: float | None = None
    line: str = ""
    reason: str = ""


def _fmt(x: float) -> str:
    return f"{x:.4g}" if not float(x).is_integer() else str(int(x))


def product_row(concept: dict | None, table: dict) -> dict | None:
    for coding in (concept or {}).get("coding") or []:
        key = normalize_code(coding.get("system"), coding.get("code"))
        if key and key[0] == RXNORM and key[1] in table:
            return table[key[1]]
    return None


def _dosages(resource: dict) -> list[dict]:
    if resource.get("resourceType") == "MedicationStatement":
        return resource.get("dosage") or []
    return resource.get("dosageInstruction") or []


def _doses_per_day(dosage: dict) -> tuple[float | None, str]:
    """(doses per day, how it was read) from timing; None when the record does not say."""
    timing = dosage.get("timing") or {}
    repeat = timing.get("repeat") or {}
    prn = bool(dosage.get("asNeededBoolean") or dosage.get("asNeededCodeableConcept"))
    freq = repeat.get("frequencyMax") if prn and repeat.get("frequencyMax") else repeat.get("frequency")
    if freq is not None and repeat.get("period"):
        unit = repeat.get("periodUnit")
        if unit not in PERIOD_DAYS:
            return None, f"timing period unit '{unit}' not understood"
        period_days = float(repeat["period"]) * PERIOD_DAYS[unit]
        if period_days <= 0:
            return None, "timing period is zero"
        per_day = float(freq) / period_days
        return per_day, ("as needed, at the prescribed maximum " if prn else "") + f"{_fmt(per_day)}/day"
    if repeat.get("timeOfDay"):
        per_day = float(len(repeat["timeOfDay"]))
        return per_day, f"{_fmt(per_day)}/day (times of day)"
    for coding in (timing.get("code") or {}).get("coding") or []:
        if coding.get("code") in TIMING_CODES:
            per_day = float(TIMING_CODES[coding["code"]])
            return per_day, f"{_fmt(per_day)}/day ({coding['code']})"
    return None, "no dose frequency in the dosage instructions"


def _max_per_day(dosage: dict) -> tuple[float | None, str | None]:
    """maxDosePerPeriod as (units per day, unit), when given."""
    ratio = dosage.get("maxDosePerPeriod") or {}
    num, den = ratio.get("numerator") or {}, ratio.get("denominator") or {}
    if num.get("value") is None or den.get("value") in (None, 0):
        return None, None
    unit = den.get("code") or den.get("unit")
    if unit not in PERIOD_DAYS:
        return None, None
    return float(num["value"]) / (float(den["value"]) * PERIOD_DAYS[unit]), (num.get("code") or num.get("unit"))


def _dose(dosage: dict) -> tuple[float | None, str | None]:
    for dr in dosage.get("doseAndRate") or []:
        q = dr.get("doseQuantity")
        if q and q.get("value") is not None:
            return float(q["value"]), (q.get("unit") or q.get("code"))
        rng = dr.get("doseRange") or {}
        high = rng.get("high") or {}
        if high.get("value") is not None:  # a range: the highest dose it allows
            return float(high["value"]), (high.get("unit") or high.get("code"))
    return None, None


def _kind_of_unit(unit: str | None) -> str | None:
    """'count' (tablets, patches), 'mass' (mg), 'volume' (mL) or None."""
    if unit is None:
        return None
    u = unit.strip().strip("{}").lower()
    if u in COUNT_UNITS:
        return "count"
    try:
        _, dim = ucum.parse(unit.strip())
    except ucum.UnitError:
        return None
    if dim == (1, 0, 0, 0, 0):
        return "mass"
    if dim == (0, 1, 0, 0, 0):
        return "volume"
    return None


def daily_mme(resource: dict, concept: dict | None, table: dict, factors: dict) -> MmeResult:
    name = codeable_name(concept)
    out = MmeResult(name)
    row = product_row(concept, table)
    if row is None:
        out.reason = "product not in the opioid strength table (strength unknown)"
        return out
    if row.get("status") != "parsed":
        out.reason = row.get("note") or "strength not readable from the product name"
        return out
    ingredient = row["ingredient"]
    factor_entry = (factors.get("factors") or {}).get(ingredient)
    if factor_entry is None:
        out.reason = (factors.get("not_converted") or {}).get(ingredient) or f"no CDC 2022 MME factor for {ingredient}"
        return out
    if row["route"] not in factor_entry["routes"]:
        out.reason = f"the {ingredient} factor covers {'/'.join(factor_entry['routes'])} use, not {row['route']}"
        return out
    dosages = _dosages(resource)
    if not dosages:
        out.reason = "no dosage instructions"
        return out

    total = 0.0
    parts = []
    for dosage in dosages:
        dose, dose_unit = _dose(dosage)
        unit_kind = _kind_of_unit(dose_unit)
        if dose is None or unit_kind is None:
            out.reason = "no dose quantity in the dosage instructions" if dose is None else \
                f"dose unit '{dose_unit}' not understood"
            return out
        if factor_entry["per"] == "ug/h":  # transdermal patch: the rate, whatever the change interval
            if row["unit"] != "MG/HR" or unit_kind != "count":
                out.reason = "patch dose must be a number of patches of a MG/HR product"
                return out
            rate = dose * row["strength"] * 1000.0
            mme = rate * factor_entry["factor"]
            parts.append(f"{_fmt(dose)} patch x {_fmt(row['strength'] * 1000)} mcg/h = {_fmt(rate)} mcg/h "
                         f"x {_fmt(factor_entry['factor'])} = {_fmt(round(mme, 1))} MME/day")
            total += mme
            continue
        # amount of opioid (mg) in one dose
        if unit_kind == "mass":
            mg = dose * ucum.conversion_factor(dose_unit.strip(), "mg")
            dose_text = f"{_fmt(mg)} mg"
        elif unit_kind == "count" and row["unit"] == "MG":
            mg = dose * row["strength"]
            dose_text = f"{_fmt(dose)} x {_fmt(row['strength'])} mg"
        elif unit_kind == "volume" and row["unit"] == "MG/ML":
            ml = dose * ucum.conversion_factor(dose_unit.strip(), "mL")
            mg = ml * row["strength"]
            dose_text = f"{_fmt(ml)} mL x {_fmt(row['strength'])} mg/mL"
        else:
            out.reason = f"a dose in '{dose_unit}' cannot be converted for a {row['unit']} product"
            return out
        per_day, how = _doses_per_day(dosage)
        if per_day is None:
            cap, cap_unit = _max_per_day(dosage)
            if cap is not None and _kind_of_unit(cap_unit) == unit_kind:
                per_day, how = cap / dose, "maximum dose per period"
            else:
                out.reason = how
                return out
        mg_day = mg * per_day
        mme = mg_day * factor_entry["factor"]
        parts.append(f"{dose_text} x {how} = {_fmt(round(mg_day, 2))} mg/day x {_fmt(factor_entry['factor'])} "
                     f"= {_fmt(round(mme, 1))} MME/day")
        total += mme
    out.mme = round(total, 1)
    out.line = f"{name}: " + "; ".join(parts)
    if factor_entry.get("caveat"):  # tramadol, tapentadol: the factor's own caveat travels with the number
        out.line += f" ({factor_entry['caveat']})"
    return out
