"""Load a rules directory: parse YAML and JSON, validate against schemas/, check meaning.

Every problem in the tree is collected as `file:line:col: message` (not only the first),
and nothing is compiled unless the whole tree is clean.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jsonschema
from jsonschema import Draft202012Validator

from fhir_adapter import ucum
from fhir_adapter.facts import KIND_ATTRIBUTES, LIST_ATTRIBUTES, TEXT_ATTRIBUTES, FactDefinition
from fhir_adapter.valuesets import ValueSet, ValueSetError, normalize_code

from . import rulestree
from .bundled import SCHEMA_DIR
from .conditions import ConditionError, Node, attribute_unit, parse_condition, to_durable
from .templates import SPECIAL, Template, TemplateError
from .yamlpos import Position, YamlDocument, YamlError, load_yaml

SUMMARY_MAX = 139  # CDS Hooks: summary "<140 characters"
MANIFEST = rulestree.MANIFEST


class RulesetLoadError(Exception):
    def __init__(self, errors: list[str]):
        super().__init__(f"{len(errors)} error(s) in rules:\n" + "\n".join(errors))
        self.errors = errors


@lru_cache(maxsize=16)  # schema file names in this code, a handful (docs/caches.md)
def schema_validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@dataclass
class Variant:
    """A different reading of the card when an extra condition holds (e.g. critical, or 'low' vs 'high')."""

    condition: Node
    indicator: str | None
    summary: Template | None
    detail: Template | None


@dataclass
class Rule:
    id: str
    version: str
    status: str
    title: str
    hooks: list[str]
    file: str
    source: dict  # the rule as written (YAML), for audit, explain and source attributes
    condition: Node
    variants: list[Variant]
    params: dict
    summary: Template
    detail: Template | None
    facts: set[str] = field(default_factory=set)  # facts the condition and card read
    # one per card suggestion: its own `when` condition, or None when it is always offered with the card
    suggestion_conditions: list = field(default_factory=list)
    sections: list = field(default_factory=list)  # (condition, detail template): paragraphs added when it holds


@dataclass
class LoadedTree:
    root: Path
    name: str
    version: str
    manifest: dict
    sha256: str
    facts: dict[str, FactDefinition]
    valuesets: dict[str, ValueSet]
    rules: list[Rule]
    plausible: dict[str, tuple[float, float]] = field(default_factory=dict)  # fact -> unit-sanity bounds


class _Collector:
    def __init__(self):
        self.errors: list[str] = []
        # what could not be loaded because its file has errors: {name: file}, so that what uses it says so
        # (once) instead of calling it unknown
        self.unavailable_facts: dict[str, str] = {}
        self.unavailable_valuesets: dict[str, str] = {}
        self.plausible: dict[str, tuple[float, float]] = {}

    def add(self, where, message: str):
        self.errors.append(f"{where}: {message}")

    def schema(self, doc: YamlDocument, validator: Draft202012Validator) -> bool:
        found = False
        for err in sorted(validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path))):
            found = True
            path = tuple(err.absolute_path)
            field_name = ".".join(str(p) for p in path) or "(document)"
            self.add(doc.position(path), f"{field_name}: {_schema_message(err)}")
        return not found


def _schema_message(err: jsonschema.ValidationError) -> str:
    if err.validator == "oneOf" and err.context:
        # the most specific sub-error explains an ill-formed condition or operand best
        best = jsonschema.exceptions.best_match(err.context)
        return best.message
    return err.message


def load_tree(root: str | Path) -> LoadedTree:
    root = Path(root)
    errors = _Collector()
    if not root.is_dir():
        raise RulesetLoadError([f"{root}: not a directory"])

    def rel(path: Path) -> str:
        return str(path)

    docs: dict[str, list[YamlDocument]] = {rulestree.FACTS: [], rulestree.RULE: [], rulestree.MANIFEST_KIND: []}
    valuesets: dict[str, ValueSet] = {}
    for item in rulestree.tree_files(root):
        path = item.path
        if item.kind not in (rulestree.MANIFEST_KIND, rulestree.FACTS, rulestree.VALUESET, rulestree.RULE):
            continue  # tables are read by the facts that name them; examples by `pacecds test`
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.add(Position(rel(path), 1, 1), f"cannot read file: {exc}")
            _mark_unreadable(item, path, errors)
            continue
        if item.kind == rulestree.VALUESET:
            _load_valueset(path, text, valuesets, errors)
            continue
        try:
            doc = load_yaml(rel(path), text)
        except YamlError as exc:
            errors.add(exc.position, exc.message)
            if item.kind == rulestree.FACTS:
                for name in guess_fact_names(text):
                    errors.unavailable_facts.setdefault(name, rel(path))
            continue
        docs[item.kind].append(doc)

    manifest = docs[rulestree.MANIFEST_KIND][0].data if docs[rulestree.MANIFEST_KIND] and isinstance(docs[rulestree.MANIFEST_KIND][0].data, dict) else {}
    if not docs[rulestree.MANIFEST_KIND]:
        errors.add(Position(rel(root / MANIFEST), 1, 1), "missing ruleset manifest (name and version)")
    else:
        for key in ("name", "version"):
            if not isinstance(manifest.get(key), str):
                errors.add(docs[rulestree.MANIFEST_KIND][0].position((key,)), f"manifest needs a string '{key}'")

    facts: dict[str, FactDefinition] = {}
    drug_tables: dict[str, dict] = {}
    for doc in docs[rulestree.FACTS]:
        _load_facts(doc, valuesets, facts, errors, root, drug_tables)
    _link_fact_inputs(docs[rulestree.FACTS], facts, errors)

    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for doc in docs[rulestree.RULE]:
        rule_id = doc.data.get("id") if isinstance(doc.data, dict) else None
        if isinstance(rule_id, str):
            if rule_id in seen:
                errors.add(doc.position(("id",)), f"id: duplicate rule id '{rule_id}' (also in {seen[rule_id]})")
                continue
            seen[rule_id] = doc.file
        rule = _load_rule(doc, facts, valuesets, errors)
        if rule is not None:
            rules.append(rule)

    if errors.errors:
        raise RulesetLoadError(errors.errors)
    return LoadedTree(
        root=root, name=manifest["name"], version=manifest["version"], manifest=manifest,
        sha256=rulestree.ruleset_sha256(root), facts=facts, valuesets=valuesets, rules=rules,
        plausible=errors.plausible,
    )


def _mark_unreadable(item, path: Path, errors: _Collector) -> None:
    if item.kind == rulestree.VALUESET:
        errors.unavailable_valuesets.setdefault(path.stem, str(path))
    elif item.kind == rulestree.FACTS:
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return
        for name in guess_fact_names(text):
            errors.unavailable_facts.setdefault(name, str(path))


_FACT_KEY = re.compile(r"^[ \t]*([a-z][a-z0-9_]*)[ \t]*(?::|$)")


def guess_fact_names(text: str) -> list[str]:
    """Best effort, for a fact file that does not parse: the keys one level under `facts:` (a line that
    lost its ':' still names its fact), so rules using them hear that the file has errors."""
    names, in_facts, level = [], False, None
    for line in text.splitlines():
        content = line.split(" #", 1)[0].rstrip()
        if not content.strip() or content.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" \t"))
        if indent == 0:
            in_facts, level = content.startswith("facts:"), None
            continue
        if not in_facts:
            continue
        level = indent if level is None else level
        if indent == level and (match := _FACT_KEY.match(content)):
            names.append(match.group(1))
    return names


class _Reported(Exception):
    """A problem already added to the collector (with its position)."""


def _load_valueset(path: Path, text: str, valuesets: dict, errors: _Collector) -> None:
    name = path.stem
    if name in valuesets:
        errors.add(Position(str(path), 1, 1), f"duplicate value set name '{name}'")
        return
    before = len(errors.errors)
    _parse_valueset(path, text, valuesets, errors)
    if name not in valuesets and len(errors.errors) > before:
        errors.unavailable_valuesets.setdefault(name, str(path))


def _parse_valueset(path: Path, text: str, valuesets: dict, errors: _Collector) -> None:
    name = path.stem

    def code_list(path: Path, text: str) -> dict:
        try:
            doc = load_yaml(str(path), text)
        except YamlError as exc:
            errors.add(exc.position, exc.message)
            raise _Reported() from None
        if not errors.schema(doc, schema_validator("valueset-codes.schema.json")):
            raise _Reported()
        return doc.data["valueset"]

    if path.suffix == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            errors.add(Position(str(path), exc.lineno, exc.colno), f"invalid JSON: {exc.msg}")
            return
    try:
        valuesets[name] = rulestree.parse_valueset(name, path, text, yaml_reader=code_list)
    except _Reported:
        pass
    except ValueSetError as exc:
        errors.add(Position(str(path), 1, 1), f"value set: {exc}")


def _drug_table(root: Path, stem: str, cache: dict) -> dict | None:
    """A JSON data table in rules/drugs/ (drug strengths, MME factors); None when it is missing or invalid."""
    if stem not in cache:
        path = root / "drugs" / f"{stem}.json"
        try:
            cache[stem] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cache[stem] = None
    return cache[stem]


def _link_fact_inputs(fact_docs: list, facts: dict, errors: _Collector) -> None:
    """series_pair facts read two daily_series facts: resolve them once every fact is loaded."""
    for doc in fact_docs:
        if not isinstance(doc.data, dict) or not isinstance(doc.data.get("facts"), dict):
            continue
        for name, raw in doc.data["facts"].items():
            if isinstance(raw, dict) and raw.get("kind") == "pacing" and name in facts:
                _link_pacing(doc, name, raw, facts, errors)
                continue
            if not isinstance(raw, dict) or raw.get("kind") != "series_pair" or name not in facts:
                continue
            inputs = []
            for key in ("activity", "symptom"):
                input_name = str(raw.get(key))
                other = facts.get(input_name)
                if other is None and input_name in errors.unavailable_facts:
                    errors.add(doc.position(("facts", name, key)), f"{key}: fact '{input_name}' is not available: "
                               f"{errors.unavailable_facts[input_name]} has errors")
                    break
                if other is None or other.kind != "daily_series":
                    errors.add(doc.position(("facts", name, key)),
                               f"{key}: '{raw.get(key)}' is not a daily_series fact")
                    break
                inputs.append(other)
            else:
                facts[name] = dataclasses.replace(
                    facts[name], inputs=tuple(inputs), unit=inputs[1].unit,
                    codes=frozenset().union(*(i.codes for i in inputs)),
                )
                continue
            del facts[name]
            errors.unavailable_facts.setdefault(name, doc.file)


PACING_ROLES = {"activity": ("daily_series",), "minutes": ("daily_series",), "symptom": ("daily_series",),
                "goal": ("goal",), "medications": ("medication_classes", "medication"),
                "heart_rate": ("daily_series",), "exertion": ("daily_series",),
                "resting_heart_rate": ("daily_series",)}


def _link_pacing(doc, name: str, raw: dict, facts: dict, errors: _Collector) -> None:
    """A pacing fact reads other facts by role (activity and symptom required): resolve them by name."""
    roles, inputs = [], []
    for role, kinds in PACING_ROLES.items():
        if role not in raw:
            continue
        other = facts.get(raw[role])
        if other is None or other.kind not in kinds:
            errors.add(doc.position(("facts", name, role)),
                       f"{role}: '{raw[role]}' is not a {' or '.join(kinds)} fact")
            del facts[name]
            return
        roles.append(role)
        inputs.append(other)
    codes = frozenset().union(*(i.match_keys for i in inputs))
    facts[name] = dataclasses.replace(facts[name], roles=tuple(roles), inputs=tuple(inputs), codes=codes)


def _load_facts(doc: YamlDocument, valuesets: dict, facts: dict, errors: _Collector,
                root: Path | None = None, drug_tables: dict | None = None) -> None:
    # a schema error in one fact leaves the file's other facts usable; the broken one is "not available"
    broken = _fact_schema_errors(doc, errors)
    if broken is None:
        return
    drug_tables = {} if drug_tables is None else drug_tables

    def unknown_valueset(path, field_name, stem):
        if stem in errors.unavailable_valuesets:
            errors.add(doc.position(path), f"{field_name}: value set '{stem}' is not available: "
                                           f"{errors.unavailable_valuesets[stem]} has errors")
        else:
            errors.add(doc.position(path), f"{field_name}: unknown value set '{stem}'")

    for name, raw in doc.data["facts"].items():
        where = ("facts", name)
        if name in facts:
            errors.add(doc.position(where), f"duplicate fact '{name}'")
            continue
        if name in broken:
            errors.unavailable_facts.setdefault(name, doc.file)
            continue
        errors.unavailable_facts[name] = doc.file  # until it has loaded
        vs = None
        if "valueset" in raw:
            vs = valuesets.get(raw["valueset"])
            if vs is None:
                unknown_valueset(where + ("valueset",), "valueset", raw["valueset"])
                continue
        classes = []
        for label, stem in (raw.get("classes") or {}).items():
            if stem not in valuesets:
                unknown_valueset(where + ("classes", label), f"classes.{label}", stem)
            else:
                classes.append((label, valuesets[stem]))
        if len(classes) != len(raw.get("classes") or {}):
            continue
        tables = {}
        for key in ("drug_table", "factor_table"):
            if key in raw:
                table = _drug_table(root, raw[key], drug_tables) if root is not None else None
                if table is None:
                    errors.add(doc.position(where + (key,)), f"{key}: no readable JSON table rules/drugs/{raw[key]}.json")
                tables[key] = table
        if any(t is None for t in tables.values()):
            continue
        if "drug_table" in tables:
            tables["drug_table"] = {row["code"]: row for row in tables["drug_table"].get("drugs", [])}
        unit = raw.get("unit")
        if unit is not None:
            try:
                ucum.parse(unit)
            except ucum.UnitError as exc:
                errors.add(doc.position(where + ("unit",)), f"unit: {exc}")
                continue
        if "plausible" in raw:
            low, high = raw["plausible"]["min"], raw["plausible"]["max"]
            if unit is None or low > high:
                errors.add(doc.position(where + ("plausible",)), "plausible: needs the fact's unit and min <= max")
                continue
            errors.plausible[name] = (float(low), float(high))
        codes = frozenset(
            key for c in raw.get("codes", []) if (key := normalize_code(c["system"], c["code"])) is not None
        )
        scale = None
        if "scale" in raw:
            sc = raw["scale"]
            own = {c["code"] for c in raw.get("codes", [])}
            stray = [c for c in sc["fixed_by"] if c not in own]
            if sc["min"] > sc["max"] or stray:
                errors.add(doc.position(where + ("scale",)),
                           "scale: needs min <= max and fixed_by codes among the fact's own codes"
                           + (f" (not among them: {', '.join(stray)})" if stray else ""))
                continue
            scale = (float(sc["min"]), float(sc["max"]), frozenset(sc["fixed_by"]))
        facts[name] = FactDefinition(
            name=name, kind=raw["kind"], title=raw["title"], codes=codes, valueset=vs, unit=unit,
            conversions=tuple((c["from"], float(c["factor"])) for c in raw.get("conversions", [])),
            window_days=raw.get("window_days"), daily=raw.get("daily", "sum"), field=raw.get("field"),
            scope=raw.get("scope", "active"), allow_preliminary=raw.get("allow_preliminary", False),
            classes=tuple(classes), drug_table=tables.get("drug_table"), factor_table=tables.get("factor_table"),
            daily_by_code=tuple(sorted((raw.get("daily_by_code") or {}).items())),
            questionnaire_items=raw.get("questionnaire_items", False), on_record=raw.get("on_record", False),
            scale=scale,
            parameters=tuple(sorted((k, float(v["value"])) for k, v in (raw.get("parameters") or {}).items())),
        )
        if classes:  # codes of every class: for prefetch requirements and validation scope
            facts[name] = dataclasses.replace(
                facts[name], codes=frozenset().union(*(vs_.codes for _, vs_ in classes)))
        del errors.unavailable_facts[name]


def _fact_schema_errors(doc: YamlDocument, errors: _Collector) -> set[str] | None:
    """Report the fact file's schema errors; return the names of the facts they are in (None when the
    file as a whole is wrong, and then every fact it names is unavailable)."""
    broken: set[str] = set()
    whole = False
    validator = schema_validator("facts.schema.json")
    for err in sorted(validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(err.absolute_path)
        field_name = ".".join(str(p) for p in path) or "(document)"
        errors.add(doc.position(path), f"{field_name}: {_schema_message(err)}")
        if len(path) >= 2 and path[0] == "facts":
            broken.add(str(path[1]))
        else:
            whole = True
    if whole:
        facts = doc.data.get("facts") if isinstance(doc.data, dict) else None
        for name in facts if isinstance(facts, dict) else ():
            errors.unavailable_facts.setdefault(str(name), doc.file)
        return None
    return broken


def _load_rule(doc: YamlDocument, facts: dict, valuesets: dict, errors: _Collector) -> Rule | None:
    if not isinstance(doc.data, dict):
        errors.add(doc.position(()), "a rule file must hold one YAML mapping (id, version, status, ...)")
        return None
    if not errors.schema(doc, schema_validator("rule.schema.json")):
        return None
    data = doc.data
    params = data.get("parameters", {})
    ok = True
    for pname, param in params.items():
        if "unit" in param:
            try:
                ucum.parse(param["unit"])
            except ucum.UnitError as exc:
                errors.add(doc.position(("parameters", pname, "unit")), f"parameters.{pname}.unit: {exc}")
                ok = False

    said_unavailable: set[str] = set()  # a fact or value set whose file has errors is named once per rule

    def unavailable_once(name: str) -> bool:
        first = name not in said_unavailable
        said_unavailable.add(name)
        return first

    def condition(raw, path):
        nonlocal ok
        try:
            return parse_condition(raw, path, facts, valuesets, params,
                                   unavailable_facts=errors.unavailable_facts,
                                   unavailable_valuesets=errors.unavailable_valuesets,
                                   plausible=errors.plausible)
        except ConditionError as exc:
            for problem in exc.errors:
                if problem.unavailable is None or unavailable_once(problem.unavailable):
                    field_name = ".".join(str(p) for p in problem.path)
                    errors.add(doc.position(problem.path), f"{field_name}: {problem.message}")
            ok = False
            return None

    errors_before = len(errors.errors)
    cond = condition(data["when"], ("when",))
    card = data["card"]
    variants = []
    for i, var in enumerate(card.get("variants", [])):
        path = ("card", "variants", i)
        variants.append(Variant(
            condition(var["when"], path + ("when",)), var.get("indicator"),
            _template(var.get("summary"), path + ("summary",), doc, errors),
            _template(var.get("detail"), path + ("detail",), doc, errors),
        ))
    suggestion_conditions = [
        condition(s["when"], ("card", "suggestions", i, "when")) if "when" in s else None
        for i, s in enumerate(card.get("suggestions", []))
    ]
    sections = [
        (condition(sec["when"], ("card", "sections", i, "when")),
         _template(sec["detail"], ("card", "sections", i, "detail"), doc, errors))
        for i, sec in enumerate(card.get("sections", []))
    ]
    summary = _template(card["summary"], ("card", "summary"), doc, errors)
    detail = _template(card.get("detail"), ("card", "detail"), doc, errors)
    if summary is None or (card.get("detail") and detail is None) or any(t is None for _, t in sections):
        ok = False
    checked: list[tuple[tuple, Node | None]] = [(("when",), cond)]
    checked += [(("card", "variants", i, "when"), v.condition) for i, v in enumerate(variants)]
    # a suggestion's or section's condition is compiled on its own and counts only when the rule fires
    checked += [(("card", "suggestions", i, "when"), node) for i, node in enumerate(suggestion_conditions)]
    checked += [(("card", "sections", i, "when"), node) for i, (node, _) in enumerate(sections)]
    for path, node in checked:
        if node is None:
            continue
        try:
            to_durable(node)
        except ValueError as exc:
            errors.add(doc.position(path), f"{'.'.join(map(str, path))}: {exc}")
            ok = False

    used = set()
    for node in [cond] + [var.condition for var in variants] + suggestion_conditions + [n for n, _ in sections]:
        if node is not None:
            used |= {leaf.fact for leaf in node.leaves()} | {leaf.other[0] for leaf in node.leaves() if leaf.other}
    # every template reference must name a fact attribute or a parameter (checked even when the
    # condition has errors, so one run reports them all)
    template_paths: list[tuple[tuple, Template | None]] = [(("card", "summary"), summary), (("card", "detail"), detail)]
    for i, var in enumerate(variants):
        template_paths += [(("card", "variants", i, "summary"), var.summary), (("card", "variants", i, "detail"), var.detail)]
    template_paths += [(("card", "sections", i, "detail"), t) for i, (_, t) in enumerate(sections)]
    template_paths += _suggestion_templates(card, doc, errors)
    if len(errors.errors) > errors_before:
        ok = False
    kinds = {}
    for path, template in template_paths:
        if template is None:
            continue
        for placeholder in template.placeholders:
            for ref in placeholder.references:
                kind = _reference_kind(ref, facts, params)
                head = ref.partition(".")[0]
                if kind is None and head not in facts and head in errors.unavailable_facts:
                    if unavailable_once(head):
                        errors.add(doc.position(path), f"{'.'.join(map(str, path))}: fact '{head}' is not available: "
                                   f"{errors.unavailable_facts[head]} has errors")
                    ok = False
                    continue
                if kind is None:
                    errors.add(doc.position(path), f"{'.'.join(map(str, path))}: unknown reference '{ref}' in "
                               f"{{{placeholder.text}}} (use fact.attribute, fact.unit or param.NAME)")
                    ok = False
                    continue
                kinds[ref] = kind
                if not ref.startswith(("param.", "patient.", "now.")):
                    used.add(ref.split(".")[0])
    for path, template in [(("card", "summary"), summary)] + [
        (("card", "variants", i, "summary"), v.summary) for i, v in enumerate(variants) if v.summary
    ]:
        if ok and template.max_length(kinds) > SUMMARY_MAX:
            errors.add(doc.position(path), f"{'.'.join(map(str, path))}: summary can reach "
                       f"{template.max_length(kinds)} characters with the longest values; the limit is {SUMMARY_MAX}")
            ok = False
    if not ok:
        return None
    return Rule(
        id=data["id"], version=data["version"], status=data["status"], title=data["title"], hooks=data["hooks"],
        file=doc.file, source=data, condition=cond, variants=variants, params=params,
        summary=summary, detail=detail, facts=used, suggestion_conditions=suggestion_conditions,
        sections=sections,
    )


def _template(text, path, doc, errors) -> Template | None:
    if text is None:
        return None
    try:
        return Template(text)
    except TemplateError as exc:
        errors.add(doc.position(path), f"{'.'.join(map(str, path))}: {exc}")
        return None


def _suggestion_templates(card: dict, doc, errors):
    out = []
    for i, suggestion in enumerate(card.get("suggestions", [])):
        path = ("card", "suggestions", i)
        out.append((path + ("label",), _template(suggestion["label"], path + ("label",), doc, errors)))
        for j, action in enumerate(suggestion.get("actions", [])):
            apath = path + ("actions", j)
            out.append((apath + ("description",), _template(action["description"], apath + ("description",), doc, errors)))
            for text in _strings(action["resource"]):
                out.append((apath + ("resource",), _template(text, apath + ("resource",), doc, errors)))
    return out


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _reference_kind(ref: str, facts: dict, params: dict) -> str | None:
    if SPECIAL.match(ref):
        return "text"
    head, _, attr = ref.partition(".")
    if head == "param":
        if attr not in params:
            return None
        return f"quantity:{params[attr]['unit']}" if params[attr].get("unit") else "number"
    definition = facts.get(head)
    if definition is None:
        return None
    if attr == "unit":
        return f"unit:{definition.unit or ''}"
    if attr not in KIND_ATTRIBUTES[definition.kind]:
        return None
    if attr in LIST_ATTRIBUTES:
        return "list"
    if attr in TEXT_ATTRIBUTES:
        return "text"
    if definition.kind == "patient" and definition.field == "gender":
        return "text"
    return "number" if attribute_unit(definition, attr) is not None or attr != "present" else "text"
