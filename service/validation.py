"""JSON parsing and JSON Schema validation of CDS Hooks documents (schemas/cds-hooks/*.schema.json).

Messages name the member that is wrong and never echo its value: a value may be an access token or PHI.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import orjson
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from engine.bundled import SCHEMA_DIR as BUNDLED_SCHEMAS

from .errors import ApiError

SCHEMA_DIR = BUNDLED_SCHEMAS / "cds-hooks"
MAX_ERRORS = 5


def _type_without_repr(validator, types, instance, schema):
    """jsonschema's `type` keyword, without repr() of the instance in the message.

    Speed: the stock message embeds repr(instance), and every valid prefetch resource first fails the
    `{"type": "null"}` branch of its anyOf, so each request paid for repr() of its whole prefetch
    (~1.5 ms of a 2.5 ms check for a 220-resource patient). describe() never shows error messages
    (they may hold PHI), so only the message text changes, never which errors are found.
    """
    types = [types] if isinstance(types, str) else types
    if not any(validator.is_type(instance, t) for t in types):
        yield ValidationError(f"value is not of type {', '.join(map(repr, types))}")


_Validator = validators.extend(Draft202012Validator, {"type": _type_without_repr})


@functools.lru_cache(maxsize=16)  # "request", "feedback", "context-<served hook>" (docs/caches.md)
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return _Validator(schema)


def _reject_constant(token: str):
    raise ValueError(f"{token} is not valid JSON")


def parse_json_body(raw: bytes) -> dict:
    """Strict JSON: UTF-8, an object at the top, no NaN/Infinity, bounded nesting."""
    if not raw or not raw.strip():
        raise ApiError(400, "The request body is empty; a JSON object is required")
    # Speed: orjson parses a 150 kB request about twice as fast as json. It accepts a subset of what
    # the strict stdlib parse below accepts (no NaN/Infinity, UTF-8 only, bounded depth), so anything
    # it refuses is parsed again by the stdlib path, which keeps every error message as it was.
    # One known difference: an integer beyond 64 bits comes back as a float (never valid FHIR or CDS Hooks).
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if not isinstance(doc, dict):
            raise ApiError(400, "The request body must be a JSON object")
        if b"\\u0000" in raw:  # orjson refuses lone surrogates, not an escaped NUL
            _check_text(doc)
        return doc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "The request body is not UTF-8 encoded JSON") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "The request body is nested too deeply") from None
    except ValueError as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise ApiError(400, f"The request body is not valid JSON: {msg}{where}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "The request body must be a JSON object")
    _check_text(doc)
    return doc


_BAD_TEXT = "The request body holds text that is not valid: a NUL character or a lone UTF-16 surrogate"


def _bad_text(s: str) -> bool:
    if "\x00" in s:
        return True
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\ud800): not a Unicode character, cannot be stored
        return True
    return False


def _check_text(doc) -> None:
    """No NUL and no lone surrogate anywhere (keys or values): neither is text a database or a clinician can
    use, and both made the audit store fail with a 500."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if _bad_text(k):
                    raise ApiError(400, _BAD_TEXT)
                if isinstance(v, str):
                    if _bad_text(v):
                        raise ApiError(400, _BAD_TEXT)
                elif isinstance(v, (dict, list)):
                    stack.append(v)
        elif isinstance(node, list):
            for v in node:
                if isinstance(v, str):
                    if _bad_text(v):
                        raise ApiError(400, _BAD_TEXT)
                elif isinstance(v, (dict, list)):
                    stack.append(v)


def _path(err: ValidationError, prefix: str) -> str:
    parts = [prefix] if prefix else []
    for p in err.absolute_path:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        else:
            parts.append(str(p))
    return ".".join(parts) or "(root)"


def describe(err: ValidationError, prefix: str = "") -> tuple[str, str]:
    """(FHIRPath-like location, value-free message) for one validation error."""
    where = _path(err, prefix)
    v = err.validator
    if v == "required":
        missing = [m for m in err.validator_value if isinstance(err.instance, dict) and m not in err.instance]
        name = missing[0] if missing else "?"
        return (f"{where}.{name}" if where != "(root)" else name), f"required member '{name}' is missing"
    if v == "dependentRequired":
        for trigger, needs in err.validator_value.items():
            if isinstance(err.instance, dict) and trigger in err.instance:
                absent = [n for n in needs if n not in err.instance]
                if absent:
                    return where, f"'{absent[0]}' is required when '{trigger}' is present"
    if v == "type":
        t = err.validator_value
        return where, f"must be of type {t if isinstance(t, str) else ' or '.join(t)}"
    if v in ("enum",):
        return where, "must be one of " + ", ".join(json.dumps(x) for x in err.validator_value)
    if v == "const":
        return where, f"must be {json.dumps(err.validator_value)}"
    if v == "pattern":
        return where, "has an invalid format"
    if v in ("minLength", "minItems", "minProperties"):
        return where, "must not be empty"
    if v == "maxLength":
        return where, f"is longer than {err.validator_value} characters"
    if v == "maxItems":
        return where, f"has more than {err.validator_value} items"
    if v == "additionalProperties":
        return where, "has members that are not allowed here"
    if v in ("anyOf", "oneOf"):
        return where, "must be a FHIR resource (an object with resourceType) or null" \
            if "prefetch" in where else "does not match any allowed form"
    if v == "not":
        return where, "has a member or value that is not allowed here"
    return where, "is not valid"


def check(doc, schema: str, prefix: str = "") -> None:
    """Raise ApiError(400) naming up to MAX_ERRORS problems, the most relevant first."""
    errors = sorted(validator(schema).iter_errors(doc), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    seen: list[tuple[str, str]] = []
    for e in errors:
        item = describe(e, prefix)
        if item not in seen:
            seen.append(item)
        if len(seen) >= MAX_ERRORS:
            break
    message = "; ".join(f"{w}: {m}" for w, m in seen)
    code = "required" if seen[0][1].startswith("required") else "structure"
    raise ApiError(400, message, code=code, expression=[w for w, _ in seen])


def is_valid(doc, schema: str) -> bool:
    return validator(schema).is_valid(doc)


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"
