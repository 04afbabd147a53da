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
from functools import lru_cache
from typing import Any

GENESIS_HASH = "0" * 64

# Record format, in each record's hashed body as "format" (absent = 1).
#   1: records written before seals (they stay verifiable: same hash chain, sealed when the store was upgraded).
#   2: "time" is the time the record entered the log (never before the previous record's), feedback records
#      carry their "feedbackKey", and every record is sealed (see `seal`) as it is appended.
RECORD_FORMAT = 2
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
    # a record repeats its short strings (each condition names its facts' provenance); long ones (a clinician's
    # comment) are searched, never kept
    return _token_like_memo(text) if len(text) <= 256 else _TOKEN_RE.search(text) is not None


@lru_cache(maxsize=16_384)  # worst case ~6 MB (256-character strings; docs/caches.md)
def _token_like_memo(text: str) -> bool:
    return _TOKEN_RE.search(text) is not None


def _forbidden_key(key: str) -> bool:
    return _forbidden_key_memo(key) if len(key) <= 256 else key.lower() in FORBIDDEN_KEYS


@lru_cache(maxsize=4_096)
def _forbidden_key_memo(key: str) -> bool:
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


def build_decision_record(result: Any, *, hook: str, hook_instance: str, service_id: str,
                          patient_id: str | None, latency_ms: float, key: bytes,
                          ruleset: Any = None, time: str | None = None,
                          explanation: Any = None, suppressed: list | None = None) -> dict:
    """Turn an engine EvaluationResult into the record `AuditStore.record_evaluation` stores.

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
    # Plain data only (no model objects), as a JSON round trip would give; provenance names the Patient
    # resource itself: keep the reference, not the identifier.
    return _plain(record, str(pid) if pid else None)


THIS_PATIENT = "Patient/[this patient]"


def _plain(record: dict, pid: str | None) -> Any:
    """json.loads(canonical_json(record)) with this patient's references replaced, in one walk.

    A record is ~40 kB (the explanation names each condition's provenance); the round trip and a second
    walk for the patient cost more than the evaluation did. Anything unusual (a key that is not a string)
    takes the round trip itself, so the result is always what it would give."""
    forms = {pid, f"Patient/{pid}"} if pid else None
    suffix = f"/Patient/{pid}"

    def walk(obj):
        kind = type(obj)
        if kind is str:
            return THIS_PATIENT if forms and (obj in forms or obj.endswith(suffix)) else obj
        if obj is None or kind is bool or kind is int:
            return obj
        if kind is float:
            if obj != obj or obj in (float("inf"), float("-inf")):
                raise ValueError("Out of range float values are not JSON compliant")
            return obj
        if kind is dict:
            if not all(type(k) is str for k in obj):
                raise _NotPlain
            return {k: walk(v) for k, v in obj.items()}
        if kind is list or kind is tuple:
            return [walk(v) for v in obj]
        return walk(_json_default(obj))

    try:
        return walk(record)
    except (_NotPlain, RecursionError):
        plain = json.loads(canonical_json(record))
        return _replace_patient(plain, pid) if pid else plain


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
