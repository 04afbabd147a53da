"""`pacecds release | diff | rules`: the governance commands."""
from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

from engine.bundled import RULES_DIR
from engine.rulestree import MANIFEST, read_manifest

from .attributes import format_source_attributes_markdown, ruleset_source_attributes
from .diff import DiffError, diff_trees, format_diff, materialise
from .manifest import (
    PUBLIC_KEYS_ENV,
    check_manifest,
    clinical_approval_status,
    clinical_approvals,
    generate_release_key,
    sign_manifest,
    write_manifest,
)


def register_governance_commands(subparsers) -> None:
    r = subparsers.add_parser("release", help="write or check the release manifest (rules/ruleset.yaml)",
                              description="Write the release manifest with the sha256 of every rule file, "
                                          "or with --check verify the tree still matches it.")
    r.add_argument("rules_dir", nargs="?", default="rules", metavar="RULES_DIR")
    r.add_argument("--check", action="store_true", help="only check; exit 1 if the files differ from the manifest")
    r.add_argument("--version", dest="release_version", help="release version to record")
    r.add_argument("--name", help="ruleset name to record")
    r.add_argument("--released", help="release date (YYYY-MM-DD; default today or the one recorded)")
    r.add_argument("--approved-by", action="append", default=[], metavar="NAME",
                   help="record a clinical sign-off of this release by NAME, dated today (repeatable)")
    r.add_argument("--reviewed-by", action="append", default=[], metavar="NAME",
                   help="record a review by NAME that is not a clinical sign-off (e.g. the project's content "
                        "review), dated today (repeatable)")
    r.add_argument("--role", help="role of the approver(s), e.g. 'clinical governance chair'")
    r.add_argument("--sign", metavar="PRIVATE_KEY", help="sign the release with this Ed25519 key (PEM)")
    r.add_argument("--signer", help="who signs (recorded with the signature)")
    r.add_argument("--public-key", action="append", default=None, metavar="PEM",
                   help=f"with --check: require a signature by this key (default: ${PUBLIC_KEYS_ENV})")
    r.add_argument("--keygen", metavar="PRIVATE_KEY",
                   help="create an Ed25519 key pair (PRIVATE_KEY and PRIVATE_KEY.pub) and exit")
    r.set_defaults(func=cmd_release)

    d = subparsers.add_parser("diff", help="what changed between two rule releases",
                              description="Compare two rules trees (directories, or git:REV for rules/ at a "
                                          "revision): rules added/removed/changed field by field, value-set "
                                          "membership; exit 1 when a rule changed without a version bump.")
    d.add_argument("old", metavar="OLD")
    d.add_argument("new", metavar="NEW")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_diff)

    s = subparsers.add_parser("rules", help="list rules with their source attributes (HTI-1)")
    s.add_argument("--rules", dest="rules_dir", default=str(RULES_DIR), metavar="DIR",
                   help="rules directory (default: the bundled rules)")
    s.add_argument("--format", choices=("json", "markdown"), default="markdown")
    s.add_argument("rule_id", nargs="?", help="only this rule")
    s.set_defaults(func=cmd_rules)


def cmd_release(args) -> int:
    if args.keygen:
        try:
            priv, pub = generate_release_key(args.keygen)
        except FileExistsError:
            print(f"pacecds release: {args.keygen} exists; not overwriting a key", file=sys.stderr)
            return 2
        print(f"wrote {priv} (keep it secret) and {pub} (give it to the service: {PUBLIC_KEYS_ENV})")
        return 0
    root = Path(args.rules_dir)
    if not root.is_dir():
        print(f"pacecds release: {root}: not a directory", file=sys.stderr)
        return 2
    if args.check:
        problems = check_manifest(root, public_keys=args.public_key)
        for p in problems:
            print(p)
        if not problems:
            m = read_manifest(root)
            print(f"OK: {root} is release {m.get('name')} {m.get('version')} "
                  f"({len(m.get('files') or {})} files match the manifest)")
        return 1 if problems else 0
    approvals = [{"by": name, **({"role": args.role} if args.role else {}), "date": dt.date.today().isoformat(),
                  "kind": kind}
                 for kind, names in (("clinical", args.approved_by), ("content-review", args.reviewed_by))
                 for name in names]
    m = write_manifest(root, name=args.name, version=args.release_version, released=args.released,
                       approvals=approvals)
    print(f"wrote {root / MANIFEST}: {m['name']} {m['version']}, {len(m['files'])} files, "
          f"{len(m['rules'])} rules, content sha256 {m['content_sha256']}")
    if not m["approvals"]:
        print("warning: the release has no approvals yet (add with --approved-by NAME)", file=sys.stderr)
    elif not clinical_approvals(m):
        print(f"warning: {clinical_approval_status(m)['warning']}", file=sys.stderr)
    if args.sign:
        try:
            sig = sign_manifest(root, args.sign, signer=args.signer)
        except (OSError, ValueError) as e:
            print(f"pacecds release: cannot sign: {e}", file=sys.stderr)
            return 2
        print(f"signed with key {sig['keyid']}")
    return 0


def cmd_diff(args) -> int:
    with tempfile.TemporaryDirectory(prefix="pacecds-diff-") as tmp:
        try:
            old = materialise(args.old, Path(tmp) / "old")
            new = materialise(args.new, Path(tmp) / "new")
        except DiffError as e:
            print(f"pacecds diff: {e}", file=sys.stderr)
            return 2
        rep = diff_trees(old, new)
        rep["old"]["path"], rep["new"]["path"] = args.old, args.new
    if args.json:
        print(json.dumps(rep, indent=2, ensure_ascii=False))
    else:
        print(format_diff(rep))
    return 0 if rep["ok"] else 1


def cmd_rules(args) -> int:
    root = Path(args.rules_dir)
    if not root.is_dir():
        print(f"pacecds rules: {root}: not a directory", file=sys.stderr)
        return 2
    items = ruleset_source_attributes(root)
    if args.rule_id:
        items = [i for i in items if i["id"] == args.rule_id]
        if not items:
            print(f"pacecds rules: no rule {args.rule_id} in {root}", file=sys.stderr)
            return 1
    if args.format == "json":
        print(json.dumps(items, indent=2, ensure_ascii=False))
    else:
        m = read_manifest(root)
        print(format_source_attributes_markdown(
            items, title=f"{m.get('name') or 'Rules'} {m.get('version') or ''}: source attributes".strip()))
    return 0
