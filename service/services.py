"""The CDS services pacecds offers, and their prefetch templates built from what the rules read.

One entry per (service id, hook). The order-safety service serves two hooks under one id (CDS Hooks allows it,
"update stale guidance"), so routing is always on (id, hook), never on id alone.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from fhir_adapter.facts import GOAL_ANY_STATUS

SUPPORTED_HOOKS = ("patient-view", "order-select", "order-sign")

# Codes per search beyond this length are dropped from the template (the search then asks for every
# resource of the type): a URL much longer than a few kB is refused by common FHIR servers and proxies.
MAX_CODE_PARAM_CHARS = 1800

# Search parameters per resource type: the patient reference and the filter that keeps only current data.
_SEARCH = {
    "Condition": ("patient", "clinical-status=active,recurrence,relapse"),
    "Observation": ("patient", None),
    "MedicationRequest": ("patient", "status=active"),
    "MedicationStatement": ("patient", "status=active,intended"),  # as the medication facts count them
    "AllergyIntolerance": ("patient", "clinical-status=active"),
    "Procedure": ("patient", None),
    "Encounter": ("patient", None),
    "ServiceRequest": ("patient", "status=active"),
    # every goal status a fact reads: open goals (a Goal created from a card's suggestion starts as 'proposed')
    # and completed ones (pacing: the level a completed goal agreed, and a step up to a newer, higher goal);
    # cancelled, entered-in-error and rejected goals are never asked for
    "Goal": ("patient", "lifecycle-status=" + ",".join(sorted(GOAL_ANY_STATUS))),
}
# Search keys by type (what an integrator reads in discovery).
_KEY = {
    "Condition": "conditions", "Observation": "observations", "MedicationRequest": "medications",
    "MedicationStatement": "medicationStatements", "AllergyIntolerance": "allergies",
    "Procedure": "procedures", "Encounter": "encounters", "ServiceRequest": "serviceRequests", "Goal": "goals",
}
# Types whose date parameter bounds the search to a look-back window.
_DATE_PARAM = {"Observation": "date"}


@dataclass(frozen=True)
class PrefetchSpec:
    key: str
    template: str
    resource_type: str
    required: bool = False


@dataclass
class ServiceDef:
    id: str
    hook: str
    title: str
    description: str
    prefetch: list[PrefetchSpec] = field(default_factory=list)

    def discovery_entry(self, usage: str | None) -> dict:
        entry = {"hook": self.hook, "id": self.id, "title": self.title, "description": self.description}
        if self.prefetch:
            entry["prefetch"] = {p.key: p.template for p in self.prefetch}
        if usage:
            entry["usageRequirements"] = usage
        return entry


_DEFS = [
    ("pacing-review", "patient-view", "Pacing review and comorbidity screen",
     "Reviews activity pacing (daily steps, activity variability, pain trend) and screens for energy-draining "
     "comorbidities (for example anaemia, thyroid dysfunction) in adults with chronic musculoskeletal pain."),
    ("sedating-medication-safety", "order-select", "Sedating medication safety",
     "Checks a sedating medication being selected (opioids, gabapentinoids, benzodiazepines, sedating "
     "antidepressants) against the patient's other active sedating medications and relevant conditions."),
    ("sedating-medication-safety", "order-sign", "Sedating medication safety",
     "Checks sedating medications about to be signed against the patient's other active sedating medications "
     "and relevant conditions."),
]


def build_prefetch(requirements: list[dict], lookback_days: int, today: dt.date | None = None) -> list[PrefetchSpec]:
    """Prefetch templates asking only for what the rules read.

    `requirements` is ruleset.data_requirements(hook): [{"resourceType", "codes": ["system|code"]}].
    The patient is always needed (it anchors age/sex facts and patient isolation) and is the only required key.
    Dates: CDS Hooks 2.0 templates have no date token, so the look-back start is written as a literal date
    computed when discovery is served; a client that caches discovery gets a longer window, never a shorter one.
    """
    today = today or dt.datetime.now(dt.timezone.utc).date()
    specs = [PrefetchSpec("patient", "Patient/{{context.patientId}}", "Patient", required=True)]
    by_type: dict[str, set[str] | None] = {}
    for req in requirements or []:
        rtype = req.get("resourceType")
        if not isinstance(rtype, str) or rtype == "Patient":
            continue
        codes = req.get("codes")
        if rtype in by_type and by_type[rtype] is None:
            continue
        if not codes:
            by_type[rtype] = None  # some rule reads every resource of this type
        else:
            by_type.setdefault(rtype, set()).update(codes)
    for rtype in sorted(by_type):
        codes = by_type[rtype]
        patient_param, status_filter = _SEARCH.get(rtype, ("patient", None))
        params = [f"{patient_param}={{{{context.patientId}}}}"]
        if status_filter:
            params.append(status_filter)
        if codes:
            code_param = ",".join(quote(c, safe="|:/.-_") for c in sorted(codes))
            if len(code_param) <= MAX_CODE_PARAM_CHARS:
                params.append(f"code={code_param}")
        if rtype in _DATE_PARAM:
            start = today - dt.timedelta(days=lookback_days)
            params.append(f"{_DATE_PARAM[rtype]}=ge{start.isoformat()}")
        key = _KEY.get(rtype) or (rtype[0].lower() + rtype[1:] + "s")
        specs.append(PrefetchSpec(key, f"{rtype}?{'&'.join(params)}", rtype))
    return specs


def build_services(ruleset, lookback_days: int, today: dt.date | None = None) -> list[ServiceDef]:
    out = []
    for sid, hook, title, desc in _DEFS:
        reqs = ruleset.data_requirements(hook) if ruleset is not None else []
        out.append(ServiceDef(sid, hook, title, desc, build_prefetch(reqs, lookback_days, today)))
    return out


# --------------------------------------------------------------------------- template expansion (D10)

TOKEN_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class UnexpandableTemplate(Exception):
    pass


def expand(template: str, context: dict) -> str:
    """Expand prefetch tokens as a CDS client would; values are URL-encoded.

    Raises UnexpandableTemplate when a token has no value (e.g. userPractitionerRoleId for a Practitioner
    user): the data is then unavailable, never fetched with a hole in the URL.
    """
    def sub(m: re.Match) -> str:
        token = m.group(1)
        if token.startswith("context."):
            value = context.get(token[len("context."):])
            if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
                raise UnexpandableTemplate(token)
            return quote(str(value), safe="")
        if token in _USER_TOKENS:
            user = context.get("userId")
            rtype, _, rid = user.partition("/") if isinstance(user, str) else ("", "", "")
            if rtype != _USER_TOKENS[token] or not rid:
                raise UnexpandableTemplate(token)
            return quote(rid, safe="")
        raise UnexpandableTemplate(token)

    return TOKEN_RE.sub(sub, template)
