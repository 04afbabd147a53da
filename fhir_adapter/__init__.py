"""FHIR R4 in -> validated resources -> named facts with units and provenance."""

from .resources import InputError, PatientData, ResourceValidator, pool_request

__all__ = ["InputError", "PatientData", "ResourceValidator", "pool_request"]
