"""One evaluation for the workbench: the engine's cards, shadow-rule cards (previewed, never sent), the
explanation of every rule and the pacing chart."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from engine.ruleset import HOOKS, parse_now
from fhir_adapter import InputError, pool_request

from .chart import PacingChart, build_chart

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "tests" / "examples"


@dataclass
class Example:
    key: str  # the patient file's name, the form's value
    name: str
    path: Path
    now: str | None
    fires: list[str] = field(default_factory=list)
    hook: str | None = None


def load_examples(examples_dir: Path = EXAMPLES_DIR) -> list[Example]:
    """The bundled example patients (tests/examples/cases.yaml) of a source checkout; none when installed."""
    cases_file = examples_dir / "cases.yaml"
    if not cases_file.is_file():
        return []
    cases = (yaml.safe_load(cases_file.read_text(encoding="utf-8")) or {}).get("cases") or []
    out: dict[str, Example] = {}
    for case in cases:
        rel = case.get("input")
        if not isinstance(rel, str):
            continue
        path = (examples_dir / rel).resolve()
        if not path.is_file() or examples_dir.resolve() not in path.parents:
            continue
        key = f"{case.get('hook') or ''}|{rel}|{case.get('now') or ''}"
        if key in out:
            continue
        out[key] = Example(key, str(case.get("name") or rel), path, case.get("now"),
                           list(case.get("fires") or []), case.get("hook"))
    return list(out.values())


class WorkbenchError(Exception):
    pass


@dataclass
class Outcome:
    result: object
    explanation: dict
    cards: list[dict]
    shadow_cards: list[dict]
    chart: PacingChart | None
    patient_name: str | None
    rules: dict  # id -> Rule


def parse_input(text: str) -> dict:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise WorkbenchError(f"The input is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise WorkbenchError("The input must be a JSON object: a CDS Hooks request or a FHIR Bundle.")
    return doc


def parse_when(text: str | None) -> dt.datetime | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return parse_now(text)
    except ValueError as e:
        raise WorkbenchError(str(e)) from None


def evaluate(ruleset, doc: dict, hook: str | None, now: dt.datetime | None) -> Outcome:
    if hook and hook not in HOOKS:
        raise WorkbenchError(f"Unknown hook {hook!r}")
    try:
        data = pool_request(doc, hook=hook or None)
        # the pooled medications (identity already applied), kept before validation narrows the pool to what the
        # hook's facts read: the chart marks their starts and stops
        medications = [r for t in ("MedicationRequest", "MedicationStatement") for r in data.of_type(t)]
        result = ruleset.evaluate(data, now=now, hook=hook or None)
    except InputError as e:
        raise WorkbenchError(f"The input cannot be evaluated: {e}") from None
    explanation = ruleset.explain_result(result)
    return Outcome(result, explanation, list(result.cards), ruleset.shadow_cards(result),
                   build_chart(ruleset, data, result, medications), _patient_name(data), {r.id: r for r in ruleset.rules})


def _patient_name(data) -> str | None:
    patient = data.patient
    if not isinstance(patient, dict):
        return None
    for name in patient.get("name") or []:
        if isinstance(name, dict):
            text = name.get("text") or " ".join(
                [*(str(g) for g in name.get("given") or []), str(name.get("family") or "")]).strip()
            if text:
                return str(text)
    return None
