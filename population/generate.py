"""Synthetic FHIR R4 test data: the patient chart builder and a FHIR Bulk Data export generator.

`Chart` builds one patient's resources (codes from the rules' value sets and the clinical reference); the
knowledge-base example patients (tools/build_example_patients.py) and the population generator share it.

`write_export(out_dir, patients, seed)` writes a Bulk Data export as the `$export` operation leaves it: one NDJSON
file per resource type (optionally several per type, optionally gzip), one resource per line, and a
`manifest.json` shaped like the export's completion response. Each patient's situations are drawn by a random
generator seeded with (seed, patient index), with the proportions in `MIX` (docs/population-impact.md), so the same
arguments give byte-identical files and a patient's chart does not depend on how many others are generated.
"""

from __future__ import annotations

import datetime as dt
import gzip as gzip_module
import json
import random
from pathlib import Path
from typing import Any, Callable

import orjson

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
PACECDS_SCORE = "https://pacecds.org/fhir/CodeSystem/instrument-score"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

CODES = {
    "steps": (LOINC, "41950-7", "Number of steps in 24 hour Measured"),
    "steps_partial": (LOINC, "55423-8", "Number of steps in unspecified time Pedometer"),
    "pain": (LOINC, "72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported"),
    "pain_reported": (LOINC, "38208-5", "Pain severity - Reported"),
    "sleep": (LOINC, "93832-4", "Sleep duration"),
    "phq9": (LOINC, "44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"),
    "phq9_item9": (LOINC, "44260-8", "Thoughts that you would be better off dead, or of hurting yourself in some way"),
    "gad7": (LOINC, "70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]"),
    "isi": (PACECDS_SCORE, "isi-total", "Insomnia Severity Index total score"),
    "stopbang": (PACECDS_SCORE, "stop-bang-total", "STOP-Bang total score"),
    "hb": (LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood"),
    "ferritin": (LOINC, "2276-4", "Ferritin [Mass/volume] in Serum or Plasma"),
    "tsh": (LOINC, "3016-3", "Thyrotropin [Units/volume] in Serum or Plasma"),
    "exercise_minutes": (LOINC, "55411-3", "Exercise duration"),
    "heart_rate": (LOINC, "8867-4", "Heart rate"),
    "resting_heart_rate": (LOINC, "40443-4", "Heart rate --resting"),
    "rpe": ("https://pacecds.org/fhir/CodeSystem/instrument-score", "borg-rpe", "Borg rating of perceived exertion (6-20)"),
    "hb_molar": (LOINC, "59260-0", "Hemoglobin [Moles/volume] in Blood"),
    # two more members of VSAC 2.16.840.1.113762.1.4.1248.219 Hemoglobin lab test (rules/valuesets/SOURCES.md)
    "hb_venous": (LOINC, "30350-3", "Hemoglobin [Mass/volume] in Venous blood"),
    "hb_plasma": (LOINC, "35183-3", "Hemoglobin [Mass or Moles/volume] in Plasma"),
    # TSH in blood, the code of the gematik ISiK Labor TSH value set (rules/valuesets/tsh-lab-test.json)
    "tsh_blood": (LOINC, "3015-5", "Thyrotropin [Units/volume] in Blood"),
    # CRP, the mass code of the gematik ISiK Labor CRP value set (rules/valuesets/crp-lab-test.json)
    "crp": (LOINC, "1988-5", "C reactive protein [Mass/volume] in Serum or Plasma"),
}

PACING_GOAL_CATEGORY = "https://pacecds.org/fhir/CodeSystem/goal-category"  # local pacecds code (docs/knowledge-base.md)
GOAL_MEASURES = {"steps": ("41950-7", "Number of steps in 24 hour Measured", "steps/day", "/d"),
                 "minutes": ("55411-3", "Exercise duration", "minutes/day", "min/d")}

DRUGS = {  # RxNorm clinical drugs; every code is a member of a value set in rules/valuesets
    "oxycodone5": "oxycodone hydrochloride 5 MG Oral Tablet",            # 1049621
    "oxycodone_apap": "acetaminophen 325 MG / oxycodone hydrochloride 5 MG Oral Tablet",  # 1049221
    "oxycodone10": "oxycodone hydrochloride 10 MG Oral Tablet",          # 1049683
    "morphine15": "morphine sulfate 15 MG Oral Tablet",                  # 892582
    "tramadol50": "tramadol hydrochloride 50 MG Oral Tablet",            # 835603
    "fentanyl25": "72 HR fentanyl 0.025 MG/HR Transdermal System",       # 245134
    "fentanyl75": "72 HR fentanyl 0.075 MG/HR Transdermal System",       # 197696
    "naloxone_nasal": "naloxone hydrochloride 40 MG/ML Nasal Spray",     # 1725059 (CDC naloxone-medications)
    "hydrocodone_apap": "acetaminophen 325 MG / hydrocodone bitartrate 5 MG Oral Tablet",  # 857002
    "alprazolam05": "alprazolam 0.5 MG Oral Tablet",                    # 308048
    "lorazepam1": "lorazepam 1 MG Oral Tablet",                          # 197901
    "gabapentin300": "gabapentin 300 MG Oral Capsule",                   # 310431
    "pregabalin75": "pregabalin 75 MG Oral Capsule",                     # 483450
    "cyclobenzaprine10": "cyclobenzaprine hydrochloride 10 MG Oral Tablet",  # 828348
    "zolpidem10": "zolpidem tartrate 10 MG Oral Tablet",                 # 854873
    "amitriptyline25": "amitriptyline hydrochloride 25 MG Oral Tablet",  # 856834
    "trazodone50": "trazodone hydrochloride 50 MG Oral Tablet",          # 856377
    "diphenhydramine25": "diphenhydramine hydrochloride 25 MG Oral Tablet",  # 1049630
}
RXCUI = {
    "oxycodone5": "1049621", "oxycodone_apap": "1049221", "oxycodone10": "1049683", "morphine15": "892582", "tramadol50": "835603",
    "fentanyl25": "245134", "hydrocodone_apap": "857002", "alprazolam05": "308048", "lorazepam1": "197901",
    "gabapentin300": "310431", "pregabalin75": "483450", "cyclobenzaprine10": "828348", "zolpidem10": "854873",
    "amitriptyline25": "856834", "trazodone50": "856377", "diphenhydramine25": "1049630",
    "fentanyl75": "197696", "naloxone_nasal": "1725059",
}


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def day_before(now: dt.datetime, days_ago: int, hour: int = 20, minute: int = 0) -> dt.datetime:
    """A time on the calendar day `days_ago` days before `now`."""
    d = (now - dt.timedelta(days=days_ago)).date()
    return dt.datetime(d.year, d.month, d.day, hour, minute, tzinfo=dt.timezone.utc)


class Chart:
    """One patient's chart as FHIR R4 resources, dated relative to `now` (the evaluation time)."""

    def __init__(self, name: str, pid: str, gender: str, birth: str, family: str, given: str, *,
                 now: dt.datetime):
        self.now = now
        self.name = name
        self.pid = pid
        self.entries: list[dict] = []
        self.n = 0
        self.add({"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth,
                  "name": [{"family": family, "given": [given]}]})

    def add(self, resource: dict) -> dict:
        self.entries.append({"fullUrl": f"urn:uuid:{resource['resourceType'].lower()}-{resource['id']}",
                             "resource": resource})
        return resource

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.pid}-{self.n}"

    def day(self, days_ago: int, hour: int = 20, minute: int = 0) -> dt.datetime:
        return day_before(self.now, days_ago, hour, minute)

    @property
    def subject(self) -> dict:
        return {"reference": f"Patient/{self.pid}"}

    # --- observations -----------------------------------------------------------------------------------------
    def obs(self, kind: str, value, unit: str | None, when: dt.datetime, status: str = "final",
            category: str = "survey", ucum_code: str | None = None, ref_range: tuple | None = None,
            integer: bool = False) -> dict:
        system, code, display = CODES[kind]
        r: dict[str, Any] = {"resourceType": "Observation", "id": self._id(kind.replace("_", "")), "status": status,
             "category": [{"coding": [{"system": OBS_CAT, "code": category}]}],
             "code": {"coding": [{"system": system, "code": code, "display": display}]},
             "subject": self.subject, "effectiveDateTime": iso(when)}
        if integer:
            r["valueInteger"] = int(value)
        else:
            q = {"value": value, "unit": unit}
            if ucum_code is not None:
                q.update(system=UCUM, code=ucum_code)
            r["valueQuantity"] = q
        if ref_range:
            low, high, u = ref_range
            r["referenceRange"] = [{"low": {"value": low, "unit": u, "system": UCUM, "code": u},
                                    "high": {"value": high, "unit": u, "system": UCUM, "code": u}}]
        return self.add(r)

    def series(self, kind: str, values: dict[int, float], unit: str, ucum_code: str, hour: int = 21,
               category: str = "activity", statuses: dict[int, str] | None = None) -> None:
        """values: days_ago -> value (missing days stay missing)."""
        for ago, v in sorted(values.items(), reverse=True):
            self.obs(kind, v, unit, self.day(ago, hour), category=category, ucum_code=ucum_code,
                     status=(statuses or {}).get(ago, "final"))

    def steps(self, values: dict[int, float], unit="steps/day", code="{steps}/d", **kw):
        self.series("steps", values, unit, code, **kw)

    def pain(self, values: dict[int, float], **kw):
        self.series("pain", values, "{score}", "{score}", hour=20, category="survey", **kw)

    def sleep(self, values: dict[int, float], unit="h", code="h", **kw):
        self.series("sleep", values, unit, code, hour=7, category="activity", **kw)

    def score(self, kind: str, value: int, days_ago: int, status: str = "final"):
        return self.obs(kind, value, "{score}", self.day(days_ago, 10), status=status, category="survey",
                        ucum_code="{score}")

    def lab(self, kind: str, value: float, unit: str, days_ago: int, status="final", ref_range=None):
        return self.obs(kind, value, unit, self.day(days_ago, 9), status=status, category="laboratory",
                        ucum_code=unit, ref_range=ref_range)

    # --- conditions, medications, goals -----------------------------------------------------------------------
    def condition(self, system: str, code: str, display: str, clinical="active", verification="confirmed",
                  onset_days_ago: int = 400) -> dict:
        return self.add({
            "resourceType": "Condition", "id": self._id("cond"),
            "clinicalStatus": {"coding": [{"system": COND_CLIN, "code": clinical}]},
            "verificationStatus": {"coding": [{"system": COND_VER, "code": verification}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "subject": self.subject, "onsetDateTime": iso(self.day(onset_days_ago, 10)),
        })

    def _dosage(self, dose: float | None, unit: str | None, freq: int | None, period: float | None,
                period_unit: str | None, prn: bool, text: str | None) -> dict:
        dosage: dict = {}
        if text:
            dosage["text"] = text
        if freq is not None:
            dosage["timing"] = {"repeat": {"frequency": freq, "period": period, "periodUnit": period_unit}}
        if prn:
            dosage["asNeededBoolean"] = True
        if dose is not None:
            dq: dict[str, Any] = {"value": dose, "unit": unit}
            if unit in ("mg", "mL", "ug"):
                dq.update(system=UCUM, code=unit)
            else:
                dq.update(system="http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm",
                          code={"tablet": "TAB", "capsule": "CAP", "patch": "PATCH"}.get(unit or "", "TAB"))
            dosage["doseAndRate"] = [{"doseQuantity": dq}]
        dosage.setdefault("route", {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]})
        return dosage

    def med_request(self, drug: str, status="active", dose=1, unit="tablet", freq=None, period=None,
                    period_unit=None, prn=False, text=None, authored_days_ago=30, intent="order") -> dict:
        r = {"resourceType": "MedicationRequest", "id": self._id("medrx"), "status": status, "intent": intent,
             "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": RXCUI[drug],
                                                       "display": DRUGS[drug]}], "text": DRUGS[drug]},
             "subject": self.subject, "authoredOn": iso(self.day(authored_days_ago, 11)),
             "dosageInstruction": [self._dosage(dose, unit, freq, period, period_unit, prn, text)]}
        if drug in ("fentanyl25", "fentanyl75"):
            r["dosageInstruction"][0]["route"] = {"coding": [{"system": SNOMED, "code": "45890007",
                                                              "display": "Transdermal route"}]}
        return self.add(r)

    def med_statement(self, drug: str, status="active", dose=1, unit="tablet", freq=None, period=None,
                      period_unit=None, prn=False, text=None) -> dict:
        return self.add({
            "resourceType": "MedicationStatement", "id": self._id("medst"), "status": status,
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": RXCUI[drug],
                                                      "display": DRUGS[drug]}], "text": DRUGS[drug]},
            "subject": self.subject, "effectivePeriod": {"start": iso(self.day(120, 9))},
            "dateAsserted": iso(self.day(10, 9)),
            "dosage": [self._dosage(dose, unit, freq, period, period_unit, prn, text)],
        })

    def med_dispense(self, drug: str, days_ago: int, days_supply: int | None, status="completed",
                     quantity: float = 1) -> dict:
        r = {"resourceType": "MedicationDispense", "id": self._id("meddisp"), "status": status,
             "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": RXCUI[drug],
                                                       "display": DRUGS[drug]}], "text": DRUGS[drug]},
             "subject": self.subject, "whenHandedOver": iso(self.day(days_ago, 15)),
             "quantity": {"value": quantity}}
        if days_supply is not None:
            r["daysSupply"] = {"value": days_supply, "unit": "day", "system": UCUM, "code": "d"}
        return self.add(r)

    def service_request(self, code: str, display: str, days_ago: int, status="active") -> dict:
        return self.add({
            "resourceType": "ServiceRequest", "id": self._id("sr"), "status": status, "intent": "order",
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
            "subject": self.subject, "authoredOn": iso(self.day(days_ago, 10)),
        })

    def goal(self, text: str, status="active", status_days_ago: int | None = 10, start_days_ago=60,
             target: tuple | None = None, due_days: int | None = None, pacing_category: bool = False) -> dict:
        """target: ("steps", 6000) or ("minutes", 30) a day, coded as pacecds writes it (LOINC measure, UCUM)."""
        r = {"resourceType": "Goal", "id": self._id("goal"), "lifecycleStatus": status,
             "description": {"text": text}, "subject": self.subject,
             "startDate": self.day(start_days_ago).date().isoformat()}
        if pacing_category:
            r["category"] = [{"coding": [{"system": PACING_GOAL_CATEGORY, "code": "activity-pacing",
                                          "display": "Activity pacing"}]}]
        if status_days_ago is not None:
            r["statusDate"] = self.day(status_days_ago).date().isoformat()
        t: dict = {}
        if target is not None:
            kind, amount = target
            code, display, unit, ucum = GOAL_MEASURES[kind]
            t.update(measure={"coding": [{"system": LOINC, "code": code, "display": display}]},
                     detailQuantity={"value": amount, "unit": unit, "system": UCUM, "code": ucum})
        if due_days is not None:
            t["dueDate"] = (self.now + dt.timedelta(days=due_days)).date().isoformat()
        if t:
            r["target"] = [t]
        return self.add(r)

    def ceiling_goal(self, kind: str, high: float, ucum: str, text: str) -> dict:
        """A clinician-set intensity ceiling: a Goal whose target measure is the reading, with an upper limit."""
        system, code, display = CODES[kind]
        return self.add({
            "resourceType": "Goal", "id": self._id("goal"), "lifecycleStatus": "active",
            "description": {"text": text}, "subject": self.subject, "startDate": self.day(30).date().isoformat(),
            "statusDate": self.day(10).date().isoformat(),
            "target": [{"measure": {"coding": [{"system": system, "code": code, "display": display}]},
                        "detailRange": {"high": {"value": high, "unit": ucum, "system": UCUM, "code": ucum}},
                        "dueDate": (self.now + dt.timedelta(days=60)).date().isoformat()}]})

    def activity_inventory(self, activities: list[tuple[str, str]], days_ago: int, status="completed") -> dict:
        """The patient's activity inventory: a QuestionnaireResponse to the pacecds questionnaire (docs/knowledge-base.md)."""
        return self.add({
            "resourceType": "QuestionnaireResponse", "id": self._id("qr-inventory"),
            "questionnaire": "https://pacecds.org/fhir/Questionnaire/activity-inventory", "status": status,
            "subject": self.subject, "authored": iso(self.day(days_ago, 11)),
            "item": [{"linkId": "activity", "item": [
                {"linkId": "name", "answer": [{"valueString": name}]},
                {"linkId": "demand", "answer": [{"valueCoding": {
                    "system": "https://pacecds.org/fhir/CodeSystem/activity-demand", "code": demand,
                    "display": demand}}]}]} for name, demand in activities]})

    def bundle(self) -> dict:
        return {"resourceType": "Bundle", "id": self.name, "type": "collection", "entry": self.entries}



