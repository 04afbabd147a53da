"""`pacecds audit verify | export | show HOOKINSTANCE | list | stats [--since DATE]`.

These commands only read: each names the store it opened (on standard error, so JSON output
stays JSON) and refuses to create one. A missing SQLite file, a database without the audit
tables or (for `list --patient`) a missing audit key is an error, never something to create;
the service and `pacecds evaluate --audit` create them.

Exit codes: 0 fine, 1 the log failed verification (or the record was not found),
2 the store could not be opened (or there is none).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import uuid
from typing import Any

from .record import format_time


def register_audit_commands(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("audit", help="inspect and verify the decision log",
                              description="Inspect and verify the tamper-evident decision log. These commands "
                                          "only read an existing log; they never create one (nor an audit key).")
    p.add_argument("--database-url", metavar="URL",
                   help="SQLAlchemy URL of the log (default: PACECDS_DATABASE_URL, else var/pacecds-audit.db)")
    sub = p.add_subparsers(dest="audit_command", title="commands")
    sub.required = True

    v = sub.add_parser("verify", help="recompute the hash chain; name the first changed, inserted or deleted record")
    v.add_argument("--json", action="store_true", help="machine-readable report")
    v.add_argument("--expect-head", metavar="SHA256",
                   help="a chain-head hash noted earlier: fail unless it is still a record of the chain")
    v.add_argument("--no-seals", action="store_true",
                   help="check the hash chain and tables without the audit key (then a database writer could "
                        "have forged records: see docs/security.md)")
    v.add_argument("--file", metavar="EXPORT.jsonl",
                   help="verify an export (from `audit export`) instead of the database")
    v.set_defaults(func=cmd_verify)

    e = sub.add_parser("export", help="write the log as JSON lines that can be verified without the database")
    e.add_argument("--since", metavar="DATE", type=parse_since, help="from the first record at or after DATE")
    e.add_argument("--output", "-o", metavar="FILE", help="write here instead of standard output")
    e.set_defaults(func=cmd_export)

    s = sub.add_parser("show", help="the stored decision for a hookInstance (or a card uuid), explained")
    s.add_argument("hook_instance", metavar="HOOKINSTANCE", nargs="?")
    s.add_argument("--card", metavar="UUID", help="the decision that returned this card")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    ls = sub.add_parser("list", help="decisions, newest first, for a patient and/or a rule")
    ls.add_argument("--patient", metavar="ID", help="patient id (matched through the pseudonymous key)")
    ls.add_argument("--rule", metavar="RULE_ID", help="only decisions where this rule fired (or shadow-fired)")
    ls.add_argument("--since", metavar="DATE", type=parse_since)
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    st = sub.add_parser("stats", help="per rule: evaluated, fired, accepted, overridden, override reasons")
    st.add_argument("--since", metavar="DATE", type=parse_since,
                    help="only records from this date (YYYY-MM-DD) or time (ISO 8601) on")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)
    sub.metavar = "{" + ",".join(sub.choices) + "}"   # every command, also in "required" errors
    return p


def parse_since(text: str) -> str:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or ISO 8601 time: {text!r}")
    return format_time(t)


def _open(args):
    """The existing store, named on standard error; None (after one line saying why) if there is none
    or it cannot be opened. Never creates the var/ directory, a SQLite file or the tables."""
    from . import config
    from .store import AuditStore, NoDecisionLog
    url = getattr(args, "database_url", None)
    cmd = f"pacecds audit {getattr(args, 'audit_command', None) or ''}".rstrip()
    source = config.url_source(url)
    try:
        store = AuditStore.open_existing(url)
    except NoDecisionLog as e:
        print(f"{cmd}: {e} ({source}; the service creates it on first start)", file=sys.stderr)
        return None
    except Exception as e:  # noqa: BLE001 - one clear line instead of a traceback
        print(f"{cmd}: cannot open the decision log: {e.__class__.__name__}: {_one_line(e)}", file=sys.stderr)
        return None
    print(f"{cmd}: reading the decision log at {config.describe_url(store.engine.url.render_as_string(False))} "
          f"({source})", file=sys.stderr)
    return store


def _one_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


def cmd_verify(args) -> int:
    if getattr(args, "file", None):
        return _verify_file(args)
    store = _open(args)
    if store is None:
        return 2
    try:
        rep = store.verify(seals=not args.no_seals)
        anchor_ok = True
        if args.expect_head:
            anchor_ok = _hash_in_chain(store, args.expect_head)
    finally:
        store.close()
    if not rep.seals_checked and not args.no_seals:
        from . import config
        print("pacecds audit verify: cannot check the records' seals without the audit key the service uses "
              f"({config.ENV_KEY} is not set and there is no key file at "
              f"{config.var_dir(create=False) / config.KEY_FILE}); give that key, or pass --no-seals to check "
              "the hash chain only", file=sys.stderr)
        return 2
    if args.json:
        out = rep.as_dict()
        if args.expect_head:
            out["expected_head_found"] = anchor_ok
        print(json.dumps(out, indent=2))
    else:
        if rep.ok:
            print(f"OK: {rep.records} records; chain head is record {rep.head_seq}, sha256 {rep.head_hash}")
            print("every record is sealed with the audit key" if rep.seals_checked else
                  "seals NOT checked (--no-seals): records added or rewritten by a database writer would pass")
        else:
            first = rep.first_bad
            print(f"FAILED: the decision log has been tampered with; first bad record: {first}")
            for p in rep.problems[1:]:
                print(f"  also {p}")
        if args.expect_head and not anchor_ok:
            print(f"FAILED: the expected head {args.expect_head} is no longer in the chain "
                  "(records were rewritten or removed)")
    return 0 if rep.ok and anchor_ok else 1


def _verify_file(args) -> int:
    from . import config
    from .store import verify_export
    key = None
    if not args.no_seals:
        try:
            key = config.load_audit_key(create=False)
        except config.MissingAuditKey:
            key = None
    try:
        with open(args.file, encoding="utf-8") as f:
            rep = verify_export(f, key=key)
    except OSError as e:
        print(f"pacecds audit: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rep.as_dict(), indent=2))
    elif rep.ok:
        print(f"OK: {rep.records} exported records chain correctly; last is record {rep.head_seq}, "
              f"sha256 {rep.head_hash}")
        print("every record is sealed with the audit key" if rep.seals_checked else
              "seals NOT checked (no audit key, or --no-seals): compare the last hash with a head you kept")
    else:
        print(f"FAILED: the export has been altered; first bad record: {rep.first_bad}")
        for p in rep.problems[1:]:
            print(f"  also {p}")
    ok = rep.ok
    if args.expect_head and ok and rep.head_hash != args.expect_head:
        print(f"FAILED: the export ends at {rep.head_hash}, not at the expected {args.expect_head}")
        ok = False
    return 0 if ok else 1


def cmd_export(args) -> int:
    store = _open(args)
    if store is None:
        return 2
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    n = 0
    try:
        for item in store.export(since=args.since):
            out.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    finally:
        store.close()
        if args.output:
            out.close()
    print(f"exported {n} records", file=sys.stderr)
    return 0


def _hash_in_chain(store, h: str) -> bool:
    import sqlalchemy as sa
    from .record import GENESIS_HASH
    from .store import records
    if h == GENESIS_HASH:
        return True
    with store.engine.connect() as conn:
        return conn.execute(sa.select(records.c.seq).where(records.c.hash == h)).first() is not None


def cmd_show(args) -> int:
    if bool(args.hook_instance) == bool(args.card):
        print("pacecds audit show: give a HOOKINSTANCE or --card UUID", file=sys.stderr)
        return 2
    store = _open(args)
    if store is None:
        return 2
    try:
        rec = store.get(args.hook_instance) if args.hook_instance else store.get_by_card(args.card)
    finally:
        store.close()
    if rec is None:
        what = f"hookInstance {args.hook_instance}" if args.hook_instance else f"card {args.card}"
        print(f"no decision recorded for {what}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rec, indent=2, ensure_ascii=False))
    else:
        print(format_decision(rec))
    return 0


def cmd_list(args) -> int:
    from .config import MissingAuditKey
    store = _open(args)
    if store is None:
        return 2
    try:
        found = store.find(patient_id=args.patient, rule_id=args.rule, since=args.since, limit=args.limit)
    except MissingAuditKey as e:
        print(f"pacecds audit list: {e}: cannot match patient ids without the key the service uses",
              file=sys.stderr)
        return 2
    finally:
        store.close()
    if args.json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return 0
    for d in found:
        fired = ", ".join(d["fired"]) or "no rule fired"
        shadow = f"; shadow: {', '.join(d['shadow'])}" if d["shadow"] else ""
        print(f"{d['seq']:>8}  {d['time']}  {d['hook']:<13} {d['hookInstance']}  {fired}{shadow}")
    print(f"{len(found)} decision(s)", file=sys.stderr)
    return 0


def cmd_stats(args) -> int:
    store = _open(args)
    if store is None:
        return 2
    try:
        st = store.stats(since=args.since)
    finally:
        store.close()
    if args.json:
        print(json.dumps(st, indent=2, ensure_ascii=False))
    else:
        print(format_stats(st))
    return 0


# ---- human-readable text ------------------------------------------------------------

def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _fact_line(name: str, fact: Any) -> str:
    if not isinstance(fact, dict):
        return f"{name} = {fact}"
    unit = fact.get("unit")
    unit_s = f" {unit}" if unit not in (None, "", "1") else ""
    if "values" in fact and isinstance(fact["values"], dict):
        vals = dict(fact["values"])
        main = vals.pop("value", None)
        vals.pop("present", None)
        s = f"{name} = {_fmt(main) + unit_s if main is not None else '(no value)'}"
        if vals:
            s += " (" + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(vals.items())) + ")"
    else:
        s = f"{name} = {_fmt(fact.get('value'))}{unit_s}"
    prov = fact.get("provenance") or []
    if prov:
        s += "   from " + ", ".join(str(p) for p in prov)
    return s


def _condition_lines(node: Any, depth: int, out: list[str]) -> None:
    """The engine's per-condition explanation tree: each test, its result, the value seen, provenance."""
    pad = "  " * depth
    if not isinstance(node, dict):
        return
    if "children" in node:
        out.append(f"{pad}{node.get('op')}: {node.get('result')}")
        for child in node["children"]:
            _condition_lines(child, depth + 1, out)
        return
    value = "missing" if node.get("value") is None else _fmt(node.get("value"))
    prov = node.get("provenance") or []
    src = f"   from {', '.join(map(str, prov))}" if prov else ""
    out.append(f"{pad}{node.get('test')}: {node.get('result')} (saw {value}){src}")


