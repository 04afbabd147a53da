"""pacecds engine: rules in YAML, compiled once into durable-rules, evaluated per patient."""

from fhir_adapter import InputError

from .loader import RulesetLoadError
from .ruleset import EvaluationResult, FiredRule, Ruleset, load_ruleset

__all__ = ["InputError", "RulesetLoadError", "EvaluationResult", "FiredRule", "Ruleset", "load_ruleset"]