# --- building blocks shared by the example patients and the population ---------------------------------------

CHRONIC_LBP_SCT = (SNOMED, "279039007", "Low back pain")
CHRONIC_LBP_ICD = (ICD10, "M54.50", "Low back pain, unspecified")
FIBROMYALGIA_ICD = (ICD10, "M79.7", "Fibromyalgia")
FIBROMYALGIA_SCT = (SNOMED, "203082005", "Fibromyalgia")
KNEE_OA_ICD = (ICD10, "M17.11", "Unilateral primary osteoarthritis, right knee")
OSA_ICD = (ICD10, "G47.33", "Obstructive sleep apnea (adult) (pediatric)")
BREAST_CANCER_ICD = (ICD10, "C50.911", "Malignant neoplasm of unspecified site of right female breast")
PROSTATE_CANCER_ICD = (ICD10, "C61", "Malignant neoplasm of prostate")
HOSPICE_SCT = ("385763009", "Hospice care (regime/therapy)")


def steady(base: float, days=range(1, 15), wiggle=(0.97, 1.02, 1.0, 0.99, 1.03, 0.98, 1.01)) -> dict:
    return {d: round(base * wiggle[i % len(wiggle)]) for i, d in enumerate(days)}


def flat(value: float, days=range(1, 15)) -> dict:
    return {d: value for d in days}


