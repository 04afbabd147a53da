"""Deterministic synthetic patients for benchmarks and stress tests (FHIR R4 Bundle or CDS Hooks request).

Sizes (resource counts are exact for the default arguments):
    small      ~20    Patient, 7 days of steps and pain, 3 labs, 2 medications, 2 conditions
    standard   ~220   90 days of daily steps and pain scores, 17 labs, 8 medications, 10 conditions, 2 goals
    large      ~2000  365 days of steps (two partial readings a day), pain, sleep and heart rate, 100 labs,
                      30 medications, 40 conditions, 5 goals

Same (size, patient_id, seed) -> byte-identical output: a seeded random.Random, a fixed "now" and
ids derived from the patient id. Codes are real (LOINC, RxNorm SCDs from the rules' value sets,
ICD-10-CM, SNOMED CT) so the facts and rules see the data an EHR would send.

`unique_hemoglobin(i)` gives patient i of a stress run a hemoglobin that no other patient of the run has
(and that fires the anaemia rule), so a response can be checked to hold only its own patient's values.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid

# code systems: one owner, the population generator (whose chart builder also writes the example patients)
from population.generate import ICD10, LOINC, RXNORM, SNOMED, UCUM
from population.generate import OBS_CAT as OBS_CATEGORY

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.timezone.utc)
SIZES = ("small", "standard", "large")


# (LOINC, display, UCUM unit, low, high, decimals)
LABS = [
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 11.0, 15.5, 1),
    ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", 0.5, 6.0, 2),
    ("2276-4", "Ferritin [Mass/volume] in Serum or Plasma", "ng/mL", 10, 200, 0),
    ("3024-7", "Thyroxine (T4) free [Mass/volume] in Serum or Plasma", "ng/dL", 0.7, 1.9, 2),
    ("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", 33, 47, 1),
    ("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]", "{score}", 0, 20, 0),
    ("70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]", "{score}", 0, 16, 0),
    ("93832-4", "Sleep duration", "h", 4.5, 8.5, 1),
]
STEPS = ("41950-7", "Number of steps in 24 hour Measured")
STEPS_PARTIAL = ("55423-8", "Number of steps in unspecified time Pedometer")
PAIN = ("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported")
HEART_RATE = ("8867-4", "Heart rate")

# RxNorm clinical drugs (SCD) that appear in the rules' value sets; (code, display, tablets per dose, doses per day)
MEDICATIONS = [
    ("1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 1, 3),
    ("310431", "gabapentin 300 MG Oral Capsule", 1, 3),
    ("856834", "amitriptyline hydrochloride 25 MG Oral Tablet", 1, 1),
    ("197591", "diazepam 5 MG Oral Tablet", 1, 2),
    ("835603", "tramadol hydrochloride 50 MG Oral Tablet", 1, 4),
    ("854873", "zolpidem tartrate 10 MG Oral Tablet", 1, 1),
    ("197446", "carisoprodol 350 MG Oral Tablet", 1, 3),
    ("892582", "morphine sulfate 15 MG Oral Tablet", 1, 2),
]
# (system, code, display)
CONDITIONS = [
    (ICD10, "M54.50", "Low back pain, unspecified"),
    (ICD10, "M79.7", "Fibromyalgia"),
    (ICD10, "G89.29", "Other chronic pain"),
    (ICD10, "M17.11", "Unilateral primary osteoarthritis, right knee"),
    (ICD10, "F32.1", "Major depressive disorder, single episode, moderate"),
    (ICD10, "F41.1", "Generalized anxiety disorder"),
    (ICD10, "G47.33", "Obstructive sleep apnea (adult) (pediatric)"),
    (ICD10, "E03.9", "Hypothyroidism, unspecified"),
    (SNOMED, "271737000", "Anemia (disorder)"),
    (ICD10, "G47.00", "Insomnia, unspecified"),
]

# resources per size: (days of daily series, readings of steps per day, extra series, labs, meds, conditions, goals)
_SHAPE = {
    "small": (7, 1, False, 3, 2, 2, 0),
    "standard": (90, 1, False, 17, 8, 10, 2),
    "large": (365, 2, True, 100, 30, 40, 5),
}


def unique_hemoglobin(i: int) -> float:
    """A hemoglobin (g/dL) for patient i of a stress run: distinct at one decimal for i < 70, all < 12."""
    return round(5.0 + 0.1 * (i % 70), 1)


def make_bundle(size: str = "standard", patient_id: str = "bench-standard", seed: int = 0,
                now: dt.datetime = NOW, hemoglobin: float | None = None, gender: str = "female") -> dict:
    """A FHIR R4 collection Bundle for one synthetic patient."""
    if size not in _SHAPE:
        raise ValueError(f"size must be one of {', '.join(SIZES)}")
    days, per_day, extra_series, n_labs, n_meds, n_conds, n_goals = _SHAPE[size]
    rnd = random.Random(f"{size}:{patient_id}:{seed}")
    subject = {"reference": f"Patient/{patient_id}"}
    resources: list[dict] = [{
        "resourceType": "Patient",
        "id": patient_id,
        "meta": {"lastUpdated": _ts(now - dt.timedelta(days=30))},
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": f"MRN-{patient_id}"}],
        "name": [{"family": f"Synthetic-{patient_id}", "given": ["Bench"]}],
        "gender": gender,
        "birthDate": f"{1950 + rnd.randrange(40)}-{1 + rnd.randrange(12):02d}-{1 + rnd.randrange(28):02d}",
    }]
    counter = iter(range(1, 10**9))

    def obs(code, display, value, unit, when, category="laboratory", decimals=1):
        value = round(value, decimals) if decimals else int(round(value))
        return {
            "resourceType": "Observation",
            "id": f"{patient_id}-obs-{next(counter)}",
            "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
            "subject": subject,
            "effectiveDateTime": _ts(when),
            "issued": _ts(when + dt.timedelta(hours=1)),
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        }

    # daily series: a baseline with a weekly rhythm and noise; pain loosely follows yesterday's activity
    base_steps = 3500 + rnd.randrange(3000)
    base_pain = 3 + rnd.random() * 3
    for d in range(days, 0, -1):
        day = (now - dt.timedelta(days=d)).replace(hour=20, minute=0, second=0, microsecond=0)
        steps = max(200.0, base_steps * (0.8 + 0.4 * rnd.random()) * (1.15 if day.weekday() >= 5 else 1.0))
        if per_day == 1:
            resources.append(obs(*STEPS, steps, "/d", day, "activity", 0))
        else:
            part = steps * (0.3 + 0.3 * rnd.random())
            resources.append(obs(*STEPS_PARTIAL, part, "/d", day - dt.timedelta(hours=8), "activity", 0))
            resources.append(obs(*STEPS_PARTIAL, steps - part, "/d", day, "activity", 0))
        pain = min(10.0, max(0.0, base_pain + (steps - base_steps) / 2500 + rnd.gauss(0, 0.8)))
        resources.append(obs(*PAIN, pain, "{score}", day + dt.timedelta(minutes=5), "survey", 0))
        if extra_series:
            resources.append(obs("93832-4", "Sleep duration", 5 + 3 * rnd.random(), "h", day + dt.timedelta(hours=10),
                                 "activity", 1))
            resources.append(obs(*HEART_RATE, 60 + 25 * rnd.random(), "/min", day, "vital-signs", 0))

    # labs: cycle through the panel, spread over the last 2 years (most recent first in time order)
    for i in range(n_labs):
        code, display, unit, low, high, decimals = LABS[i % len(LABS)]
        when = now - dt.timedelta(days=3 + (i // len(LABS)) * 60 + rnd.randrange(20), hours=rnd.randrange(12))
        value = low + (high - low) * rnd.random()
        if code == "718-7" and i < len(LABS) and hemoglobin is not None:
            value, when = hemoglobin, now - dt.timedelta(days=2)  # the most recent hemoglobin
        lab = obs(code, display, value, unit, when, "laboratory" if unit not in ("{score}", "h") else "survey",
                  decimals)
        if code == "718-7":
            lab["referenceRange"] = [{"low": {"value": 12.0, "unit": "g/dL", "system": UCUM, "code": "g/dL"},
                                      "high": {"value": 15.5, "unit": "g/dL", "system": UCUM, "code": "g/dL"}}]
        resources.append(lab)

    for i in range(n_meds):
        code, display, per_dose, per_day_doses = MEDICATIONS[i % len(MEDICATIONS)]
        active = i < len(MEDICATIONS)  # older repeats of the list were stopped
        resources.append({
            "resourceType": "MedicationRequest",
            "id": f"{patient_id}-med-{i + 1}",
            "status": "active" if active else "stopped",
            "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}],
                                          "text": display},
            "subject": subject,
            "authoredOn": (now - dt.timedelta(days=20 + 30 * i)).date().isoformat(),
            "dosageInstruction": [{
                "text": f"{per_dose} tablet {per_day_doses} times a day",
                "timing": {"repeat": {"frequency": per_day_doses, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": per_dose, "unit": "tablet",
                                                  "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm",
                                                  "code": "TAB"}}],
            }],
        })

    for i in range(n_conds):
        system, code, display = CONDITIONS[i % len(CONDITIONS)]
        resources.append({
            "resourceType": "Condition",
            "id": f"{patient_id}-cond-{i + 1}",
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active" if i < len(CONDITIONS) else "resolved"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "subject": subject,
            "onsetDateTime": _ts(now - dt.timedelta(days=200 + 97 * i)),
            "recordedDate": _ts(now - dt.timedelta(days=190 + 97 * i)),
        })

    for i in range(n_goals):
        resources.append({
            "resourceType": "Goal",
            "id": f"{patient_id}-goal-{i + 1}",
            "lifecycleStatus": "active",
            "description": {"text": f"Walk {base_steps + 500 * (i + 1)} steps a day on most days"},
            "subject": subject,
            "startDate": (now - dt.timedelta(days=60 + 10 * i)).date().isoformat(),
            "statusDate": (now - dt.timedelta(days=14 + 7 * i)).date().isoformat(),
        })

    return {
        "resourceType": "Bundle",
        "id": f"bench-{size}-{patient_id}",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{_uuid(patient_id, r['id'])}", "resource": r} for r in resources],
    }


def make_request(size: str = "standard", patient_id: str = "bench-standard", seed: int = 0, now: dt.datetime = NOW,
                 hemoglobin: float | None = None, gender: str = "female") -> dict:
    """A CDS Hooks 2.0 patient-view request whose prefetch holds the patient (keys as the service asks)."""
    bundle = make_bundle(size, patient_id, seed, now, hemoglobin, gender)
    by_type: dict[str, list[dict]] = {}
    for entry in bundle["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry)
    keys = {"Observation": "observations", "Condition": "conditions", "MedicationRequest": "medications",
            "Goal": "goals"}
    prefetch: dict = {"patient": by_type.pop("Patient")[0]["resource"]}
    for rtype, key in keys.items():
        entries = by_type.get(rtype, [])
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return {
        "hook": "patient-view",
        "hookInstance": str(_uuid(patient_id, f"hook-{seed}")),
        "context": {"userId": "Practitioner/bench-clinician", "patientId": patient_id},
        "prefetch": prefetch,
    }


def count_resources(doc: dict) -> int:
    if doc.get("resourceType") == "Bundle":
        return len(doc.get("entry") or [])
    n = 0
    for value in (doc.get("prefetch") or {}).values():
        if isinstance(value, dict):
            n += count_resources(value) if value.get("resourceType") == "Bundle" else 1
    return n


def _ts(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uuid(*parts: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, "pacecds-bench:" + ":".join(parts))
