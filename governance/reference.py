"""The clinician's rule reference (docs/rules.md), generated from a rules tree.

Everything on the page is read from the tree (rules, facts, parameters, evidence, cards, value sets) through
engine.rulestree, so it lists exactly the files the engine serves and cannot drift from what runs:
`pacecds test` and tests/kb/test_rules_doc.py fail when docs/rules.md is not what `build` writes.
Written by `python tools/build_rules_doc.py [RULES_DIR]`.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from engine.rulestree import FACTS, read_rules, read_yaml, tree_files, valueset_files

SYMBOL = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "=", "ne": "!="}
DOMAIN_ORDER = ["pacing", "sleep", "mood", "anemia", "thyroid", "labs", "meds"]


def load_rules(rules: Path) -> list[dict]:
    out = []
    for rel, doc in read_rules(rules).values():
        out.append(dict(doc, _file=f"{Path(rules).resolve().name}/{rel}"))
    rank = {d: i for i, d in enumerate(DOMAIN_ORDER)}
    return sorted(out, key=lambda r: (rank.get(r["id"].split(".")[0], 99), r["id"]))


def load_facts(rules: Path) -> dict:
    facts = {}
    for f in tree_files(rules):
        if f.kind == FACTS:
            for name, raw in ((read_yaml(f.path) or {}).get("facts") or {}).items():
                facts[name] = dict(raw, _file=f"{Path(rules).resolve().name}/{f.rel}")
    return facts


def valueset_titles(rules: Path) -> dict:
    out = {}
    for name, path in valueset_files(rules).items():
        if path.suffix == ".json":
            doc = json.loads(path.read_text())
            out[name] = doc.get("title") or doc.get("name") or name
        else:
            doc = yaml.safe_load(path.read_text())
            out[name] = (doc.get("valueset") or {}).get("title", name)
    return out


def operand(value, params: dict) -> str:
    if isinstance(value, dict) and "param" in value:
        p = params.get(value["param"], {})
        unit = f" {p['unit']}" if p.get("unit") else ""
        return f"{value['param']} ({_num(p.get('value'))}{unit})"
    if isinstance(value, dict) and "fact" in value:
        text = value["fact"]
        if "times" in value:
            text = f"{operand(value['times'], params)} x {text}"
        if "plus" in value:
            text = f"{text} + {operand(value['plus'], params)}"
        return text
    if isinstance(value, dict) and "value" in value:
        return f"{_num(value['value'])} {value['unit']}"
    if isinstance(value, str):
        return f"'{value}'"
    return _num(value)


def _num(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def condition(node: dict, params: dict, depth: int = 0) -> list[str]:
    pad = "  " * depth
    for key, label in (("all", "all of"), ("any", "any of")):
        if key in node:
            lines = [f"{pad}- {label}:"]
            for child in node[key]:
                lines += condition(child, params, depth + 1)
            return lines
    if "not" in node:
        return [f"{pad}- not:"] + condition(node["not"], params, depth + 1)
    fact = node["fact"]
    for op, sym in SYMBOL.items():
        if op in node:
            return [f"{pad}- `{fact}` {sym} {operand(node[op], params)}"]
    if "present" in node:
        return [f"{pad}- `{fact}` {'is recorded' if node['present'] else 'is not recorded'}"]
    if "in_valueset" in node:
        return [f"{pad}- `{fact}` is in value set `{node['in_valueset']}`"]
    return [f"{pad}- `{fact}` {node}"]


def facts_of(node, out: set):
    if isinstance(node, dict):
        if "fact" in node and isinstance(node["fact"], str):
            out.add(node["fact"].split(".")[0])
        for v in node.values():
            facts_of(v, out)
    elif isinstance(node, list):
        for v in node:
            facts_of(v, out)


def fact_line(name: str, fact: dict, vs_titles: dict) -> str:
    bits = [f"`{name}` ({fact['kind']}): {fact['title']}"]
    codes = [f"{c['system'].rsplit('/', 1)[-1]} {c['code']}" for c in fact.get("codes", [])]
    if codes:
        bits.append("codes " + ", ".join(codes))
    if fact.get("valueset"):
        bits.append(f"value set `{fact['valueset']}` ({vs_titles.get(fact['valueset'], '?')})")
    if fact.get("classes"):
        bits.append("classes " + ", ".join(f"{k} = `{v}`" for k, v in fact["classes"].items()))
    if fact.get("unit"):
        bits.append(f"unit `{fact['unit']}`")
    if fact.get("scope") and fact["scope"] != "active":
        bits.append(f"scope {fact['scope']}")
    for key in ("activity", "minutes", "symptom", "goal", "medications", "drug_table", "factor_table"):
        if fact.get(key):
            bits.append(f"{key} `{fact[key]}`")
    return "; ".join(bits)


def rule_section(rule: dict, facts: dict, vs_titles: dict) -> list[str]:
    params = rule.get("parameters") or {}
    card = rule["card"]
    out = [f"<a id=\"{rule['id'].replace('.', '')}\"></a>", "", f"### `{rule['id']}` {rule['version']} - {rule['title']}", ""]
    out.append(f"Status **{rule['status']}**; hooks {', '.join(rule['hooks'])}; file `{rule['_file']}`.")
    approval = rule.get("approval")
    if approval:
        note = f" ({approval['note']})" if approval.get("note") else ""
        out.append(f"Approved by {approval['by']} on {approval['date']}{note}.")
    out += ["", " ".join(str(rule.get("description", "")).split()), ""]
    if rule.get("population"):
        out += [f"**Population:** {rule['population']}", ""]
    if rule.get("exclusions"):
        out += ["**Exclusions:**", ""] + [f"- {e}" for e in rule["exclusions"]] + [""]
    out += ["**Fires when:**", ""] + condition(rule["when"], params) + [""]
    out += ["Missing data never counts as normal or abnormal: a test on a value that is not recorded is false, "
            "and so is its negation.", ""]
    if params:
        out += ["**Parameters** (a clinician may change these in the YAML):", "",
                "| parameter | value | unit | where it comes from |", "| --- | --- | --- | --- |"]
        for name, p in params.items():
            note = str(p.get("note", "")).replace("|", "/")
            out.append(f"| `{name}` | {_num(p['value'])} | {p.get('unit', '')} | {note} |")
        out.append("")
    out += ["**Card** (when several variants hold, the last one wins, field by field):", "",
            f"- indicator **{card['indicator']}**; summary: \"{card['summary']}\""]
    for var in card.get("variants", []):
        what = []
        if var.get("indicator"):
            what.append(f"indicator **{var['indicator']}**")
        if var.get("summary"):
            what.append(f"summary: \"{var['summary']}\"")
        if var.get("detail") and not var.get("summary"):
            what.append("a different detail text")
        out.append(f"- variant ({'; '.join(what)}) when:")
        out += ["  " + line for line in condition(var["when"], params, 0)]
    for sec in card.get("sections", []):
        first = sec["detail"].strip().splitlines()[0]
        out.append(f"- section \"{first}\" added to the detail when:")
        out += ["  " + line for line in condition(sec["when"], params, 0)]
    for s in card.get("suggestions", []):
        kinds = sorted({a["resource"]["resourceType"] for a in s.get("actions", [])})
        if "when" in s:
            out.append(f"- suggestion \"{s['label']}\" creates {', '.join(kinds)}, offered only when:")
            out += ["  " + line for line in condition(s["when"], params, 0)]
        else:
            out.append(f"- suggestion \"{s['label']}\" creates {', '.join(kinds)}")
    if card.get("override_reasons"):
        out.append("- override reasons: " + "; ".join(r["display"] for r in card["override_reasons"]))
    out += ["", "**Evidence:**", ""]
    for e in rule["evidence"]:
        supports = f" Supports: {e['supports']}." if e.get("supports") else ""
        out.append(f"- {e['citation']}. <{e['url']}>{supports}")
    used: set = set()
    facts_of(rule["when"], used)
    facts_of(card.get("variants", []), used)
    facts_of(card.get("sections", []), used)
    facts_of([s["when"] for s in card.get("suggestions", []) if "when" in s], used)
    out += ["", "**Facts read:**", ""]
    for name in sorted(used):
        if name in facts:
            out.append(f"- {fact_line(name, facts[name], vs_titles)}")
    out.append("")
    return out


def build(rules_dir: Path) -> str:
    """docs/rules.md for a rules tree (by default the repository's rules/); `pacecds test` compares it too."""
    rules_dir = Path(rules_dir)
    rules = load_rules(rules_dir)
    facts = load_facts(rules_dir)
    vs_titles = valueset_titles(rules_dir)
    manifest = yaml.safe_load((rules_dir / "ruleset.yaml").read_text())
    lines = [
        "# pacecds rule reference",
        "",
        f"Generated by `tools/build_rules_doc.py` from `rules/` (ruleset {manifest['name']} {manifest['version']}); "
        "do not edit by hand. For clinicians reviewing the knowledge base: every rule with its logic, thresholds, "
        "parameters, card and evidence. Value set provenance: `rules/valuesets/SOURCES.md`. Example patients that "
        "prove each rule fires and does not fire: `tests/examples/cases.yaml` (run `pacecds test`).",
        "",
        "| rule | version | status | hooks | title |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rules:
        lines.append(f"| [`{r['id']}`](#{r['id'].replace('.', '')}) | {r['version']} | {r['status']} | "
                     f"{', '.join(r['hooks'])} | {r['title']} |")
    lines.append("")
    domain = None
    for r in rules:
        d = r["id"].split(".")[0]
        if d != domain:
            domain = d
            lines += [f"## {d}", ""]
        lines += rule_section(r, facts, vs_titles)
    lines += ["## Facts", "", "Defined once in `rules/facts/*.yaml`, read by the rules above.", ""]
    for name in sorted(facts):
        lines.append(f"- {fact_line(name, facts[name], vs_titles)} (`{facts[name]['_file']}`)")
    lines.append("")
    for name in sorted(facts):
        params = facts[name].get("parameters") or {}
        if not params:
            continue
        lines += [f"### Parameters of the fact `{name}`", "",
                  "Rules testing this fact use these numbers (a clinician may change them in the YAML; see "
                  "docs/knowledge-base.md for the model).", "",
                  "| parameter | value | where it comes from |", "| --- | --- | --- |"]
        for pname, p in params.items():
            lines.append(f"| `{pname}` | {_num(p['value'])} | {str(p.get('note', '')).replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