def labs_recent(c: Chart, days_ago=40):
    c.lab("hb", 13.6, "g/dL", days_ago)
    c.lab("tsh", 1.9, "m[IU]/L", days_ago)


# --- the population ---------------------------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)  # the default evaluation time of an export

# Each patient draws one situation per axis with these weights (percent of patients; each axis sums to 100).
# "no_data" patients (a Patient resource only) skip every other axis; the opioid context applies to patients
# whose medication situation includes an opioid; "invalid" patients get one resource a fact reads that is not
# valid FHIR (their evaluation must fail alone, counted as a per-patient error).
MIX: dict[str, dict[str, float]] = {
    "record": {"charted": 95.0, "no_data": 4.5, "invalid": 0.5},
    "age": {"adult": 97.5, "under_18": 2.5},
    "pain_condition": {"low_back_pain": 45.0, "fibromyalgia": 20.0, "knee_osteoarthritis": 20.0, "none": 15.0},
    "activity": {"none": 18.0, "steady": 20.0, "new_tracker": 8.0, "stale": 6.0, "flare": 8.0, "severe_flare": 2.0,
                 "boom_bust": 9.0, "variable_no_pain_link": 4.0, "flare_settling": 5.0, "step_up_pain": 5.0,
                 "fall_after_new_drug": 3.0, "wheelchair_minutes": 2.0, "heart_rate_over_ceiling": 2.0,
                 "flare_entered_in_error": 8.0},
    "goal": {"none": 30.0, "reviewed": 45.0, "overdue": 15.0, "not_smart": 10.0},
    "labs": {"none": 15.0, "recent_normal": 45.0, "old": 10.0, "low_hemoglobin": 6.0, "severe_anaemia": 1.5,
             "molar_hemoglobin": 1.5, "low_ferritin": 8.0, "tsh_high": 6.0, "tsh_entered_in_error": 4.0,
             "tsh_with_lab_range": 3.0},
    "mood": {"none": 55.0, "phq9_normal": 15.0, "phq9_positive": 10.0, "phq9_item9": 2.0, "gad7_positive": 8.0,
             "stale_or_entered_in_error": 10.0},
    "sleep": {"none": 55.0, "normal": 20.0, "short_hours": 8.0, "short_minutes": 4.0, "insomnia": 5.0,
              "stop_bang": 5.0, "known_osa": 3.0},
    "meds": {"none": 45.0, "opioid_low": 10.0, "opioid_high_mme": 7.0, "fentanyl_patch": 2.0,
             "opioid_not_computable": 2.0, "opioid_benzo": 6.0, "opioid_gabapentinoid": 6.0,
             "benzo_stopped": 3.0, "opioid_entered_in_error": 3.0, "sedative_burden": 6.0, "older_adult_cns": 4.0,
             "single_sedative": 6.0},
    "opioid_context": {"plain": 65.0, "naloxone_on_file": 15.0, "cancer": 8.0, "hospice": 4.0, "hospice_old": 3.0,
                       "old_benzo_dispensed": 5.0},
}
OPIOID_MEDS = {"opioid_low", "opioid_high_mme", "fentanyl_patch", "opioid_not_computable", "opioid_benzo",
               "opioid_gabapentinoid", "benzo_stopped"}
