"""A small UCUM subset: enough to normalise the units clinical observations arrive in.

A unit string parses to (factor, dimension): factor converts a value in that unit to the
base of its dimension (g, L, mol, s, [IU], 1). Two units convert when their dimensions match.
Conversions that need an analyte's molar mass (Hb mmol/L -> g/dL) are not dimensional; fact
definitions declare them explicitly (see FactDefinition.conversions).
"""

from __future__ import annotations

import re
from functools import lru_cache

# base atoms: name -> (factor to base, dimension exponents over (mass, volume, amount, time, iu))
_ATOMS = {
    "g": (1.0, (1, 0, 0, 0, 0)),
    "L": (1.0, (0, 1, 0, 0, 0)),
    "l": (1.0, (0, 1, 0, 0, 0)),
    "mol": (1.0, (0, 0, 1, 0, 0)),
    "s": (1.0, (0, 0, 0, 1, 0)),
    "min": (60.0, (0, 0, 0, 1, 0)),
    "h": (3600.0, (0, 0, 0, 1, 0)),
    "d": (86400.0, (0, 0, 0, 1, 0)),
    "wk": (604800.0, (0, 0, 0, 1, 0)),
    "mo": (2629800.0, (0, 0, 0, 1, 0)),
    "a": (31557600.0, (0, 0, 0, 1, 0)),
    "[IU]": (1.0, (0, 0, 0, 0, 1)),
    "[iU]": (1.0, (0, 0, 0, 0, 1)),
    "U": (1.0, (0, 0, 0, 0, 1)),  # enzyme units: only compared with themselves here
    "%": (0.01, (0, 0, 0, 0, 0)),
    "1": (1.0, (0, 0, 0, 0, 0)),
}
# atoms that take metric prefixes
_METRIC = {"g", "L", "l", "mol", "s", "[IU]", "[iU]", "U"}
_PREFIXES = {"k": 1e3, "h": 1e2, "da": 1e1, "d": 1e-1, "c": 1e-2, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15}
# common non-UCUM spellings seen in EHR data, mapped to UCUM
_ALIASES = {
    "mcg": "ug", "µg": "ug", "μg": "ug", "mIU/L": "m[IU]/L", "uIU/mL": "u[IU]/mL", "µIU/mL": "u[IU]/mL",
    "μIU/mL": "u[IU]/mL", "mU/L": "m[IU]/L", "hours": "h", "hour": "h", "hr": "h", "minutes": "min",
    "steps": "{steps}", "steps/day": "{steps}/d", "/day": "/d", "score": "{score}",
}

_TERM = re.compile(r"^(?P<num>\d+(?:\.\d+)?)?(?P<atom>[^0-9^]*?)(?P<exp>-?\d+)?$")


class UnitError(ValueError):
    pass


def _atom(text: str) -> tuple[float, tuple]:
    if text in _ATOMS:
        return _ATOMS[text]
    for prefix in sorted(_PREFIXES, key=len, reverse=True):
        if text.startswith(prefix) and text[len(prefix):] in _METRIC:
            factor, dim = _ATOMS[text[len(prefix):]]
            return _PREFIXES[prefix] * factor, dim
    raise UnitError(f"unknown unit '{text}'")


def _term(text: str) -> tuple[float, tuple]:
    # annotations like {score} or {steps} are dimensionless and carry no factor
    text = re.sub(r"\{[^}]*\}", "", text)
    if text == "":
        return 1.0, (0, 0, 0, 0, 0)
    match = _TERM.match(text)
    if not match or (not match.group("atom") and not match.group("num")):
        raise UnitError(f"cannot read unit term '{text}'")
    factor = float(match.group("num")) if match.group("num") else 1.0
    if match.group("atom"):
        af, dim = _atom(match.group("atom"))
        exp = int(match.group("exp") or 1)
        factor *= af ** exp
        dim = tuple(d * exp for d in dim)
    else:
        dim = (0, 0, 0, 0, 0)
    return factor, dim


UNIT_MEMO_MAX_CHARS = 64  # a unit a caller sent is memoised only if short (real UCUM units are a few characters)


def parse(unit: str) -> tuple[float, tuple]:
    """Return (factor to base units, dimension) for a UCUM unit string."""
    if type(unit) is str and len(unit) <= UNIT_MEMO_MAX_CHARS:
        return _parse_memo(unit)
    return _parse(unit)


def _parse(unit: str) -> tuple[float, tuple]:
    if unit is None:
        raise UnitError("missing unit")
    unit = _ALIASES.get(unit.strip(), unit.strip())
    if unit == "":
        return 1.0, (0, 0, 0, 0, 0)
    factor, dim = 1.0, (0, 0, 0, 0, 0)
    parts = re.split(r"([./])", unit)
    op = "."
    for part in parts:
        if part in (".", "/"):
            op = part
            continue
        f, d = _term(part)
        if op == ".":
            factor *= f
            dim = tuple(a + b for a, b in zip(dim, d))
        else:
            factor /= f
            dim = tuple(a - b for a, b in zip(dim, d))
    return factor, dim


_parse_memo = lru_cache(maxsize=512)(_parse)  # the units of a chart and of the rules repeat; see docs/caches.md


def conversion_factor(from_unit: str, to_unit: str) -> float:
    """Multiply a value in from_unit by this to get it in to_unit; UnitError if incompatible."""
    f1, d1 = parse(from_unit)
    f2, d2 = parse(to_unit)
    if d1 != d2:
        raise UnitError(f"'{from_unit}' does not convert to '{to_unit}'")
    return f1 / f2


def same_unit(a: str, b: str) -> bool:
    try:
        return conversion_factor(a, b) == 1.0
    except UnitError:
        return False
