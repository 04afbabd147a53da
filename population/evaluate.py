"""One patient of a population, evaluated by one or two rule releases at a fixed time.

Both engines (population.local, population.spark) call `PatientEvaluator.evaluate` with a patient's
resources in the same order, so they give the same row. A patient that cannot be evaluated gets its
reason in the row (per release); it never stops the run.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from engine.loader import load_tree
from engine.ruleset import HOOKS, Ruleset, load_ruleset
from fhir_adapter import InputError, Pool
from governance.diff import DiffError, materialise

from .export import ExportError, shared_references

SINGLE, SERVING, CANDIDATE = "release", "serving", "candidate"
ERROR_MAX_CHARS = 300


@dataclass(frozen=True)
class ReleaseSpec:
    """A release to evaluate: its label in the rows and a rules directory on disk (git revisions materialised)."""

    label: str
    path: str


def materialise_releases(rules: str, baseline: str | None, workdir: Path) -> list[ReleaseSpec]:
    """The releases of a run: `rules` alone ("release"), or `baseline` ("serving") and `rules` ("candidate").
    Each is a directory or git:REV[:PATH], read as `pacecds diff` reads it."""
    specs = [(SERVING, baseline), (CANDIDATE, rules)] if baseline else [(SINGLE, rules)]
    out = []
    for label, spec in specs:
        try:
            path = materialise(spec, workdir / label)
        except DiffError as exc:
            raise ExportError(str(exc)) from None
        out.append(ReleaseSpec(label, str(Path(path).resolve())))
    return out


def release_metadata(specs: list[ReleaseSpec]) -> list[dict]:
    """Name, version, sha256 and rules of each release (loaded and checked, not compiled: RulesetLoadError
    here, before any worker starts)."""
    out = []
    for spec in specs:
        tree = load_tree(spec.path)
        out.append({"label": spec.label, "name": tree.name, "version": tree.version, "sha256": tree.sha256,
                    "rules": [{"id": r.id, "version": r.version, "status": r.status, "hooks": list(r.hooks)}
                              for r in tree.rules]})
    return out


def check_hook(hook: str) -> str:
    if hook not in HOOKS:
        raise ExportError(f"hook '{hook}' is not served (served: {', '.join(HOOKS)})")
    return hook


class PatientEvaluator:
    """The compiled releases of a run; one per worker process (compiling costs about a second)."""

    def __init__(self, specs: list[ReleaseSpec], hook: str, now: dt.datetime, shared: dict[str, bytes] | None = None):
        self.hook = check_hook(hook)
        self.now = now
        self.releases: list[tuple[str, Ruleset]] = [(s.label, load_ruleset(s.path)) for s in specs]
        self.shared = shared or {}

    def evaluate(self, patient_id: str, records: Iterable[tuple[str, bytes]]) -> dict:
        """The row of one patient: records are (where, resource JSON) in the input's order."""
        results: dict[str, dict] = {}
        pool = Pool(patient_id)
        try:
            referenced: set[str] = set()
            for where, body in records:
                resource = orjson.loads(body)
                pool.add(resource, where)
                referenced.update(shared_references(resource))
            for ref in sorted(referenced):  # reference data (Medication) this patient's resources name
                shared = self.shared.get(ref)
                if shared is not None:
                    pool.add(orjson.loads(shared), f"shared {ref}")
        except Exception as exc:  # the same reason for every release: none of them saw this patient
            reason = error_reason(exc)
            return {"patient": patient_id,
                    "results": {label: {"cards": [], "error": reason} for label, _ in self.releases}}
        for label, ruleset in self.releases:
            results[label] = self._one(ruleset, pool)
        return {"patient": patient_id, "results": results}

    def _one(self, ruleset: Ruleset, pool: Pool) -> dict:
        try:
            # a fresh PatientData per release: validation narrows it, and facts memoise on it
            result = ruleset.evaluate(pool.patient_data(hook=self.hook), now=self.now, hook=self.hook)
            cards = [_card(fired, card, draft=False) for fired, card in zip(result.fired, result.cards)]
            # shadow_cards gives one card per result.shadow entry, in order (every fired draft is a rule of the tree)
            cards += [_card(fired, card, draft=True) for fired, card in zip(result.shadow, ruleset.shadow_cards(result))]
        except Exception as exc:
            return {"cards": [], "error": error_reason(exc)}
        return {"cards": cards, "error": None}


def _card(fired, card: dict, *, draft: bool) -> dict:
    return {"rule_id": fired.rule_id, "rule_version": fired.rule_version, "indicator": card.get("indicator"),
            "summary": card.get("summary"), "draft": draft}


def error_reason(exc: BaseException) -> str:
    """One line: an input problem as the engine words it; anything else named as an internal error."""
    text = str(exc) if isinstance(exc, (InputError, ValueError)) else f"internal error: {type(exc).__name__}: {exc}"
    line = " ".join(text.split()) or type(exc).__name__
    return line if len(line) <= ERROR_MAX_CHARS else line[: ERROR_MAX_CHARS - 3] + "..."
