"""CDS Hooks 2.0 cards from a fired rule, its facts and its card template."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import orjson

from .templates import Quantity, Template, escape_markdown, plain_inline

OVERRIDE_SYSTEM = "https://pacecds.org/CodeSystem/override-reason"


def prune(value):
    """Drop None, empty strings, empty lists and empty objects everywhere (CDS Hooks A3/A4)."""
    if isinstance(value, dict):
        out = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        out = [prune(v) for v in value]
        return [v for v in out if v not in (None, "", [], {})]
    return value


def make_lookup(facts: dict, definitions: dict, params: dict, patient_id: str | None, now: dt.datetime):
    def lookup(ref: str):
        head, _, attr = ref.partition(".")
        if head == "param":
            param = params[attr]
            return Quantity(param["value"], param["unit"]) if param.get("unit") else param["value"]
        if head == "patient":
            if patient_id is None:
                return None
            return f"Patient/{patient_id}" if attr == "reference" else patient_id
        if head == "now":
            if attr == "date":
                return now.date().isoformat()
            days = int(re.match(r"in_(\d+)_days", attr).group(1))
            return (now + dt.timedelta(days=days)).date().isoformat()
        if attr == "unit":
            return definitions[head].unit
        fact = facts.get(head)
        return None if fact is None else fact.values.get(attr)

    return lookup


class CardMaker:
    """One rule's card, prepared when the rules load: the fixed parts built and pruned once, every
    template compiled once; render() fills in what the patient's facts decide."""

    def __init__(self, rule, ruleset_meta: dict):
        spec = rule.source["card"]
        evidence = rule.source["evidence"][0]
        source = spec.get("source") or {"label": evidence["citation"], "url": evidence["url"]}
        if not str(source.get("url", "")).startswith("https://"):
            source = {k: v for k, v in source.items() if k != "url"}  # CDS Hooks wants an absolute https URL or none
        # serialised, and parsed anew for every card: no two responses ever share a mutable object
        self._fixed = orjson.dumps(prune({
            "source": source,
            "links": [{"label": link["label"], "url": link["url"], "type": "absolute"} for link in spec.get("links", [])],
            "overrideReasons": [
                {"code": r["code"], "system": r.get("system", OVERRIDE_SYSTEM), "display": r["display"]}
                for r in spec.get("override_reasons", [])
            ],
            "extension": {
                "pacecds.rule": {"id": rule.id, "version": rule.version},
                "pacecds.ruleset": ruleset_meta,
            },
        }))
        self._suggestions = [
            (Template(s["label"]), s.get("recommended"),
             [(a["type"], Template(a["description"]), _compile_resource(a["resource"])) for a in s.get("actions", [])])
            for s in spec.get("suggestions") or []
        ]
        self._selection_behavior = spec.get("selection_behavior", "at-most-one")

    def render(self, indicator: str, summary: Template, detail: Template | None, lookup,
               patient_id: str | None, offered: set[int] | None = None, left_out: list | None = None,
               sections: list | None = None) -> dict:
        """The card. `offered`: the indexes of the suggestions whose own `when` holds (None: all of them);
        `left_out`, when given, receives (index, why) for each suggestion not offered; `sections`: the detail
        templates of the card sections whose condition holds, added after the detail in order."""
        card = {"uuid": str(uuid.uuid4()), "summary": " ".join(summary.render(lookup, escape=plain_inline).split()),
                "indicator": indicator}
        detail_text = detail.render(lookup, escape=escape_markdown) if detail else None
        if sections:
            parts = [detail_text or ""] + [t.render(lookup, escape=escape_markdown) for t in sections]
            detail_text = "\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n"
        if detail_text:
            card["detail"] = detail_text
        card.update(orjson.loads(self._fixed))
        # suggestions create resources for this patient; without a patient id there is nothing safe to create
        if self._suggestions and patient_id is None and left_out is not None:
            left_out.extend((i, "no patient id to create it for") for i in range(len(self._suggestions)))
        if self._suggestions and patient_id is not None:
            made = []
            for i, (label, recommended, actions) in enumerate(self._suggestions):
                if offered is not None and i not in offered:
                    why = "its condition (when) does not hold"
                else:
                    suggestion, missing = self._suggestion(label, recommended, actions, lookup)
                    if suggestion is not None:
                        made.append(suggestion)
                        continue
                    why = f"a value it would write is not recorded ({', '.join(sorted(set(missing)))})"
                if left_out is not None:
                    left_out.append((i, why))
            suggestions = prune(made)
            if suggestions:
                card["suggestions"] = suggestions
                card["selectionBehavior"] = self._selection_behavior
        return card


    @staticmethod
    def _suggestion(label, recommended, actions, lookup) -> tuple[dict | None, list]:
        """One suggestion and the references it found missing; None when any value it would write is missing: a
        resource that would carry "not recorded" (or no number where a number belongs) is never offered."""
        missing = []

        def tracking(ref):
            value = lookup(ref)
            if value is None:
                missing.append(ref)
            return value

        out = {
            "label": label.render(tracking, escape=plain_inline),
            "uuid": str(uuid.uuid4()),
            "isRecommended": recommended,
            "actions": [
                {"type": kind, "description": description.render(tracking, escape=plain_inline),
                 "resource": _render_resource(resource, tracking)}
                for kind, description, resource in actions
            ],
        }
        return (None if missing else out), missing


def _compile_resource(template):
    """A suggested resource with every string compiled to a Template (a plain string stays a string)."""
    if isinstance(template, str):
        compiled = Template(template)
        return compiled if compiled.placeholders else template
    if isinstance(template, dict):
        return {k: _compile_resource(v) for k, v in template.items()}
    if isinstance(template, list):
        return [_compile_resource(v) for v in template]
    return template


def _render_resource(template, lookup):
    if isinstance(template, Template):
        return template.render_value(lookup)
    if isinstance(template, dict):
        return {k: _render_resource(v, lookup) for k, v in template.items()}
    if isinstance(template, list):
        return [_render_resource(v, lookup) for v in template]
    return template
