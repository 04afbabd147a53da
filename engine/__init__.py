"""pacecds engine: rules in YAML, compiled once into durable-rules, evaluated per patient."""

# First: on an unsupported Python, exit with a clear message before durable-rules fails to import.
from . import pyversion  # noqa: F401

# isort: split
from fhir_adapter import InputError

from .loader import RulesetLoadError
from .ruleset import EvaluationResult, FiredRule, Ruleset, load_ruleset

__all__ = ["InputError", "RulesetLoadError", "EvaluationResult", "FiredRule", "Ruleset", "load_ruleset"]