AXES = tuple(MIX)

_FAMILY = ("Okafor", "Lindqvist", "Moreau", "Haddad", "Novak", "Said", "Ivanova", "Sato", "Mensah", "Berg",
           "Fischer", "Bauer", "Kowalczyk", "Rahman", "Osei", "Santos", "Ito", "Adeyemi", "Kaur", "Lindgren")
_GIVEN = {"female": ("Ngozi", "Claire", "Layla", "Mila", "Yuki", "Sofia", "Anna", "Amina", "Maria", "Eva"),
          "male": ("Jonas", "Petr", "Karim", "Kofi", "Hans", "Piotr", "Kwame", "Kenji", "Tunde", "Hiro")}


def _pick(rnd: random.Random, weights: dict[str, float]) -> str:
    x = rnd.random() * sum(weights.values())
    for name, w in weights.items():
        x -= w
        if x < 0:
            return name
    return name


def plan(seed: int, index: int) -> dict[str, str]:
    """The situations of patient `index` of an export generated with `seed` (one per axis of MIX)."""
    rnd = random.Random(f"pacecds-population:{seed}:{index}:plan")
    return {axis: _pick(rnd, MIX[axis]) for axis in AXES}


def patient_id(index: int, patients: int) -> str:
    return f"pop-{index:0{max(6, len(str(max(patients - 1, 0))))}d}"


