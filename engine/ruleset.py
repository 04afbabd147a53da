"""A compiled ruleset: load once, evaluate many patients.

evaluate() is the one path from input to cards for the server, the CLI and the tests:
pool resources -> validate what facts need -> derive facts -> one durable-rules session
per evaluation -> cards for fired active rules; draft rules run in shadow mode.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from fhir_adapter import InputError, PatientData, ResourceValidator, pool_request
from fhir_adapter.derive import derive_facts
from fhir_adapter.facts import Fact, is_number
from fhir_adapter.selection import ResourceSelector

from . import conditions
from .cards import CardMaker, make_lookup
from .durable_backend import CompiledRules
from .loader import LoadedTree, Rule, load_tree

HOOKS = ("patient-view", "order-select", "order-sign")
# kinds whose absence is missing data (a lab never drawn), not a negative finding
MEASURED_KINDS = {"observation", "daily_series", "patient"}
STATE_KINDS = {"pacing"}  # facts whose values explain shows in full



def parse_now(text: str | None) -> dt.datetime | None:
    """An evaluation time from ISO 8601 text (a date, or a date-time; UTC when no offset is given)."""
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{text}' is not an ISO 8601 date or date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)

@dataclass
class FiredRule:
    rule_id: str
    rule_version: str
    status: str
    indicator: str
    facts: dict  # fact name -> {"values", "unit", "provenance"}
    card_uuid: str | None = None
    suggestions_left_out: list = field(default_factory=list)  # (suggestion index, why), for explain
    sections: list = field(default_factory=list)  # indexes of the card sections shown
    offered: set = field(default_factory=set)  # indexes of the suggestions whose own condition held


@dataclass
class EvaluationResult:
    hook: str
    patient_id: str | None
    ruleset: dict  # name, version, sha256
    now: dt.datetime
    cards: list = field(default_factory=list)
    fired: list = field(default_factory=list)
    shadow: list = field(default_factory=list)
    evaluated: list = field(default_factory=list)  # (rule id, version)
    missing: list = field(default_factory=list)
    data_notes: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # name -> Fact

    def response(self) -> dict:
        return {"cards": self.cards}


class _HookProgram:
    """The rules of one hook compiled into one durable-rules ruleset."""

    def __init__(self, label: str, tree: LoadedTree, hook: str):
        self.rules = [r for r in tree.rules if hook in r.hooks and r.status in ("active", "draft")]
        self.fact_names = sorted(set().union(*(r.facts for r in self.rules))) if self.rules else []
        self.definitions = [tree.facts[n] for n in self.fact_names]
        self.resource_types = set().union(*(d.resource_types for d in self.definitions)) if self.definitions else set()
        self.needs = ResourceSelector(self.definitions)
        self.leaves = {}
        expressions = {}
        for i, rule in enumerate(self.rules):
            expressions[f"r{i}"] = conditions.to_durable(rule.condition)
            for leaf in rule.condition.leaves():
                self.leaves[leaf.key] = leaf
            for j, var in enumerate(rule.variants):
                both = conditions.Node("all", [rule.condition, var.condition])
                expressions[f"r{i}_v{j}"] = conditions.to_durable(both)
                for leaf in var.condition.leaves():
                    self.leaves[leaf.key] = leaf
            for j, when in enumerate(rule.suggestion_conditions):
                if when is None:
                    continue
                expressions[f"r{i}_s{j}"] = conditions.to_durable(when)  # counts only when the rule fires
                for leaf in when.leaves():
                    self.leaves[leaf.key] = leaf
            for j, (when, _) in enumerate(rule.sections):
                expressions[f"r{i}_d{j}"] = conditions.to_durable(when)
                for leaf in when.leaves():
                    self.leaves[leaf.key] = leaf
        self.compiled = CompiledRules(label, expressions)

    def message(self, facts: dict[str, Fact], valuesets: dict) -> dict:
        message: dict = {}
        for leaf in self.leaves.values():
            conditions.add_to_message(message, leaf, conditions.leaf_inputs(leaf, facts, valuesets))
        return message


class Ruleset:
    def __init__(self, tree: LoadedTree):
        self.tree = tree
        self.name = tree.name
        self.version = tree.version
        self.sha256 = tree.sha256
        self.rules: list[Rule] = tree.rules
        self.meta = {"name": self.name, "version": self.version, "sha256": self.sha256}
        label = f"pacecds_{self.sha256[:12]}"
        self._programs = {hook: _HookProgram(f"{label}_{hook.replace('-', '_')}", tree, hook) for hook in HOOKS}
        self._validator = ResourceValidator()
        self._cards = {rule.id: CardMaker(rule, self.meta) for rule in self.rules if rule.status == "active"}

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def data_requirements(self, hook: str) -> list[dict]:
        """What the rules of a hook read: resource types and codes (for prefetch templates)."""
        out: dict[str, set] = {}

        def add(definition):
            if definition.kind == "pacing":  # reads other facts by role: each asks for its own resources
                for other in definition.inputs:
                    add(other)
                out.setdefault("QuestionnaireResponse", set())  # the activity inventory (by questionnaire)
                return
            for rtype in definition.resource_types:
                if rtype == "Medication":
                    continue  # read through MedicationRequest/Statement references, never searched by patient
                if rtype in ("QuestionnaireResponse", "Goal"):
                    # items are matched by linkId, goals by category, description or target measure after they
                    # arrive: no code search selects them
                    out.setdefault(rtype, set())
                    continue
                codes = out.setdefault(rtype, set())
                codes |= {f"{s}|{c}" for s, c in definition.codes}
                if definition.valueset is not None:
                    codes |= {f"{s}|{c}" for s, c in definition.valueset.codes}

        for definition in self._programs[hook].definitions:
            add(definition)
        return [{"resourceType": t, "codes": sorted(c)} for t, c in sorted(out.items())]

    def evaluate(self, request: dict | PatientData, now: dt.datetime | None = None,
                 hook: str | None = None) -> EvaluationResult:
        """Evaluate a CDS Hooks request or FHIR Bundle, or data the caller already pooled (fhir_adapter.Pool)."""
        data = request if isinstance(request, PatientData) else pool_request(request, hook=hook)
        hook = data.hook or "patient-view"
        if hook not in self._programs:
            raise InputError(f"hook '{hook}' is not served (served: {', '.join(HOOKS)})")
        now = now or dt.datetime.now(dt.timezone.utc)
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.timezone.utc)
        program = self._programs[hook]
        self._validator.validate(data, program.resource_types, program.needs)
        facts = derive_facts(data, program.definitions, now)
        fired_names = set(program.compiled.match(program.message(facts, self.tree.valuesets)))

        result = EvaluationResult(hook=hook, patient_id=data.patient_id, ruleset=self.meta, now=now, facts=facts)
        definitions = self.tree.facts
        for i, rule in enumerate(program.rules):
            result.evaluated.append((rule.id, rule.version))
            if f"r{i}" not in fired_names:
                continue
            indicator, summary, detail = rule.source["card"]["indicator"], rule.summary, rule.detail
            for j, var in enumerate(rule.variants):
                if f"r{i}_v{j}" in fired_names:  # the last matching variant wins, field by field
                    indicator = var.indicator or indicator
                    summary = var.summary or summary
                    detail = var.detail or detail
            sections = [text for j, (_, text) in enumerate(rule.sections) if f"r{i}_d{j}" in fired_names]
            fired = FiredRule(rule.id, rule.version, rule.status, indicator, _fired_facts(rule, facts),
                              sections=[j for j in range(len(rule.sections)) if f"r{i}_d{j}" in fired_names],
                              offered={j for j, when in enumerate(rule.suggestion_conditions)
                                       if when is None or f"r{i}_s{j}" in fired_names})
            if rule.status == "draft":
                result.shadow.append(fired)
                continue
            lookup = make_lookup(facts, definitions, rule.params, data.patient_id, now)
            card = self._cards[rule.id].render(indicator, summary, detail, lookup, data.patient_id,
                                               offered=fired.offered, left_out=fired.suggestions_left_out,
                                               sections=sections)
            fired.card_uuid = card["uuid"]
            result.fired.append(fired)
            result.cards.append(card)
        result.missing = sorted(
            name for name, fact in facts.items() if definitions[name].kind in MEASURED_KINDS and not fact.present
        )
        result.data_notes = data.notes() + [note for fact in facts.values() for note in fact.notes]
        return result

    def shadow_cards(self, result: EvaluationResult) -> list[dict]:
        """The card each draft rule that matched would have given (the same templates as an active rule's card),
        marked "shadow": previewed in the workbench and counted in population impact, never sent to an EHR."""
        if not result.shadow:
            return []
        values = None
        out = []
        for fired in result.shadow:
            rule = self.rule(fired.rule_id)
            if rule is None:
                continue
            summary, detail, indicator = rule.summary, rule.detail, fired.indicator
            if rule.variants:
                if values is None:
                    values = self._programs[result.hook].message(result.facts, self.tree.valuesets)
                for var in rule.variants:  # the last matching variant wins, field by field (as evaluate does)
                    if conditions.evaluate(var.condition, values) is True:
                        summary = var.summary or summary
                        detail = var.detail or detail
            try:
                lookup = make_lookup(result.facts, self.tree.facts, rule.params, result.patient_id, result.now)
                card = CardMaker(rule, self.meta).render(
                    indicator, summary, detail, lookup, result.patient_id, offered=fired.offered,
                    sections=[rule.sections[j][1] for j in fired.sections])
            except Exception as e:  # a draft may be unfinished: say so rather than fail
                card = {"summary": f"(draft rule {rule.id} matched; its card could not be rendered: "
                                   f"{type(e).__name__})", "indicator": indicator}
            card["shadow"] = True
            out.append(card)
        return out

    def explain(self, request: dict, now: dt.datetime | None = None, hook: str | None = None) -> dict:
        """For every rule of the hook, fired or not: each condition, the value it saw and where it came from."""
        return self.explain_result(self.evaluate(request, now=now, hook=hook))

    def explain_result(self, result: EvaluationResult) -> dict:
        """The explanation of an evaluation that already ran (no second evaluation), e.g. for the audit log."""
        program = self._programs[result.hook]
        values = program.message(result.facts, self.tree.valuesets)
        fired = {f.rule_id for f in result.fired} | {f.rule_id for f in result.shadow}
        carded = {f.rule_id: f for f in result.fired}
        rules = []
        for rule in program.rules:
            entry = {
                "id": rule.id,
                "version": rule.version,
                "status": rule.status,
                "fired": rule.id in fired,
                "condition": _explain_node(rule.condition, values, result.facts),
            }
            if rule.suggestion_conditions:
                entry["suggestions"] = _explain_suggestions(rule, carded.get(rule.id), values, result.facts)
            if rule.sections:
                shown = set(carded[rule.id].sections) if rule.id in carded else set()
                entry["sections"] = [{"shown": j in shown, "when": _explain_node(when, values, result.facts)}
                                     for j, (when, _) in enumerate(rule.sections)]
            rules.append(entry)
        return {
            "hook": result.hook,
            "patient": result.patient_id,
            "now": result.now.isoformat(),
            "ruleset": self.meta,
            "missing": result.missing,
            "data_notes": result.data_notes,
            # derived summaries the rules test (the pacing state, its quota and targets, flare episodes)
            "states": {name: {"values": dict(fact.values), "provenance": list(fact.provenance)}
                       for name, fact in sorted(result.facts.items())
                       if self.tree.facts[name].kind in STATE_KINDS},
            "rules": rules,
            "cards": result.cards,
        }


def _fired_facts(rule: Rule, facts: dict[str, Fact]) -> dict:
    out = {}
    for name in sorted(rule.facts):
        fact = facts.get(name)
        if fact is None:
            continue
        out[name] = {
            "values": {k: v for k, v in fact.values.items() if k != "codes"},
            "unit": fact.unit,
            "provenance": list(fact.provenance),
        }
    return out


def _explain_suggestions(rule: Rule, fired: FiredRule | None, values: dict, facts: dict) -> list[dict]:
    """Each suggestion of the rule's card: offered or not, and why not (its own condition, a missing value)."""
    left_out = dict(fired.suggestions_left_out) if fired else {}
    out = []
    for j, (raw, when) in enumerate(zip(rule.source["card"].get("suggestions") or [], rule.suggestion_conditions)):
        item: dict = {"label": raw["label"], "offered": fired is not None and j not in left_out}
        if when is not None:
            item["when"] = _explain_node(when, values, facts)
        if fired is None:
            item["why_not"] = "no card (the rule did not fire, or it is a draft)"
        elif j in left_out:
            item["why_not"] = left_out[j]
        out.append(item)
    return out


def _explain_node(node, values: dict, facts: dict) -> dict:
    outcome = conditions.evaluate(node, values)
    label = {True: "true", False: "false", None: "unknown (missing data)"}[outcome]
    if node.kind != "leaf":
        return {"op": node.kind, "result": label, "children": [_explain_node(c, values, facts) for c in node.children]}
    leaf = node.leaf
    fact = facts.get(leaf.fact)
    seen = values.get(leaf.key)
    return {
        "test": conditions.describe_leaf(leaf),
        "result": label,
        "value": round(seen, 4) if is_number(seen) else seen,
        "threshold": leaf.value,
        "unit": leaf.unit,
        "fact": leaf.fact,  # lets a record name the fact once instead of repeating its provenance per condition
        "provenance": list(fact.provenance) if fact else [],
    }


def load_ruleset(path: str | Path) -> Ruleset:
    """Load, validate and compile a rules directory (raises RulesetLoadError)."""
    return Ruleset(load_tree(path))
