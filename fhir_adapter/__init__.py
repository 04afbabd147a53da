"""FHIR R4 in -> pooled (patient identity checked) -> validated resources -> named facts with units and provenance."""

from .pooling import InputError, PatientData, Pool, pool_request
from .resources import ResourceValidator

__all__ = ["InputError", "PatientData", "Pool", "ResourceValidator", "pool_request"]