def build_patient(seed: int, index: int, pid: str, now: dt.datetime = NOW) -> list[dict]:
    """One synthetic patient's resources (the Patient first) for the situations `plan(seed, index)` draws."""
    p = plan(seed, index)
    rnd = random.Random(f"pacecds-population:{seed}:{index}:data")
    gender = "female" if rnd.random() < 0.6 else "male"
    age = rnd.randrange(8, 18) if p["age"] == "under_18" else rnd.randrange(20, 90)
    birth = (now - dt.timedelta(days=int(365.25 * age) + rnd.randrange(300))).date().isoformat()
    c = Chart(pid, pid, gender, birth, rnd.choice(_FAMILY), rnd.choice(_GIVEN[gender]), now=now)
    if p["record"] == "no_data":
        return [e["resource"] for e in c.entries]
    pain_condition = {"low_back_pain": rnd.choice((CHRONIC_LBP_ICD, CHRONIC_LBP_SCT)),
                      "fibromyalgia": rnd.choice((FIBROMYALGIA_ICD, FIBROMYALGIA_SCT)),
                      "knee_osteoarthritis": KNEE_OA_ICD, "none": None}[p["pain_condition"]]
    if pain_condition:
        c.condition(*pain_condition, onset_days_ago=200 + rnd.randrange(2000))
    base = 500 * rnd.randrange(6, 19)  # usual daily steps, 3000-9000
    _ACTIVITY[p["activity"]](c, rnd, base)
    _GOAL[p["goal"]](c, rnd, base)
    _LABS[p["labs"]](c, rnd, gender)
    _MOOD[p["mood"]](c, rnd)
    _SLEEP[p["sleep"]](c, rnd)
    _MEDS[p["meds"]](c, rnd)
    if p["meds"] in OPIOID_MEDS:
        _OPIOID_CONTEXT[p["opioid_context"]](c, rnd, gender)
    if p["record"] == "invalid":
        _invalid(c, rnd)
    return [e["resource"] for e in c.entries]


# activity (daily steps, pain ratings, exercise minutes); pain usually 2-5/10
def _pain_usual(rnd: random.Random) -> float:
    return float(rnd.choice((2, 3, 3, 4, 4, 5)))


def _act_none(c, rnd, base):
    pass


def _act_steady(c, rnd, base):
    c.steps(steady(base))
    c.pain(flat(_pain_usual(rnd)))


def _act_new_tracker(c, rnd, base):
    days = sorted(rnd.sample(range(1, 15), rnd.randrange(2, 6)))
    c.steps({d: round(base * (0.9 + 0.2 * rnd.random())) for d in days})
    c.pain({d: _pain_usual(rnd) for d in days})


def _act_stale(c, rnd, base):
    start = 16 + rnd.randrange(10)
    c.steps(steady(base, days=range(start, start + 14)))
    c.pain(flat(_pain_usual(rnd), range(start, start + 14)))


def _act_flare(c, rnd, base, severe=False):
    usual = _pain_usual(rnd)
    c.steps(steady(base))
    pain = flat(usual, range(4, 15))
    peak = rnd.choice((8, 8.5, 9)) if severe else rnd.choice((7, 7.5))
    pain.update({1: peak, 2: peak - 0.5, 3: max(peak - 0.5, usual + 3)})
    c.pain(pain)


def _act_boom_bust(c, rnd, base, pain_link=True):
    highs = {14, 12, 10, 8, 6, 4, 2}
    high, low = round(base * 2.2), round(base * 0.45)
    usual = _pain_usual(rnd)
    c.steps({d: (high if d in highs else low) for d in range(1, 15)})
    if pain_link:
        c.pain({d: (usual + 3 if (d + 1) in highs else usual) for d in range(1, 15)})
    else:
        c.pain(flat(usual))


def _act_flare_settling(c, rnd, base):
    steps = steady(base, days=range(6, 41))
    steps.update({5: round(base * 0.75), 4: round(base / 3), 3: round(base * 0.42), 2: round(base / 2),
                  1: round(base * 0.58)})
    c.steps(steps)
    pain = flat(3, range(6, 41))
    pain.update({5: 6, 4: 9, 3: 8, 2: 6.5, 1: 5})
    c.pain(pain)


