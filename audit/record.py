"""Decision records: what one evaluation decided, in a form fit for the audit log.

A record holds only what an auditor needs to trace a card to the rule version and
the facts that produced it. It never holds access tokens, JWTs or the raw request:
`build_decision_record` copies named fields only, and `scrub` removes anything
token-like that a caller might still pass in (defence in depth).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import re
from typing import Any

GENESIS_HASH = "0" * 64

# Record format, in each record's hashed body as "format" (absent = 1).
#   1: records written before seals (they stay verifiable: same hash chain, sealed when the store was upgraded).
#   2: "time" is the time the record entered the log (never before the previous record's), feedback records
#      carry their "feedbackKey", and every record is sealed (see `seal`) as it is appended.
#   3: an evaluation record is compact (`compact_record`): each fact, with its provenance, is written once under
#      "facts"; fired rules and the explanation's conditions name their facts instead of repeating them, and long
#      provenance lists are front-coded. `expand_record` gives readers the format 2 shape for every format.
RECORD_FORMAT = 3
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")

# Keys that carry credentials or whole requests; never stored, at any depth.
FORBIDDEN_KEYS = frozenset(
    k.lower()
    for k in (
        "fhirAuthorization", "access_token", "accessToken", "authorization",
        "token", "id_token", "refresh_token", "jwt", "bearer", "prefetch",
        "request", "rawRequest", "requestBody", "body", "password", "secret",
    )
)
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER_RE = re.compile(r"(?i)\bbearer\s+\S+")
_TOKEN_RE = re.compile(f"{_JWT_RE.pattern}|(?i:{_BEARER_RE.pattern[4:]})")  # either, in one search
REDACTED = "[redacted]"


def _token_like(text: str) -> bool:
    return _TOKEN_RE.search(text) is not None


def _forbidden_key(key: str) -> bool:
    return key.lower() in FORBIDDEN_KEYS


def canonical_json(obj: Any) -> str:
    """The one serialisation that is hashed: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, (_dt.datetime, _dt.date)):
        return o.isoformat()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if hasattr(o, "__dict__"):
        return {k: v for k, v in vars(o).items() if not k.startswith("_")}
    return str(o)


def chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256((prev_hash + "\n" + body).encode("utf-8")).hexdigest()


def seal_key(key: bytes) -> bytes:
    """The key that seals records, derived from the audit key (kept outside the database: PACECDS_AUDIT_KEY
    or the key file), so that a seal never reveals the pseudonymisation key nor the other way round."""
    return hmac.new(bytes(key), b"pacecds-audit-seal-v1", hashlib.sha256).digest()


def seal(key: bytes, seq: int, record_hash: str) -> str:
    """HMAC-SHA256 over a record's number and chain hash (which covers every record before it): only a
    holder of the audit key can add a record, or rewrite one, that `verify` accepts. `key` is `seal_key(...)`."""
    return hmac.digest(key, f"pacecds-record\n{int(seq)}\n{record_hash}".encode("ascii"), "sha256").hex()


def utc_now() -> str:
    # Fixed-width ISO-8601 UTC so that string order is time order (used by --since).
    return format_time(_dt.datetime.now(_dt.timezone.utc))


