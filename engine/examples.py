"""Example patients: each case names the rules that must fire and must not fire."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from fhir_adapter import InputError

from .loader import RulesetLoadError, schema_validator
from .ruleset import parse_now
from .yamlpos import YamlError, load_yaml


@dataclass
class CaseOutcome:
    name: str
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def load_cases(path: Path) -> list[dict]:
    try:
        doc = load_yaml(str(path), path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesetLoadError([f"{path}: cannot read examples: {exc.strerror}"]) from None
    except YamlError as exc:
        raise RulesetLoadError([str(exc)]) from None
    errors = [
        f"{doc.position(tuple(e.absolute_path))}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in schema_validator("cases.schema.json").iter_errors(doc.data)
    ]
    if errors:
        raise RulesetLoadError(errors)
    return doc.data["cases"]


def run_examples(ruleset, cases_file: Path) -> list[CaseOutcome]:
    known = {r.id for r in ruleset.rules}
    outcomes = []
    for case in load_cases(cases_file):
        outcome = CaseOutcome(case["name"])
        outcomes.append(outcome)
        for rule_id in case.get("fires", []) + case.get("does_not_fire", []):
            if rule_id not in known:
                outcome.problems.append(f"unknown rule id '{rule_id}'")
        try:
            request = orjson.loads((cases_file.parent / case["input"]).read_bytes())
            result = ruleset.evaluate(request, now=parse_now(case["now"]), hook=case.get("hook"))
        except (OSError, orjson.JSONDecodeError, InputError) as exc:
            outcome.problems.append(f"cannot evaluate {case['input']}: {exc}")
            continue
        cards = {c["extension"]["pacecds.rule"]["id"]: c for c in result.cards}
        shadow = {f.rule_id for f in result.shadow}
        fired = set(cards) | shadow  # draft rules are tested by their shadow results
        for rule_id in case.get("fires", []):
            if rule_id not in fired:
                outcome.problems.append(f"expected {rule_id} to fire; it did not")
        for rule_id in case.get("does_not_fire", []):
            if rule_id in fired:
                outcome.problems.append(f"expected {rule_id} not to fire; it fired")
        for rule_id, indicator in case.get("indicators", {}).items():
            if rule_id in cards and cards[rule_id]["indicator"] != indicator:
                outcome.problems.append(f"{rule_id}: indicator {cards[rule_id]['indicator']}, expected {indicator}")
        for rule_id, text in case.get("summary_contains", {}).items():
            if rule_id in cards and text not in cards[rule_id]["summary"]:
                outcome.problems.append(f"{rule_id}: summary {cards[rule_id]['summary']!r} lacks {text!r}")
        for rule_id, texts in case.get("detail_contains", {}).items():
            detail = cards[rule_id].get("detail", "") if rule_id in cards else ""
            outcome.problems += [f"{rule_id}: detail lacks {t!r}" for t in texts if rule_id in cards and t not in detail]
        for rule_id, texts in case.get("detail_lacks", {}).items():
            detail = cards[rule_id].get("detail", "") if rule_id in cards else ""
            outcome.problems += [f"{rule_id}: detail contains {t!r}" for t in texts if t in detail]
        for rule_id, labels in case.get("suggestions", {}).items():
            if rule_id in cards:
                offered = [s["label"] for s in cards[rule_id].get("suggestions", [])]
                if offered != labels:
                    outcome.problems.append(f"{rule_id}: suggestions {offered}, expected {labels}")
    return outcomes