def format_decision(rec: dict) -> str:
    rs = rec.get("ruleset") or {}
    out = [
        f"Decision record {rec.get('seq')} at {rec.get('time')}",
        f"  hook {rec.get('hook')}, hookInstance {rec.get('hookInstance')}, service {rec.get('serviceId')}",
        f"  patient key {rec.get('patientKey')} (key id {rec.get('keyId')})",
        f"  ruleset {rs.get('name')} {rs.get('version')} sha256 {rs.get('sha256')}",
        f"  latency {rec.get('latencyMs')} ms",
    ]
    if rec.get("sameHookInstance"):
        out.append(f"  note: {rec['sameHookInstance']} earlier decision(s) carry the same hookInstance "
                   "(a retried request); this is the latest")
    fired = rec.get("rulesFired") or []
    shadow = rec.get("shadow") or []
    expl = rec.get("explanation") if isinstance(rec.get("explanation"), dict) else {}
    expl_rules = {r.get("id"): r for r in expl.get("rules") or [] if isinstance(r, dict)}
    out.append("")
    out.append(f"Rules fired ({len(fired)}):")
    for f in fired:
        out.append(f"  {f.get('id')} {f.get('version')}")
        for name, fact in (f.get("facts") or {}).items():
            out.append("    fact " + _fact_line(name, fact))
        if f.get("id") in expl_rules:
            _condition_lines(expl_rules[f.get("id")].get("condition"), 2, out)
    done = {f.get("id") for f in fired} | {f.get("id") for f in shadow}
    not_fired = [e for e in rec.get("rulesEvaluated") or [] if e.get("id") not in done]
    out.append(f"Rules evaluated, not fired ({len(not_fired)}):")
    for e in not_fired:
        out.append(f"  {e.get('id')} {e.get('version')}")
        if e.get("id") in expl_rules:
            _condition_lines(expl_rules[e.get("id")].get("condition"), 2, out)
    if shadow:
        out.append("Shadow mode (draft rules that matched; no card was returned):")
        for f in shadow:
            out.append(f"  {f.get('id')} {f.get('version')}")
            for name, fact in (f.get("facts") or {}).items():
                out.append("    fact " + _fact_line(name, fact))
            if f.get("id") in expl_rules:
                _condition_lines(expl_rules[f.get("id")].get("condition"), 2, out)
    if rec.get("missing"):
        out.append("Missing data (facts the rules read that had no value): " + ", ".join(rec["missing"]))
    if not expl_rules:
        out.append("(no per-condition explanation was recorded for this decision)")
    out.append(f"Cards returned ({len(rec.get('cards') or [])}):")
    for c in rec.get("cards") or []:
        rule = c.get("rule") or {}
        out.append(f"  [{c.get('indicator')}] {c.get('summary')}")
        out.append(f"    card {c.get('uuid')} from rule {rule.get('id')} {rule.get('version')}")
    if rec.get("feedback"):
        out.append("Feedback:")
        for fb in rec["feedback"]:
            line = f"  {fb.get('outcomeTimestamp') or fb.get('time')} card {fb.get('card')}: {fb.get('outcome')}"
            reason = fb.get("overrideReason") or {}
            coding = reason.get("reason") or {}
            if coding:
                line += f", reason {coding.get('display') or coding.get('code')}"
            if reason.get("userComment"):
                line += f', comment "{reason["userComment"]}"'
            out.append(line)
    out.append("")
    out.append(f"record hash {rec.get('hash')}, previous {rec.get('prevHash')}")
    return "\n".join(out)


