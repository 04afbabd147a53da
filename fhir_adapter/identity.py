"""Patient identity: is this resource about the patient being evaluated?

The one place that decides it, for the service's prefetch and fetch, for a Bundle given to the
command line, and so for every fact. Strict: a resource that is not clearly about this patient is
not used, and the reason is kept so `explain` and the audit record can say why.

Clearly about the patient:
  - the Patient resource whose id is the patient's id;
  - a resource whose `subject` (or `patient`) reference names Patient/{id}, a version of it
    (Patient/{id}/_history/{v}), or {fhirServer}/Patient/{id} on the server the request named.
About another patient (dropped, counted): a reference that names another Patient id.
Not clear (not used, with a reason): no subject at all, a subject given only by identifier or
display text, a contained or urn:uuid reference, an absolute URL on another server, a reference
to something other than a Patient (e.g. a Group), or no patient id known for the evaluation.
Resources outside the patient's record (Medication, Practitioner, Organization, ...) are about no
one and are kept as shared reference data.
"""
from __future__ import annotations

import re

THIS, OTHER, UNCLEAR, SHARED = "this", "other", "unclear", "shared"

# Resource types of the FHIR R4 Patient compartment that our facts read or that an EHR commonly
# sends in prefetch; a resource of one of these types is always about some patient.
PATIENT_DATA_TYPES = frozenset({
    "AllergyIntolerance", "CarePlan", "CareTeam", "ClinicalImpression", "Condition", "Consent", "Coverage",
    "DetectedIssue", "DeviceRequest", "DeviceUseStatement", "DiagnosticReport", "DocumentReference",
    "Encounter", "EpisodeOfCare", "FamilyMemberHistory", "Flag", "Goal", "ImagingStudy", "Immunization",
    "MedicationAdministration", "MedicationDispense", "MedicationRequest", "MedicationStatement",
    "NutritionOrder", "Observation", "Procedure", "QuestionnaireResponse", "RiskAssessment",
    "ServiceRequest", "Specimen", "VisionPrescription",
})
_SUBJECT_MEMBERS = ("subject", "patient")
# [base/]Patient/{id}[/_history/{version}]; FHIR ids are [A-Za-z0-9\-\.]{1,64}
_PATIENT_REFERENCE = re.compile(r"^(?:(?P<base>https?://.+?)/)?Patient/(?P<id>[A-Za-z0-9\-.]{1,64})"
                                r"(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


def _base(url: str | None) -> str | None:
    return url.rstrip("/") if isinstance(url, str) and url else None


class PatientIdentity:
    """The identity test for one evaluation: `verdict(resource)` -> (THIS | OTHER | UNCLEAR | SHARED, reason)."""

    def __init__(self, patient_id: str | None, fhir_server: str | None = None):
        self.patient_id = patient_id if isinstance(patient_id, str) and patient_id else None
        self.server = _base(fhir_server)
        self._local = f"Patient/{self.patient_id}"  # the usual form, answered without a regex

    def verdict(self, resource: dict) -> tuple[str, str]:
        rtype = resource.get("resourceType")
        if rtype == "Patient":
            pid = resource.get("id")
            if self.patient_id is None:
                return UNCLEAR, "the evaluation names no patient"
            return (THIS, "") if pid == self.patient_id else (OTHER, "another patient")
        if rtype not in PATIENT_DATA_TYPES:
            return SHARED, ""
        for member in _SUBJECT_MEMBERS:
            ref = resource.get(member)
            if ref is not None:
                return self._reference_verdict(ref, member)
        return UNCLEAR, "it names no subject (patient)"

    def _reference_verdict(self, ref, member: str) -> tuple[str, str]:
        if not isinstance(ref, dict):
            return UNCLEAR, f"its {member} is not a reference"
        text = ref.get("reference")
        if not isinstance(text, str) or not text:
            if ref.get("identifier") is not None:
                return UNCLEAR, f"its {member} is given only by identifier"
            if ref.get("display") is not None:
                return UNCLEAR, f"its {member} is given only by display text"
            return UNCLEAR, f"its {member} has no reference"
        if self.patient_id is None:
            return UNCLEAR, "the evaluation names no patient"
        if text == self._local:
            return THIS, ""
        m = _PATIENT_REFERENCE.match(text)
        if m is None:
            return UNCLEAR, f"its {member} reference is not a Patient reference this service can resolve"
        base = _base(m.group("base"))
        if base is not None and base != self.server:
            return UNCLEAR, f"its {member} is a Patient on another server"
        return (THIS, "") if m.group("id") == self.patient_id else (OTHER, "another patient")


# Coverage names its patient as `beneficiary`; routing reads it, the strict verdict above does not (yet)
_ROUTING_MEMBERS = ("subject", "patient", "beneficiary")


def patient_key(resource: dict) -> str | None:
    """The Patient id a resource is filed under in a population export, for grouping a patient's resources
    (Patient.id, or the id its subject/patient/beneficiary reference names); None when it names none.
    Routing only: the pooled resources still go through `PatientIdentity.verdict`, which decides strictly."""
    if resource.get("resourceType") == "Patient":
        pid = resource.get("id")
        return pid if isinstance(pid, str) and pid else None
    for member in _ROUTING_MEMBERS:
        ref = resource.get(member)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            m = _PATIENT_REFERENCE.match(ref["reference"])
            return m.group("id") if m else None
    return None
