"""Small helpers on FHIR CodeableConcepts shared by facts and mme (so neither imports the other)."""
from __future__ import annotations


def codeable_name(codeable: dict | None) -> str:
    """A CodeableConcept's name for people: its text, else the first coding's display, else its first code."""
    codeable = codeable or {}
    if codeable.get("text"):
        return codeable["text"]
    for coding in codeable.get("coding") or []:
        if coding.get("display"):
            return coding["display"]
    for coding in codeable.get("coding") or []:
        if coding.get("code"):
            return coding["code"]
    return "unnamed"