def format_stats(st: dict) -> str:
    since = f" since {st['since']}" if st.get("since") else ""
    out = [f"{st['evaluations']} evaluations and {st['feedback']} feedback items{since}", ""]
    head = f"{'rule':40} {'evaluated':>9} {'fired':>6} {'shadow':>6} {'cards':>6} {'accepted':>8} {'overridden':>10}"
    out.append(head)
    out.append("-" * len(head))
    for rid, e in st["rules"].items():
        out.append(f"{rid[:40]:40} {e['evaluated']:>9} {e['fired']:>6} {e['shadow_fired']:>6} {e['cards']:>6} "
                   f"{e['accepted']:>8} {e['overridden']:>10}")
        for reason, n in sorted(e["override_reasons"].items(), key=lambda kv: -kv[1]):
            out.append(f"    override reason: {reason} ({n})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """`python -m audit ...` (the same commands as `pacecds audit ...`)."""
    parser = argparse.ArgumentParser(prog="pacecds")
    register_audit_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


def record_cli_evaluation(ruleset, request: dict, result, latency_ms: float,
                          database_url: str | None = None) -> tuple[int, str]:
    """`pacecds evaluate --audit`: append the CLI's decision like the service does (before the
    cards are printed). Returns (record number, hookInstance)."""
    from .store import AuditStore
    hook_instance = request.get("hookInstance") if isinstance(request, dict) else None
    hook_instance = str(hook_instance or f"cli-{uuid.uuid4()}")
    store = AuditStore.from_config(database_url)
    try:
        seq = store.record_result(result, hook=getattr(result, "hook", None) or request.get("hook") or "patient-view",
                                  hook_instance=hook_instance, service_id="pacecds-cli",
                                  patient_id=getattr(result, "patient_id", None), latency_ms=latency_ms,
                                  ruleset=ruleset)
    finally:
        store.close()
    print(f"audit: recorded decision {seq} (hookInstance {hook_instance})", file=sys.stderr)
    return seq, hook_instance
