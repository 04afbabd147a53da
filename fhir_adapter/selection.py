"""Which resources the facts of a hook can read, decided before anything is validated.

Most of a chart (years of vitals, activity, unrelated labs) is data no rule reads; validating it
with fhir.resources would be most of the cost of an evaluation. The engine gives this module the
fact definitions of a hook; it answers, per resource, whether any of them could read it.
"""

from __future__ import annotations

from .valuesets import MEMO_MAX_CHARS, code_key

# Resource types whose facts pick resources by one coded field, and the fact kinds that do so.
_CODED_FIELD = {"Observation": "code", "Condition": "code", "MedicationRequest": "medicationCodeableConcept",
                "MedicationStatement": "medicationCodeableConcept", "MedicationDispense": "medicationCodeableConcept",
                "Procedure": "code", "ServiceRequest": "code"}
_CODED_KINDS = {"Observation": {"observation", "daily_series", "series_pair", "record", "pacing"},
                "Condition": {"condition", "record"},
                "MedicationRequest": {"medication", "medication_classes", "opioid_mme", "pacing"},
                "MedicationStatement": {"medication", "medication_classes", "opioid_mme", "pacing"},
                "MedicationDispense": {"medication", "medication_classes", "opioid_mme"},
                "Procedure": {"record"}, "ServiceRequest": {"record"}}

# (series_pair, medication_classes and opioid_mme carry the union of the codes they read in FactDefinition.codes)


SELECTOR_MEMO_MAX = 16_384  # (type, system, code) answers kept per selector (docs/caches.md)


class ResourceSelector:
    """needed(resource): False only for a resource that no fact of the hook can read.

    Validating with fhir.resources costs ~100 us per Observation and is most of a cold evaluation,
    while most of a chart (years of vitals, activity, unrelated labs) is data no rule reads. So a
    resource is skipped before validation when its code matches none of the codes (codes and value
    sets) of the facts that pick resources of its type by code; `FactDefinition.matches` is this
    same set test, so no skipped resource can reach a fact. Conservative everywhere else: a fact
    kind not listed in _CODED_KINDS makes every resource of its types needed, and a malformed or
    uncoded field (a medicationReference, a component) is validated, so bad input is still refused.
    """

    def __init__(self, definitions):
        self.all_types: set[str] = set()
        self.codes: dict[str, set] = {}
        for d in definitions:
            for rtype in d.resource_types:
                if d.kind in _CODED_KINDS.get(rtype, ()):
                    self.codes.setdefault(rtype, set()).update(_codeset(d))
                else:
                    self.all_types.add(rtype)
        self.codes = {t: frozenset(k) for t, k in self.codes.items() if t not in self.all_types}
        # (type, system, code) as sent -> read by some fact; normalising every coding of every resource was
        # the largest cost of a warm evaluation. Bounded: cleared when full (codes in use are few).
        self._memo: dict[tuple, bool] = {}

    def __call__(self, resource: dict) -> bool:
        rtype = resource.get("resourceType")
        keys = self.codes.get(rtype)
        if keys is None:
            return True
        if rtype == "Observation" and "component" in resource:
            return True
        codeable = resource.get(_CODED_FIELD[rtype])
        if not isinstance(codeable, dict):
            return True  # absent (e.g. medicationReference) or malformed: let validation decide
        coding = codeable.get("coding", [])
        if not isinstance(coding, list):
            return True
        for c in coding:
            if not isinstance(c, dict):
                return True
            system, code = c.get("system"), c.get("code")
            if not isinstance(system, (str, type(None))) or not isinstance(code, (str, type(None))):
                return True
            sc = (rtype, system, code)
            hit = self._memo.get(sc)
            if hit is None:
                key = code_key(system, code)
                hit = key is not None and key in keys
                if len(self._memo) >= SELECTOR_MEMO_MAX:
                    self._memo.clear()
                if len(system or "") + len(code or "") <= MEMO_MAX_CHARS:
                    self._memo[sc] = hit
            if hit:
                return True
        return False


def _codeset(definition) -> frozenset:
    """Every normalised (system, code) a coded fact reads: its own (codes, value set) and its inputs'."""
    codes = definition.match_keys
    for other in definition.inputs:  # series_pair reads two daily series
        codes |= _codeset(other)
    return codes