def _act_step_up_pain(c, rnd, base):
    steps = steady(base, days=range(8, 15))
    steps.update(steady(round(base * 1.16), days=range(1, 8)))
    c.steps(steps)
    pain = flat(3, range(8, 15))
    pain.update(flat(4.5, range(1, 8)))
    c.pain(pain)


def _act_fall_after_new_drug(c, rnd, base):
    steps = steady(base, days=range(11, 29))
    steps.update(steady(round(base * 0.6), days=range(1, 11)))
    c.steps(steps)
    c.pain(flat(_pain_usual(rnd), range(1, 29)))
    c.med_request("cyclobenzaprine10", freq=1, period=1, period_unit="d", authored_days_ago=10)


def _act_wheelchair(c, rnd, base, over_ceiling=False):
    minutes = rnd.choice((20, 25, 30, 40))
    c.series("exercise_minutes", steady(minutes), "min", "min", hour=17)
    c.pain(flat(_pain_usual(rnd)))
    for d in range(1, 15):
        hr = 132 if over_ceiling and d in (1, 2, 4, 6) else 112
        c.obs("heart_rate", hr, "beats/minute", c.day(d, 17, 20), category="vital-signs", ucum_code="/min")
    c.ceiling_goal("heart_rate", 120, "/min", "Keep heart rate below 120/min during exercise")


def _act_flare_entered_in_error(c, rnd, base):
    _act_steady(c, rnd, base)
    for ago in (1, 2, 3):  # wrong-chart entries, marked entered-in-error
        c.obs("pain", 9, "{score}", c.day(ago, 22), status="entered-in-error", ucum_code="{score}")


_ACTIVITY: dict[str, Callable] = {
    "none": _act_none, "steady": _act_steady, "new_tracker": _act_new_tracker, "stale": _act_stale,
    "flare": _act_flare, "severe_flare": lambda c, rnd, base: _act_flare(c, rnd, base, severe=True),
    "boom_bust": _act_boom_bust,
    "variable_no_pain_link": lambda c, rnd, base: _act_boom_bust(c, rnd, base, pain_link=False),
    "flare_settling": _act_flare_settling, "step_up_pain": _act_step_up_pain,
    "fall_after_new_drug": _act_fall_after_new_drug, "wheelchair_minutes": _act_wheelchair,
    "heart_rate_over_ceiling": lambda c, rnd, base: _act_wheelchair(c, rnd, base, over_ceiling=True),
    "flare_entered_in_error": _act_flare_entered_in_error,
}

_GOAL: dict[str, Callable] = {
    "none": lambda c, rnd, base: None,
    "reviewed": lambda c, rnd, base: c.goal(f"Walk {base} steps a day", status_days_ago=rnd.randrange(2, 30),
                                            target=("steps", base), due_days=30),
    "overdue": lambda c, rnd, base: c.goal(f"Walk {base} steps a day", status_days_ago=70 + rnd.randrange(120),
                                           start_days_ago=220, target=("steps", base), due_days=20),
    "not_smart": lambda c, rnd, base: c.goal("Walk more", status_days_ago=rnd.randrange(2, 20),
                                             pacing_category=True),
}


def _labs_recent_jittered(c, rnd, days_ago):
    c.lab("hb", round(12.5 + 3 * rnd.random(), 1), "g/dL", days_ago)
    c.lab("tsh", round(0.8 + 3 * rnd.random(), 1), "m[IU]/L", days_ago)


def _labs_low_hb(c, rnd, gender, severe=False):
    hb = round(6.2 + rnd.random(), 1) if severe else round((10.0 if gender == "female" else 11.0) + rnd.random() * 1.5, 1)
    ago = rnd.randrange(2, 60)
    c.lab("hb", hb, "g/dL", ago)
    c.lab("tsh", 2.0, "m[IU]/L", ago)


def _labs_tsh_eie(c, rnd, gender):
    ago = rnd.randrange(10, 60)
    c.lab("hb", 13.2, "g/dL", ago)
    c.lab("tsh", 8.5, "m[IU]/L", ago, status="entered-in-error")
    c.lab("tsh", 2.1, "m[IU]/L", ago - 1)


_LABS: dict[str, Callable] = {
    "none": lambda c, rnd, gender: None,
    "recent_normal": lambda c, rnd, gender: _labs_recent_jittered(c, rnd, rnd.randrange(5, 300)),
    "old": lambda c, rnd, gender: _labs_recent_jittered(c, rnd, 400 + rnd.randrange(400)),
    "low_hemoglobin": _labs_low_hb,
    "severe_anaemia": lambda c, rnd, gender: _labs_low_hb(c, rnd, gender, severe=True),
    "molar_hemoglobin": lambda c, rnd, gender: (c.lab("hb_molar", round(4.0 + rnd.random() * 0.6, 1), "mmol/L", 5),
                                                c.lab("tsh", 2.0, "m[IU]/L", 5)),
    "low_ferritin": lambda c, rnd, gender: (c.lab("hb", 12.4, "g/dL", 20),
                                            c.lab("ferritin", 8 + rnd.randrange(20), "ug/L", 20),
                                            c.lab("tsh", 2.2, "m[IU]/L", 20)),
    "tsh_high": lambda c, rnd, gender: (c.lab("hb", 13.4, "g/dL", 15),
                                        c.lab("tsh", round(5.5 + 6 * rnd.random(), 1), "m[IU]/L", 15)),
    "tsh_entered_in_error": _labs_tsh_eie,
    "tsh_with_lab_range": lambda c, rnd, gender: (c.lab("hb", 13.0, "g/dL", 15),
                                                  c.lab("tsh", rnd.choice((3.9, 4.3)), "m[IU]/L", 15,
                                                        ref_range=(0.4, 4.0, "m[IU]/L"))),
}