def format_time(t: _dt.datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def patient_key(patient_id: str | None, key: bytes) -> str | None:
    """Pseudonymous, stable per install: HMAC-SHA256(key, patient id)."""
    if patient_id is None or patient_id == "":
        return None
    return hmac.new(key, str(patient_id).encode("utf-8"), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """Names the pseudonymisation key without revealing it, so a key rotation shows in the log."""
    return hashlib.sha256(b"pacecds-audit-key-id\0" + key).hexdigest()[:16]


def scrub(obj: Any) -> tuple[Any, int]:
    """Copy `obj` without credential-bearing keys or token-looking strings; return (copy, removed)."""
    removed = 0

    def walk(o: Any) -> Any:
        nonlocal removed
        if isinstance(o, dict):
            out = {}
            for k, v in o.items():
                k = str(k)
                if _forbidden_key(k):
                    removed += 1
                    continue
                out[k] = walk(v)
            return out
        if isinstance(o, (list, tuple)):
            return [walk(v) for v in o]
        if isinstance(o, str):
            if _token_like(o):
                removed += 1
                return REDACTED
            return o
        return o

    return walk(obj), removed


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _fired(fr: Any) -> dict:
    facts = _get(fr, "facts") or {}
    out = {
        "id": _get(fr, "rule_id") or _get(fr, "id"),
        "version": _get(fr, "rule_version") or _get(fr, "version"),
        "status": _get(fr, "status"),
        "facts": facts,
    }
    if _get(fr, "card_uuid"):
        out["cardUuid"] = _get(fr, "card_uuid")
    return out


def _evaluated(item: Any) -> dict:
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return {"id": item[0], "version": item[1]}
    return {"id": _get(item, "rule_id") or _get(item, "id"),
            "version": _get(item, "rule_version") or _get(item, "version")}


def _card(card: dict, data_keys: dict | None = None) -> dict:
    ext = card.get("extension") or {}
    rule = ext.get("pacecds.rule") or {}
    out = {
        "uuid": card.get("uuid"),
        "summary": card.get("summary"),
        "indicator": card.get("indicator"),
        "rule": {"id": rule.get("id"), "version": rule.get("version")} if rule else None,
    }
    key = (data_keys or {}).get(card.get("uuid"))
    if key:
        out["dataKey"] = key
    return out


def card_data_key(fired: Any) -> str | None:
    """What the data behind a fired rule's card is: a hash of the rule id and the resources its facts used
    (provenance). New or removed data (a new day's steps, a corrected value) changes it; the passing of time
    alone does not. Used to show again a card the clinician overrode once the data behind it changed."""
    rule_id = _get(fired, "rule_id")
    facts = _get(fired, "facts") or {}
    if rule_id is None:
        return None
    used = sorted({str(p) for f in facts.values() if isinstance(f, dict) for p in f.get("provenance") or []})
    return hashlib.sha256(canonical_json({"rule": rule_id, "data": used}).encode("utf-8")).hexdigest()


def data_keys_of(result: Any) -> dict:
    """card uuid -> card_data_key for every card of an evaluation result."""
    return {_get(f, "card_uuid"): card_data_key(f) for f in _get(result, "fired") or [] if _get(f, "card_uuid")}


def _ruleset_info(result: Any, ruleset: Any) -> dict:
    src = ruleset if ruleset is not None else _get(result, "ruleset")
    if src is not None:
        return {"name": _get(src, "name"), "version": _get(src, "version"), "sha256": _get(src, "sha256")}
    # Fall back to the stamp every card carries.
    for card in _get(result, "cards") or []:
        stamp = (card.get("extension") or {}).get("pacecds.ruleset")
        if stamp:
            return {"name": stamp.get("name"), "version": stamp.get("version"), "sha256": stamp.get("sha256")}
    return {"name": None, "version": None, "sha256": None}


def _full_record(result: Any, *, hook: str, hook_instance: str, service_id: str,
                 patient_id: str | None, latency_ms: float, key: bytes,
                 ruleset: Any = None, time: str | None = None,
                 explanation: Any = None, suppressed: list | None = None) -> tuple[dict, str | None]:
    """Turn an engine EvaluationResult into a record (format 2 shape, not yet plain data) and the patient id.

    `ruleset` (name/version/sha256) is optional: without it the result's own `ruleset`
    attribute or the cards' `pacecds.ruleset` stamp is used. When `ruleset` is the engine's
    Ruleset and no `explanation` is given, the per-condition explanation is computed from
    the facts this evaluation derived (no second evaluation) so that `audit show` can
    explain the decision later from the record alone.
    """
    if explanation is None and ruleset is not None:
        explanation = explain_result(ruleset, result)
    if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
        raise ValueError("audit key must be at least 16 bytes")
    pid = patient_id if patient_id is not None else _get(result, "patient_id")
    keys = data_keys_of(result)
    record = {
        "type": "evaluation",
        "time": time or utc_now(),
        "hookInstance": hook_instance,
        "hook": hook,
        "serviceId": service_id,
        "patientKey": patient_key(pid, bytes(key)),
        "keyId": key_id(bytes(key)),
        "ruleset": _ruleset_info(result, ruleset),
        "rulesEvaluated": [_evaluated(e) for e in (_get(result, "evaluated") or [])],
        "rulesFired": [_fired(f) for f in (_get(result, "fired") or [])],
        "cards": [_card(c, keys) for c in (_get(result, "cards") or [])],
        "shadow": [_fired(f) for f in (_get(result, "shadow") or [])],
        "missing": sorted(_get(result, "missing") or []),
        "latencyMs": round(float(latency_ms), 3),
    }
    if suppressed:
        # cards decided but not shown: the clinician overrode the same card on the same data (see the service)
        record["suppressed"] = [dict(_card(c, keys), reason=reason) for c, reason in suppressed]
    if explanation is not None:
        record["explanation"] = {"rules": [
            {k: r.get(k) for k in ("id", "version", "status", "fired", "condition", "suggestions", "sections") if k in r}
            for r in (explanation.get("rules") if isinstance(explanation, dict) else explanation) or []
            if isinstance(r, dict)]}
    return record, (str(pid) if pid else None)


def build_decision_record(result: Any, **kwargs: Any) -> dict:
    """The decision record of an evaluation as readers see it (format 2 shape, every fact spelled out where it
    is used): `expand_record(decision_body(...))`. Takes the arguments of `decision_body`."""
    return expand_record(decision_body(result, **kwargs))


def decision_body(result: Any, **kwargs: Any) -> dict:
    """The compact record (format 3) that the log stores for an evaluation (see `build_decision_record`),
    already scrubbed."""
    record, pid = _full_record(result, **kwargs)
    return compact_record(record, pid, scrubbed=True)


THIS_PATIENT = "Patient/[this patient]"


def _plain(record: dict, pid: str | None, scrubbing: bool = False) -> Any:
    """json.loads(canonical_json(record)) with this patient's references replaced, in one walk.

    A record is ~40 kB (the explanation names each condition's provenance); the round trip and a second
    walk for the patient cost more than the evaluation did. Anything unusual (a key that is not a string)
    takes the round trip itself, so the result is always what it would give. `scrubbing`: what `scrub`
    would also remove (credential keys, token-like strings) is removed in the same walk."""
    forms = {pid, f"Patient/{pid}"} if pid else None
    suffix = f"/Patient/{pid}"

    def text(obj: str) -> str:
        if forms and (obj in forms or obj.endswith(suffix)):
            return THIS_PATIENT
        return REDACTED if scrubbing and _token_like(obj) else obj

    def walk(obj):
        kind = type(obj)
        if kind is str:
            return text(obj)
        if obj is None or kind is bool or kind is int:
            return obj
        if kind is float:
            if obj != obj or obj in (float("inf"), float("-inf")):
                raise ValueError("Out of range float values are not JSON compliant")
            return obj
        if kind is dict:
            if not all(type(k) is str for k in obj):
                raise _NotPlain
            if scrubbing:
                return {k: walk(v) for k, v in obj.items() if not _forbidden_key(k)}
            return {k: walk(v) for k, v in obj.items()}
        if kind is list or kind is tuple:
            if all(type(v) is str for v in obj):  # provenance: long lists of references
                return [text(v) for v in obj]
            return [walk(v) for v in obj]
        return walk(_json_default(obj))

    try:
        return walk(record)
    except (_NotPlain, RecursionError):
        plain = json.loads(canonical_json(record))
        plain = _replace_patient(plain, pid) if pid else plain
        return scrub(plain)[0] if scrubbing else plain


class _NotPlain(Exception):
    """A value the one-walk copy does not reproduce exactly (json.dumps would rewrite its keys)."""


def _replace_patient(obj: Any, pid: str) -> Any:
    forms = {pid, f"Patient/{pid}"}
    if isinstance(obj, dict):
        return {k: _replace_patient(v, pid) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_patient(v, pid) for v in obj]
    if isinstance(obj, str) and (obj in forms or obj.endswith(f"/Patient/{pid}")):
        return THIS_PATIENT
    return obj


def explain_result(ruleset: Any, result: Any) -> dict | None:
    """Per-rule, per-condition explanation of an evaluation that already ran (the engine's
    `Ruleset.explain_result`). None when the ruleset cannot explain (a test double): the record
    is then stored without an explanation rather than not at all."""
    fn = getattr(ruleset, "explain_result", None)
    if not callable(fn):
        return None
    try:
        return fn(result)
    except Exception:  # noqa: BLE001 - an explanation must never cost the decision its record
        return None


# ---- record format 3: each fact once ---------------------------------------------------------------------

_MIN_SHARED = 8  # front-code a reference only when it shares at least this much with the one before


def encode_refs(refs: Any) -> Any:
    """Front-code a provenance list: a reference that shares k >= 8 leading characters with the one before is
    written "k:rest" (an EHR's ids for one patient mostly share their type and prefix). A FHIR reference never
    starts with a digit; one that does, or starts with a backslash, is written with a leading backslash."""
    if type(refs) is not list:
        return refs
    out: list = []
    prev = ""
    for r in refs:
        if type(r) is not str:
            out.append(r)
            continue
        k = _shared(prev, r)
        if k >= _MIN_SHARED:
            out.append(f"{k}:{r[k:]}")
        elif r[:1].isdigit() or r[:1] == "\\":
            out.append("\\" + r)
        else:
            out.append(r)
        prev = r
    return out


def _shared(a: str, b: str) -> int:
    """Length of the common prefix of a and b (binary search on C-level comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


_FRONT_CODED = re.compile(r"(\d+):")


def decode_refs(refs: Any) -> Any:
    if type(refs) is not list:
        return refs
    out: list = []
    prev = ""
    for r in refs:
        if type(r) is str:
            if r[:1] == "\\":
                r = r[1:]
            else:
                m = _FRONT_CODED.match(r)
                if m:
                    r = prev[:int(m.group(1))] + r[m.end():]
            prev = r
        out.append(r)
    return out


def compact_record(record: dict, pid: str | None = None, *, scrubbed: bool = False) -> dict:
    """A format 3 evaluation record from one of format 2 shape (with this patient's references replaced).

    Each fact is written once, under "facts" (name -> values, unit, provenance); a fired or shadow-fired rule
    lists the names of its facts, and an explanation condition that names its fact ("fact") drops the
    provenance the table already holds. A fact that differs from the one of the same name already in the table
    stays inline ([name, fact] in a rule's list; its provenance on a condition), so nothing is lost.
    `scrubbed`: scrub (see `scrub`) in the same walk; the result then needs no second one."""
    facts: dict[str, Any] = {}

    def ref(name: Any, fact: Any) -> Any:
        if isinstance(name, str) and isinstance(fact, dict):
            have = facts.get(name)
            if have is None:
                facts[name] = fact
                return name
            if have == fact:
                return name
        return [name, fact]

    def fired(f: Any) -> Any:
        if not isinstance(f, dict) or not isinstance(f.get("facts"), dict):
            return f
        out = dict(f)
        out["facts"] = [ref(n, v) for n, v in f["facts"].items()]
        return out

    table: list = []          # the record's distinct conditions, children before their parents
    index: dict[str, int] = {}

    def node(n: Any) -> Any:
        """A condition as its index in the table (an identical condition, a shared exclusion, is written once)."""
        if not isinstance(n, dict):
            return n
        if isinstance(n.get("children"), list):
            entry: dict = {"op": n.get("op"), "r": _code(n.get("result")),
                           "c": [node(c) for c in n["children"]]}
        else:
            entry = {"t": n.get("test"), "r": _code(n.get("result")), "v": n.get("value")}
            name = n.get("fact")
            have = facts.get(name) if isinstance(name, str) else None
            if isinstance(name, str) and have is None and "provenance" in n:
                facts[name] = have = {"provenance": n["provenance"]}
            if not (isinstance(have, dict) and have.get("provenance") == n.get("provenance")):
                entry["p"] = n.get("provenance")
            if isinstance(name, str) and ("p" in entry or _fact_of_test(entry["t"]) != name):
                entry["f"] = name  # else the test names it ("hemoglobin.value < 12 g/dL")
            rest = {k: v for k, v in n.items()
                    if k not in ("test", "result", "value", "fact", "provenance", "threshold", "unit")}
            if rest:
                entry["x"] = rest
        key = repr(entry)  # entries are built in one key order; repr tells 1, 1.0 and True apart like JSON does
        if key not in index:
            index[key] = len(table)
            table.append(entry)
        return index[key]

    out = {k: v for k, v in record.items() if k not in ("rulesFired", "shadow", "explanation", "rulesEvaluated")}
    out["format"] = 3
    out["rulesEvaluated"] = [[e.get("id"), e.get("version")] if isinstance(e, dict) and set(e) == {"id", "version"}
                             else e for e in record.get("rulesEvaluated") or []]
    out["rulesFired"] = [fired(f) for f in record.get("rulesFired") or []]
    out["shadow"] = [fired(f) for f in record.get("shadow") or []]
    expl = record.get("explanation")
    if isinstance(expl, dict) and isinstance(expl.get("rules"), list):
        rules = [_map_whens(dict(r, condition=node(r.get("condition"))), node) if isinstance(r, dict) else r
                 for r in expl["rules"]]
        evaluated = out["rulesEvaluated"]
        if len(rules) == len(evaluated) and all(
                isinstance(r, dict) and set(r) == {"id", "version", "status", "fired", "condition"}
                and [r["id"], r["version"]] == e for r, e in zip(rules, evaluated)):
            # the same rules in the same order as rulesEvaluated: [status, fired, condition] each
            rules = [[r["status"], r["fired"], r["condition"]] for r in rules]
        out["explanation"] = dict(expl, rules=rules)
    elif expl is not None:
        out["explanation"] = expl
    out["conditions"] = table
    # the engine's facts ({"values", "unit", "provenance"}): a null unit and empty provenance go without saying
    out["facts"] = {n: {k: v for k, v in f.items() if not (k == "unit" and v is None or k == "provenance" and v == [])}
                    if isinstance(f, dict) and set(f) <= {"values", "unit", "provenance"} and "provenance" in f
                    and ("values" in f or len(f) == 1) else f
                    for n, f in facts.items()}
    plain = _plain(out, pid, scrubbing=scrubbed)
    for fact in plain["facts"].values():
        if isinstance(fact, dict) and "provenance" in fact:
            fact["provenance"] = encode_refs(fact["provenance"])
    return plain


def _map_whens(rule: dict, node: Any) -> dict:
    """A rule's explanation with each suggestion's and card section's own condition ("when") passed through
    `node`: into the shared condition table (compact) or back out of it (expand)."""
    for key in ("suggestions", "sections"):
        items = rule.get(key)
        if isinstance(items, list):
            rule[key] = [dict(i, when=node(i["when"])) if isinstance(i, dict) and "when" in i else i for i in items]
    return rule


_RESULT_CODE = {"true": True, "false": False, "unknown (missing data)": None}
_RESULT_LABEL = {True: "true", False: "false", None: "unknown (missing data)"}
_TEST_FACT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)[. ]")


def _code(label: Any) -> Any:
    """A condition's result label as true/false/null; any other label as itself (a string)."""
    return _RESULT_CODE[label] if isinstance(label, str) and label in _RESULT_CODE else label


def _fact_of_test(test: Any) -> str | None:
    """The fact a condition's test text starts with (the engine writes "fact.attr op value" or "fact is ...")."""
    m = _TEST_FACT.match(test) if isinstance(test, str) else None
    return m.group(1) if m else None


def expand_record(body: Any) -> Any:
    """Any stored record in the shape readers know (format 2): a format 3 evaluation record with each fact's
    values and provenance spelled out where a rule or condition uses it; other records as they are."""
    if not isinstance(body, dict) or body.get("format") != 3 or body.get("type") != "evaluation" \
            or not isinstance(body.get("facts"), dict):
        return body
    facts = {}
    for n, f in body["facts"].items():
        if isinstance(f, dict) and ("provenance" in f or "values" in f or not f):
            f = dict(f, provenance=decode_refs(f.get("provenance", [])))
            if "values" in f:
                f.setdefault("unit", None)
        facts[n] = f

    def fired(f: Any) -> Any:
        if not isinstance(f, dict) or not isinstance(f.get("facts"), list):
            return f
        named: dict = {}
        for r in f["facts"]:
            if isinstance(r, str):
                named[r] = facts.get(r)
            elif isinstance(r, list) and len(r) == 2:
                named[str(r[0])] = r[1]
        return dict(f, facts=named)

    table = body.get("conditions")
    if not isinstance(table, list):
        table = []
    done: list = []
    for e in table:  # children come before their parents
        if not isinstance(e, dict):
            done.append(e)
            continue
        label = _RESULT_LABEL.get(e.get("r"), e.get("r")) if e.get("r") is None or isinstance(e.get("r"), bool) \
            else e.get("r")
        if "c" in e:
            done.append({"op": e.get("op"), "result": label,
                         "children": [done[i] if isinstance(i, int) and 0 <= i < len(done) else i
                                      for i in e.get("c") or []]})
            continue
        name = e.get("f") if "f" in e or "p" in e else _fact_of_test(e.get("t"))
        fact = facts.get(name) if isinstance(name, str) else None
        prov = e["p"] if "p" in e else list(fact.get("provenance") or []) if isinstance(fact, dict) else []
        leaf = {"test": e.get("t"), "result": label, "value": e.get("v"), "threshold": None, "unit": None}
        if name is not None:
            leaf["fact"] = name
        leaf["provenance"] = prov
        leaf.update(e.get("x") or {})
        done.append(leaf)

    def node(n: Any) -> Any:
        return done[n] if isinstance(n, int) and not isinstance(n, bool) and 0 <= n < len(done) else n

    out = {k: v for k, v in body.items() if k not in ("facts", "conditions")}
    out["rulesEvaluated"] = [{"id": e[0], "version": e[1]} if isinstance(e, list) and len(e) == 2 else e
                             for e in body.get("rulesEvaluated") or []]
    out["rulesFired"] = [fired(f) for f in body.get("rulesFired") or []]
    out["shadow"] = [fired(f) for f in body.get("shadow") or []]
    expl = body.get("explanation")
    if isinstance(expl, dict) and isinstance(expl.get("rules"), list):
        rules = []
        for i, r in enumerate(expl["rules"]):
            if isinstance(r, list) and len(r) == 3 and i < len(out["rulesEvaluated"]):  # aligned: [status, fired, c]
                e = out["rulesEvaluated"][i]
                r = {"id": e.get("id"), "version": e.get("version"), "status": r[0], "fired": r[1], "condition": r[2]}
            rules.append(_map_whens(dict(r, condition=node(r.get("condition"))), node) if isinstance(r, dict) else r)
        out["explanation"] = dict(expl, rules=rules)
    return out
