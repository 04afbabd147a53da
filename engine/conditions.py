"""Rule conditions: parsed from YAML, checked against fact definitions, compiled for durable-rules.

Semantics (the same in the durable-rules compilation and in `explain`):
- a comparison on a value that is missing is false, and so is its negation: missing data is
  unknown, never normal and never abnormal;
- `present: true|false` tests whether the fact has data; `in_valueset` tests whether any of
  the fact's codes is in the value set;
- thresholds with units are converted to the fact's unit when the rules load.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

from fhir_adapter import ucum
from fhir_adapter.facts import DEFAULT_ATTRIBUTE, KIND_ATTRIBUTES, Fact, is_number
from fhir_adapter.valuesets import normalize_code

OPS = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge, "eq": operator.eq, "ne": operator.ne}
NEGATED = {"lt": "gte", "gte": "lt", "gt": "lte", "lte": "gt", "eq": "ne", "ne": "eq"}
DURABLE_OP = {"lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte", "ne": "$neq"}
SYMBOL = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "=", "ne": "!="}


class ConditionError(Exception):
    """A problem in a condition, at `path`. `errors` holds every problem found in the condition (this one
    first); `unavailable` names the fact or value set when the problem is only that its file has errors."""

    def __init__(self, path: tuple, message: str, unavailable: str | None = None, errors: list | None = None):
        super().__init__(message)
        self.path = path
        self.message = message
        self.unavailable = unavailable
        self.errors = errors or [self]


def fact_key(fact: str, attr: str) -> str:
    return f"f__{fact}__{attr}"


@dataclass
class Leaf:
    """One test on one fact attribute."""

    fact: str
    attr: str
    op: str  # lt lte gt gte eq ne present in_valueset
    value: object = None  # threshold in the fact's unit, a string, a bool, or a value set name
    unit: str | None = None
    other: tuple | None = None  # (fact, attr, times) when comparing two facts
    text: str = ""  # how the author wrote it, for explanations

    @property
    def key(self) -> str:
        if self.op == "present":
            return fact_key(self.fact, "present") if self.attr == "present" else f"has__{fact_key(self.fact, self.attr)}"
        if self.op == "in_valueset":
            return f"vs__{self.fact}__{self.attr}__{self.value}"
        if self.other is not None:
            return f"cmp__{self.fact}__{self.attr}__{self.other[0]}__{self.other[1]}__{self.other[2]:g}".replace(".", "_").replace("-", "m")
        return fact_key(self.fact, self.attr)


@dataclass
class Node:
    kind: str  # all | any | not | leaf
    children: list = field(default_factory=list)
    leaf: Leaf | None = None

    def leaves(self):
        if self.leaf is not None:
            yield self.leaf
        for child in self.children:
            yield from child.leaves()


@dataclass(frozen=True)
class Context:
    """What a condition is checked against besides the facts: value sets, the rule's parameters, the facts
    and value sets whose files have errors ({name: file}), and plausible ranges ({fact: (min, max)})."""

    valuesets: dict
    params: dict
    unavailable_facts: dict = field(default_factory=dict)
    unavailable_valuesets: dict = field(default_factory=dict)
    plausible: dict = field(default_factory=dict)


def parse_condition(raw: dict, path: tuple, facts: dict, valuesets: dict, params: dict, *,
                    unavailable_facts: dict | None = None, unavailable_valuesets: dict | None = None,
                    plausible: dict | None = None) -> Node:
    """Build a Node tree; raise ConditionError naming the first problem in it, with every problem in
    its `errors`."""
    ctx = Context(valuesets, params, unavailable_facts or {}, unavailable_valuesets or {}, plausible or {})
    problems: list[ConditionError] = []
    node = _parse(raw, path, facts, ctx, problems)
    if problems:
        first = problems[0]
        raise ConditionError(first.path, first.message, first.unavailable, problems)
    return node


def _parse(raw: dict, path: tuple, facts: dict, ctx: Context, problems: list) -> Node:
    if "all" in raw or "any" in raw:
        kind = "all" if "all" in raw else "any"
        return Node(kind, [_parse(c, path + (kind, i), facts, ctx, problems) for i, c in enumerate(raw[kind])])
    if "not" in raw:
        return Node("not", [_parse(raw["not"], path + ("not",), facts, ctx, problems)])
    try:
        return Node("leaf", leaf=_parse_leaf(raw, path, facts, ctx))
    except ConditionError as exc:
        problems.append(exc)
        return Node("leaf")


def _split_fact(ref: str, path: tuple, facts: dict, ctx: Context | None = None) -> tuple[str, str, object]:
    name, _, attr = ref.partition(".")
    if name not in facts:
        if ctx is not None and name in ctx.unavailable_facts:
            raise ConditionError(path, f"fact '{name}' is not available: {ctx.unavailable_facts[name]} has errors",
                                 unavailable=name)
        raise ConditionError(path, f"unknown fact '{name}' (define it in rules/facts)")
    definition = facts[name]
    attr = attr or DEFAULT_ATTRIBUTE[definition.kind]
    if attr not in KIND_ATTRIBUTES[definition.kind]:
        known = ", ".join(sorted(KIND_ATTRIBUTES[definition.kind]))
        raise ConditionError(path, f"fact '{name}' ({definition.kind}) has no attribute '{attr}'; it has: {known}")
    return name, attr, definition


def attribute_unit(definition, attr: str) -> str | None:
    unit = KIND_ATTRIBUTES[definition.kind][attr]
    if unit == "unit":
        return definition.unit
    if unit == "unit/d":
        return f"{definition.unit}/d" if definition.unit else None
    return unit


def _param_value(name, path, params):
    if name not in params:
        raise ConditionError(path, f"unknown parameter '{name}' (declare it under parameters)")
    return params[name]


def _number(raw, path, params) -> float:
    if isinstance(raw, dict):
        return float(_param_value(raw["param"], path, params)["value"])
    return float(raw)


def _threshold(raw, path, attr_unit, params, plausible=None) -> float:
    """A number in the attribute's unit, converting quantities and parameters that carry a unit.

    `plausible` is (fact name, min, max) when the attribute is in the fact's own unit and the fact declares
    a plausible range: a threshold outside it is refused (a unit mistake, almost always)."""
    label = ""
    if isinstance(raw, dict) and "param" in raw:
        param = _param_value(raw["param"], path, params)
        label = f"parameter {raw['param']} "
        raw = {"value": param["value"], "unit": param["unit"]} if "unit" in param else param["value"]
    if isinstance(raw, dict):
        if attr_unit is None:
            raise ConditionError(path, "this attribute has no unit; compare it with a plain value")
        try:
            value = raw["value"] * ucum.conversion_factor(raw["unit"], attr_unit)
        except ucum.UnitError as exc:
            raise ConditionError(path, f"threshold unit cannot be used here: {exc}") from None
        written = f"{label}{_num(raw['value'])} {raw['unit']}"
        same_unit = raw["unit"] == attr_unit
    else:
        if isinstance(raw, bool) or not is_number(raw):
            raise ConditionError(path, f"expected a number, got {raw!r}")
        if attr_unit not in (None, "1", "d", "a") and ucum.parse(attr_unit)[1] != (0, 0, 0, 0, 0):
            raise ConditionError(path, f"threshold needs a unit (the fact is in {attr_unit}): write {{value: {raw}, unit: {attr_unit}}}")
        value, written, same_unit = float(raw), f"{label}{_num(raw)}", True
    if plausible is not None:
        name, low, high = plausible
        if not low <= value <= high:
            converted = "" if same_unit else f" is {_num(value)} {attr_unit},"
            hint = "check the unit" if not same_unit or not attr_unit.startswith("{") else "check the value"
            raise ConditionError(path, f"{written} for {name}{converted} outside the plausible "
                                       f"{_num(low)}\u2013{_num(high)} {attr_unit} for {name}; {hint}")
    return float(value)


def _num(v) -> str:
    """A number as a clinician writes it: 300000, 0.4, 2.5e+09 (never 300000.0)."""
    v = float(v)
    if v.is_integer() and abs(v) < 1e12:
        return str(int(v))
    return f"{v:.4g}"


def _parse_leaf(raw: dict, path: tuple, facts: dict, ctx: Context) -> Leaf:
    valuesets, params = ctx.valuesets, ctx.params
    (op,) = [k for k in raw if k != "fact"]
    fpath = path + ("fact",)
    name, attr, definition = _split_fact(raw["fact"], fpath, facts, ctx)
    target = raw[op]
    opath = path + (op,)
    text = f"{raw['fact']} {op} {target!r}"
    if op == "present":
        # `fact: x, present:` tests the fact; `fact: x.attr, present:` tests one attribute (e.g. ref_high)
        attr = attr if "." in raw["fact"] else "present"
        return Leaf(name, attr, "present", bool(target), text=text)
    if op == "in_valueset":
        if target not in valuesets:
            if target in ctx.unavailable_valuesets:
                raise ConditionError(opath, f"value set '{target}' is not available: "
                                            f"{ctx.unavailable_valuesets[target]} has errors", unavailable=target)
            raise ConditionError(opath, f"unknown value set '{target}' (add it to rules/valuesets)")
        if attr not in ("codes",):
            attr = "codes"
            if "codes" not in KIND_ATTRIBUTES[definition.kind]:
                raise ConditionError(fpath, f"fact '{name}' has no codes to test against a value set")
        return Leaf(name, attr, "in_valueset", target, text=text)
    unit = attribute_unit(definition, attr)
    if attr in ("codes", "names"):
        raise ConditionError(fpath, f"'{attr}' is a list; test it with in_valueset or present")
    if isinstance(target, dict) and "fact" in target:
        oname, oattr, odef = _split_fact(target["fact"], opath + ("fact",), facts, ctx)
        ounit = attribute_unit(odef, oattr)
        if (unit or "1") != (ounit or "1"):
            raise ConditionError(opath, f"cannot compare {name}.{attr} ({unit}) with {oname}.{oattr} ({ounit})")
        plus = _number(target.get("plus", 0), opath + ("plus",), params)
        times = _number(target.get("times", 1), opath + ("times",), params)
        return Leaf(name, attr, op, plus, unit, other=(oname, oattr, times), text=text)
    if isinstance(target, (str, bool)):
        if op not in ("eq", "ne"):
            raise ConditionError(opath, f"'{op}' needs a number; use eq or ne for text")
        return Leaf(name, attr, op, target, text=text)
    bounds = ctx.plausible.get(name) if KIND_ATTRIBUTES[definition.kind].get(attr) == "unit" else None
    plausible = (name, *bounds) if bounds else None
    return Leaf(name, attr, op, _threshold(target, opath, unit, params, plausible), unit, text=text)


# -- compilation to durable-rules JSON -----------------------------------------------------

MAX_CONJUNCTIONS = 64


def to_durable(node: Node) -> list[list[dict]]:
    """The condition in disjunctive normal form: a list of conjunctions of simple durable-rules tests.

    durable-rules' own nesting of $and/$or corrupts memory on some shapes (seen as
    segfaults with nested $or), so we hand it only flat conjunctions: one durable rule per
    conjunction, and the rule fires when any of them matches. Negation is pushed down to
    the leaves (De Morgan, flipped comparisons) because the engine has no `not`.
    """
    conjunctions = _dnf(node, False)
    if len(conjunctions) > MAX_CONJUNCTIONS:
        raise ValueError(f"condition expands to {len(conjunctions)} alternatives (limit {MAX_CONJUNCTIONS}); simplify it")
    return conjunctions


def _dnf(node: Node, negate: bool) -> list[list[dict]]:
    if node.kind == "not":
        return _dnf(node.children[0], not negate)
    if node.kind in ("all", "any"):
        kind = node.kind if not negate else ("any" if node.kind == "all" else "all")
        parts = [_dnf(c, negate) for c in node.children]
        if kind == "any":
            return [conj for part in parts for conj in part]
        out = [[]]
        for part in parts:
            out = [a + b for a in out for b in part]
            if len(out) > MAX_CONJUNCTIONS:
                raise ValueError(f"condition expands to more than {MAX_CONJUNCTIONS} alternatives; simplify it")
        return out
    return [_leaf_tests(node.leaf, negate)]


def _leaf_tests(leaf: Leaf, negate: bool) -> list[dict]:
    if leaf.op == "present":
        return [{leaf.key: (not leaf.value) if negate else bool(leaf.value)}]
    if leaf.op == "in_valueset":
        return [{leaf.key: not negate}]
    op = NEGATED[leaf.op] if negate else leaf.op
    if op == "eq":
        return [{leaf.key: leaf.value}]
    # a missing attribute never matches $lt/$gt/...; $neq would, so it gets a presence guard
    guard = [{f"has__{leaf.key}": True}] if op == "ne" else []
    return guard + [{DURABLE_OP[op]: {leaf.key: leaf.value}}]


# -- message building and explanation -------------------------------------------------------

def leaf_inputs(leaf: Leaf, facts: dict[str, Fact], valuesets: dict) -> object:
    """The value a leaf compares, computed from facts (None when missing)."""
    fact = facts.get(leaf.fact)
    if fact is None:
        return None
    if leaf.op == "present":
        return fact.present if leaf.attr == "present" else fact.values.get(leaf.attr) is not None
    if leaf.op == "in_valueset":
        vs = valuesets[leaf.value]
        for code in fact.values.get("codes") or []:
            system, _, value = code.partition("|")
            key = normalize_code(system, value)
            if key and key in vs:
                return True
        return False
    value = fact.values.get(leaf.attr)
    if leaf.other is None:
        return value
    other = facts.get(leaf.other[0])
    other_value = other.values.get(leaf.other[1]) if other else None
    if not is_number(value) or not is_number(other_value):
        return None
    return value - other_value * leaf.other[2]


def add_to_message(message: dict, leaf: Leaf, value) -> None:
    if leaf.op in ("present", "in_valueset"):
        message[leaf.key] = bool(value)
        return
    if isinstance(value, float) and not math.isfinite(value):
        value = None  # an overflowed or undefined result is no measurement
    message[f"has__{leaf.key}"] = value is not None
    if value is not None:
        message[leaf.key] = value


def evaluate(node: Node, values: dict) -> bool | None:
    """Three-valued evaluation (None = unknown) for explanations; mirrors to_durable."""
    if node.kind == "not":
        inner = evaluate(node.children[0], values)
        return None if inner is None else not inner
    if node.kind == "all":
        results = [evaluate(c, values) for c in node.children]
        if any(r is False for r in results):
            return False
        return None if any(r is None for r in results) else True
    if node.kind == "any":
        results = [evaluate(c, values) for c in node.children]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    leaf = node.leaf
    value = values.get(leaf.key)
    if leaf.op == "present":
        return bool(value) == bool(leaf.value)
    if leaf.op == "in_valueset":
        return bool(value)
    if value is None:
        return None
    try:
        return bool(OPS[leaf.op](value, leaf.value))
    except TypeError:
        return None


def describe_leaf(leaf: Leaf) -> str:
    if leaf.op == "present":
        name = leaf.fact if leaf.attr == "present" else f"{leaf.fact}.{leaf.attr}"
        return f"{name} is {'recorded' if leaf.value else 'not recorded'}"
    if leaf.op == "in_valueset":
        return f"{leaf.fact} has a code in value set {leaf.value}"
    unit = f" {leaf.unit}" if leaf.unit and leaf.unit not in ("1",) else ""
    if leaf.other is not None:
        oname, oattr, times = leaf.other
        scale = f"{times:g} x " if times != 1 else ""
        return f"{leaf.fact}.{leaf.attr} - {scale}{oname}.{oattr} {SYMBOL[leaf.op]} {leaf.value:g}{unit}"
    value = f"{leaf.value:g}" if is_number(leaf.value) else repr(leaf.value)
    return f"{leaf.fact}.{leaf.attr} {SYMBOL[leaf.op]} {value}{unit}"