def _mood_item9(c, rnd):
    ago = rnd.randrange(2, 30)
    c.score("phq9", rnd.randrange(6, 20), ago)
    c.obs("phq9_item9", rnd.choice((1, 2, 3)), None, c.day(ago, 10), integer=True)


def _mood_stale_or_eie(c, rnd):
    c.score("phq9", 16, 430)
    c.score("phq9", 5, 400)
    c.score("gad7", 15, 4, status="entered-in-error")
    c.score("gad7", 6, 20)


_MOOD: dict[str, Callable] = {
    "none": lambda c, rnd: None,
    "phq9_normal": lambda c, rnd: c.score("phq9", rnd.randrange(0, 10), rnd.randrange(2, 200)),
    "phq9_positive": lambda c, rnd: c.score("phq9", rnd.randrange(10, 25), rnd.randrange(2, 60)),
    "phq9_item9": _mood_item9,
    "gad7_positive": lambda c, rnd: c.score("gad7", rnd.randrange(10, 20), rnd.randrange(2, 60)),
    "stale_or_entered_in_error": _mood_stale_or_eie,
}


def _sleep_hours(c, rnd, mean, minutes=False):
    values = {d: round(mean + rnd.uniform(-0.4, 0.4), 1) for d in range(1, 15)}
    if minutes:
        c.sleep({d: round(v * 60) for d, v in values.items()}, unit="min", code="min")
    else:
        c.sleep(values)


_SLEEP: dict[str, Callable] = {
    "none": lambda c, rnd: None,
    "normal": lambda c, rnd: _sleep_hours(c, rnd, 7.5),
    "short_hours": lambda c, rnd: _sleep_hours(c, rnd, 5.2),
    "short_minutes": lambda c, rnd: _sleep_hours(c, rnd, 5.6, minutes=True),
    "insomnia": lambda c, rnd: c.score("isi", rnd.randrange(15, 27), rnd.randrange(3, 40)),
    "stop_bang": lambda c, rnd: c.score("stopbang", rnd.randrange(3, 8), rnd.randrange(3, 60)),
    "known_osa": lambda c, rnd: (c.condition(*OSA_ICD), c.score("stopbang", 6, 10)),
}


def _opioid_low(c, rnd):
    if rnd.random() < 0.5:
        c.med_request("tramadol50", freq=rnd.choice((2, 3, 4)), period=1, period_unit="d")
    else:
        c.med_request("oxycodone5", freq=rnd.choice((2, 3)), period=1, period_unit="d")


def _opioid_high(c, rnd):
    c.med_request("oxycodone10", freq=1, period=rnd.choice((4, 6)), period_unit="h")
    if rnd.random() < 0.6:
        c.med_statement("morphine15", freq=rnd.choice((2, 3)), period=1, period_unit="d")


def _meds_combo(c, rnd, second: str, statement=True):
    _opioid_low(c, rnd)
    (c.med_statement if statement else c.med_request)(second, freq=rnd.choice((1, 2, 3)), period=1, period_unit="d")


def _meds_benzo_stopped(c, rnd):
    c.med_request("hydrocodone_apap", freq=2, period=1, period_unit="d")
    c.med_request("lorazepam1", status="stopped", freq=1, period=1, period_unit="d")


def _meds_opioid_eie(c, rnd):
    c.med_request("oxycodone10", status="entered-in-error", freq=4, period=1, period_unit="d")
    c.med_statement("pregabalin75", freq=2, period=1, period_unit="d")


def _meds_sedative_burden(c, rnd):
    c.med_request("cyclobenzaprine10", freq=3, period=1, period_unit="d")
    c.med_statement("zolpidem10", freq=1, period=1, period_unit="d")


def _meds_older_cns(c, rnd):
    c.med_request("amitriptyline25", freq=1, period=1, period_unit="d")
    c.med_request("trazodone50", freq=1, period=1, period_unit="d")
    c.med_statement("zolpidem10", freq=1, period=1, period_unit="d")
    c.med_statement("diphenhydramine25", freq=1, period=1, period_unit="d", prn=True)


_MEDS: dict[str, Callable] = {
    "none": lambda c, rnd: None,
    "opioid_low": _opioid_low,
    "opioid_high_mme": _opioid_high,
    "fentanyl_patch": lambda c, rnd: c.med_request(rnd.choice(("fentanyl25", "fentanyl75")), dose=1, unit="patch",
                                                   freq=1, period=72, period_unit="h"),
    "opioid_not_computable": lambda c, rnd: c.med_request("oxycodone5", dose=None, freq=None, text="Take as directed"),
    "opioid_benzo": lambda c, rnd: _meds_combo(c, rnd, rnd.choice(("alprazolam05", "lorazepam1"))),
    "opioid_gabapentinoid": lambda c, rnd: _meds_combo(c, rnd, rnd.choice(("gabapentin300", "pregabalin75"))),
    "benzo_stopped": _meds_benzo_stopped,
    "opioid_entered_in_error": _meds_opioid_eie,
    "sedative_burden": _meds_sedative_burden,
    "older_adult_cns": _meds_older_cns,
    "single_sedative": lambda c, rnd: c.med_request(rnd.choice(("trazodone50", "amitriptyline25")), freq=1, period=1,
                                                    period_unit="d"),
}


