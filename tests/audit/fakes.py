"""A stand-in with the shape of engine.EvaluationResult (see the team contract)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass
class FiredRule:
    rule_id: str
    rule_version: str
    status: str = "active"
    facts: dict = field(default_factory=dict)


@dataclass
class Ruleset:
    name: str = "pacecds-msk"
    version: str = "1.2.0"
    sha256: str = "ab" * 32


@dataclass
class EvaluationResult:
    cards: list
    fired: list
    evaluated: list
    shadow: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    patient_id: str | None = "pat-1"


def card(rule_id: str, version: str = "1.0.0", summary: str = "Consider pacing", indicator: str = "info") -> dict:
    return {
        "uuid": str(uuid.uuid4()),
        "summary": summary,
        "indicator": indicator,
        "detail": "Long **markdown** detail that the log does not need",
        "source": {"label": "pacecds"},
        "extension": {"pacecds.rule": {"id": rule_id, "version": version},
                      "pacecds.ruleset": {"version": "1.2.0", "sha256": "ab" * 32}},
    }


def result(patient_id: str = "pat-1") -> EvaluationResult:
    c = card("pacing.boom-bust")
    return EvaluationResult(
        cards=[c],
        fired=[FiredRule("pacing.boom-bust", "1.0.0", facts={
            "daily_steps_cv": {"value": 0.62, "unit": "1", "provenance": ["Observation/steps-1", "Observation/steps-2"]}})],
        evaluated=[("pacing.boom-bust", "1.0.0"), ("comorbidity.anaemia", "2.1.0"), ("meds.sedating", "1.0.0")],
        shadow=[FiredRule("pacing.new-draft", "0.1.0", status="draft",
                          facts={"pain_score": {"value": 7, "unit": "{score}", "provenance": ["Observation/pain-1"]}})],
        missing=["hemoglobin"],
        patient_id=patient_id,
    )
