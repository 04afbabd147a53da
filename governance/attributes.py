"""Decision-support source attributes (ONC HTI-1, 45 CFR 170.315(b)(11)(iv)(A)) of each rule, from its YAML."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from engine.rulestree import MANIFEST, read_fact_definitions, read_rules

from .manifest import jsonable, plain_date

# Input data elements HTI-1 asks an evidence-based DSI to disclose, and the fact names
# (as the rules name them) that count as using them.
_HTI1_INPUTS = {
    "race": ("race",),
    "ethnicity": ("ethnicity",),
    "language": ("language", "preferred_language"),
    "sexual_orientation": ("sexual_orientation",),
    "gender_identity": ("gender_identity",),
    "sex": ("sex", "gender", "pregnancy", "pregnant"),
    "date_of_birth": ("age", "birth_date", "date_of_birth"),
    "social_determinants_of_health": ("sdoh", "housing", "food_insecurity", "transportation", "employment"),
    "health_status_assessments": ("pain_score", "pain_interference", "phq9", "phq2", "gad7", "promis",
                                  "peg", "fatigue_score", "sleep_quality", "function_score", "odi", "bpi"),
}


def facts_read(node: Any) -> set[str]:
    """Fact names a condition tree reads (base name before any '.attribute')."""
    out: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("fact"), str):
            out.add(node["fact"].split(".", 1)[0])
        for v in node.values():
            out |= facts_read(v)
    elif isinstance(node, list):
        for v in node:
            out |= facts_read(v)
    return out


# Patient fields (fact kind `patient`) and the HTI-1 data elements they are.
_PATIENT_FIELDS = {"gender": "sex", "sex": "sex", "age": "date_of_birth", "birthDate": "date_of_birth",
                   "race": "race", "ethnicity": "ethnicity", "language": "language"}


def _facts_near(rule: Any) -> dict[str, dict]:
    """Fact definitions of the rules tree an engine Rule was loaded from (found from its file)."""
    f = getattr(rule, "file", None)
    if not f:
        return {}
    for d in Path(f).resolve().parents:
        if (d / MANIFEST).exists():
            return read_fact_definitions(d)
    return {}


def _is_assessment(definition: dict) -> bool:
    """A patient-reported or clinician-scored instrument (pain ratings, PHQ-9, GAD-7, ...)."""
    if definition.get("unit") == "{score}":
        return True
    text = " ".join([str(definition.get("title", ""))] + [str(c.get("display", "")) for c in
                                                           definition.get("codes") or [] if isinstance(c, dict)])
    return bool(re.search(r"\[score\]|\bscore\b|questionnaire|\breported\b", text, re.I))


def data_elements_used(reads: set[str], facts: dict[str, dict]) -> dict[str, bool]:
    """Which HTI-1 data elements the facts a rule reads are built on (through derived facts too)."""
    used = {k: False for k in _HTI1_INPUTS}
    stack, seen = list(reads), set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        d = facts.get(name)
        if d is None:  # no definition at hand: judge by the fact's name
            for k, names in _HTI1_INPUTS.items():
                if any(name == n or name.startswith(n + "_") for n in names):
                    used[k] = True
            continue
        if d.get("kind") == "patient" and d.get("field") in _PATIENT_FIELDS:
            used[_PATIENT_FIELDS[d["field"]]] = True
        if _is_assessment(d):
            used["health_status_assessments"] = True
        # derived facts (e.g. series_pair) name the facts they are computed from
        stack += [v for k, v in d.items() if isinstance(v, str) and v in facts and k not in ("title", "unit")]
    return used


def rule_source_attributes(rule: Any, facts: dict[str, dict] | None = None) -> dict:
    """Source attributes of one rule, from its YAML fields (a loaded Rule or the raw dict).
    `facts` (fact definitions) sharpen which data elements it uses; for an engine Rule they are
    found from the rules tree it was loaded from."""
    src = rule if isinstance(rule, dict) else getattr(rule, "source", None) or {}
    if facts is None:
        facts = _facts_near(rule)
    authors = src.get("authors") or []
    developer = src.get("developer")
    if not developer and authors:
        developer = ", ".join(a.get("name", str(a)) if isinstance(a, dict) else str(a) for a in authors)
    approval = src.get("approval") or {}
    card = src.get("card") or {}
    reads = (facts_read(src.get("when")) | facts_read(card.get("variants")) | facts_read(card.get("sections"))
             | facts_read([s.get("when") for s in card.get("suggestions") or [] if isinstance(s, dict)]))
    inputs = data_elements_used(reads, facts)
    evidence = []
    for e in src.get("evidence") or []:
        evidence.append(e if isinstance(e, dict) else {"citation": str(e)})
    not_stated = "not stated"
    return {
        "id": src.get("id"),
        "version": None if src.get("version") is None else str(src.get("version")),
        "status": src.get("status"),
        "title": src.get("title"),
        "description": src.get("description"),
        "hooks": src.get("hooks") or [],
        "bibliography": evidence,
        "developer": developer or not_stated,
        "authors": authors,
        "funding": src.get("funding") or not_stated,
        "released": plain_date(src.get("released") or approval.get("date")),
        "revised": plain_date(src.get("revised")),
        "last_reviewed": plain_date(src.get("last_reviewed")),
        "approval": jsonable(approval) if approval else None,
        "intended_use": src.get("intended_use") or not_stated,
        "population": src.get("population") or not_stated,
        "exclusions": src.get("exclusions") or [],
        "inputs": sorted(reads),
        "uses": inputs,
    }


def ruleset_source_attributes(rules_dir: str | Path) -> list[dict]:
    facts = read_fact_definitions(rules_dir)
    return [rule_source_attributes(r, facts) for _, (_, r) in sorted(read_rules(Path(rules_dir)).items())]


_USE_LABELS = {
    "race": "Race", "ethnicity": "Ethnicity", "language": "Language", "sexual_orientation": "Sexual orientation",
    "gender_identity": "Gender identity", "sex": "Sex", "date_of_birth": "Date of birth (age)",
    "social_determinants_of_health": "Social determinants of health",
    "health_status_assessments": "Health status assessments",
}


def format_source_attributes_markdown(items: list[dict], *, title: str = "Decision support source attributes") -> str:
    out = [f"# {title}", "",
           "Source attributes for each rule (ONC HTI-1 evidence-based decision support interventions, "
           "45 CFR 170.315(b)(11)(iv)(A)).", ""]
    for a in items:
        out.append(f"## {a['title'] or a['id']}")
        out.append("")
        out.append(f"- **Rule**: `{a['id']}` version {a['version']} ({a['status']}); hooks: "
                   f"{', '.join(a['hooks']) or 'none'}")
        out.append(f"- **Developer**: {a['developer']}")
        out.append(f"- **Funding source**: {a['funding']}")
        out.append(f"- **Release date**: {a['released'] or 'not stated'}; **revised**: {a['revised'] or 'never'}"
                   + (f"; **last reviewed**: {a['last_reviewed']}" if a['last_reviewed'] else ""))
        if a["approval"]:
            ap = a["approval"]
            out.append(f"- **Approved by**: {ap.get('by', ap)}" + (f" on {ap['date']}" if ap.get("date") else ""))
        out.append(f"- **Intended use**: {_oneline(a['intended_use'])}")
        out.append(f"- **Intended population**: {_oneline(a['population'])}")
        out.append("- **Exclusions / cautioned use**:" + ("" if a["exclusions"] else " none stated"))
        out += [f"  - {_oneline(x)}" for x in a["exclusions"]]
        out.append("- **Bibliography**:" + ("" if a["bibliography"] else " none"))
        for e in a["bibliography"]:
            line = f"  - {_oneline(e.get('citation', ''))}"
            if e.get("url"):
                line += f" <{e['url']}>"
            if e.get("supports"):
                line += f" — supports: {_oneline(e['supports'])}"
            out.append(line)
        used = [label for k, label in _USE_LABELS.items() if a["uses"].get(k)]
        out.append(f"- **Patient data used**: {', '.join(a['inputs']) or 'none'}")
        out.append(f"- **Uses demographic / assessment data elements**: {', '.join(used) or 'none of those listed'}")
        out.append("")
    return "\n".join(out)


def _oneline(v: Any) -> str:
    return " ".join(str(v).split())