def _ctx_cancer(c, rnd, gender):
    c.condition(*(BREAST_CANCER_ICD if gender == "female" else PROSTATE_CANCER_ICD), onset_days_ago=100 + rnd.randrange(300))


def _ctx_old_benzo_dispensed(c, rnd, gender):
    c.med_request("alprazolam05", freq=2, period=1, period_unit="d", authored_days_ago=1095)
    c.med_dispense("alprazolam05", rnd.randrange(3, 20), 30, quantity=60)


_OPIOID_CONTEXT: dict[str, Callable] = {
    "plain": lambda c, rnd, gender: None,
    "naloxone_on_file": lambda c, rnd, gender: c.med_dispense("naloxone_nasal", rnd.randrange(10, 300), None, quantity=2),
    "cancer": _ctx_cancer,
    "hospice": lambda c, rnd, gender: c.service_request(*HOSPICE_SCT, rnd.randrange(5, 80)),
    "hospice_old": lambda c, rnd, gender: c.service_request(*HOSPICE_SCT, 150 + rnd.randrange(200)),
    "old_benzo_dispensed": _ctx_old_benzo_dispensed,
}


def _invalid(c: Chart, rnd: random.Random) -> None:
    """One pain rating that is not valid FHIR R4 (a facts-read resource), as a faulty interface might send."""
    r = c.obs("pain", 5, "{score}", c.day(1, 21), ucum_code="{score}")
    if rnd.random() < 0.5:
        r["valueQuantity"]["value"] = "moderate"  # a decimal must be a number
    else:
        r["effectiveDateTime"] = "yesterday evening"  # not a FHIR dateTime


# --- writing the export -----------------------------------------------------------------------------------------

class _TypeFiles:
    """The NDJSON file(s) of one resource type: lines go round-robin over `count` files, buffered."""

    def __init__(self, out_dir: Path, rtype: str, count: int, gzip: bool):
        suffix = ".ndjson.gz" if gzip else ".ndjson"
        self.names = [f"{rtype}{suffix}"] if count == 1 else [f"{rtype}.{i}{suffix}" for i in range(1, count + 1)]
        self.out_dir, self.gzip = out_dir, gzip
        self.handles: list[Any] = [None] * count
        self.buffers: list[list[bytes]] = [[] for _ in range(count)]
        self.counts = [0] * count
        self.n = 0

    def write(self, resource: dict) -> None:
        i = self.n % len(self.names)
        self.n += 1
        self.counts[i] += 1
        self.buffers[i].append(orjson.dumps(resource) + b"\n")
        if len(self.buffers[i]) >= 4096:
            self._flush(i)

    def _flush(self, i: int) -> None:
        if self.handles[i] is None:
            raw = open(self.out_dir / self.names[i], "wb")
            # no file name and a zero mtime in the gzip header: the same arguments give the same bytes
            self.handles[i] = (gzip_module.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
                               if self.gzip else raw)
        self.handles[i].write(b"".join(self.buffers[i]))
        self.buffers[i].clear()

    def close(self) -> list[tuple[str, int]]:
        written = []
        for i, name in enumerate(self.names):
            if self.counts[i]:
                self._flush(i)
                handle = self.handles[i]
                raw = handle.fileobj if self.gzip else None
                handle.close()
                if raw is not None:
                    raw.close()
                written.append((name, self.counts[i]))
        return written


def write_export(out_dir: Path, patients: int, seed: int = 0, *, files_per_type: int = 1, gzip: bool = False,
                 now: dt.datetime | None = None) -> dict:
    """Write a FHIR Bulk Data export of `patients` synthetic patients to `out_dir`; return its manifest.

    Deterministic: the same arguments give byte-identical files. The manifest (`manifest.json`) has the shape of
    the `$export` completion response, with file urls relative to `out_dir`.
    """
    if patients < 0:
        raise ValueError("patients must be 0 or more")
    if files_per_type < 1:
        raise ValueError("files_per_type must be 1 or more")
    now = NOW if now is None else now
    if now.tzinfo is None:
        raise ValueError("now must have a time zone")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # files of an earlier export left beside this one would be read as part of it
    stale = sorted(p.name for p in out_dir.iterdir() if p.name == "manifest.json" or ".ndjson" in p.name)
    if stale:
        raise ValueError(f"{out_dir} already holds an export ({', '.join(stale[:3])}...): give an empty directory")
    files: dict[str, _TypeFiles] = {}
    for index in range(patients):
        for resource in build_patient(seed, index, patient_id(index, patients), now):
            rtype = resource["resourceType"]
            if rtype not in files:
                files[rtype] = _TypeFiles(out_dir, rtype, files_per_type, gzip)
            files[rtype].write(resource)
    output = []
    for rtype in sorted(files):
        for name, count in files[rtype].close():
            output.append({"type": rtype, "url": name, "count": count})
    types = ",".join(sorted(files))
    manifest = {
        "transactionTime": iso(now.astimezone(dt.timezone.utc)),
        "request": f"urn:pacecds:generate-export?patients={patients}&seed={seed}&_type={types}",
        "requiresAccessToken": False,
        "output": output,
        "error": [],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
