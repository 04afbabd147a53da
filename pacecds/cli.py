"""The `pacecds` command line.

Exit codes: 0 success; 1 rules invalid or examples failing; 2 bad input or usage.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import orjson

from audit.cli import record_cli_evaluation, register_audit_commands
from console.cli import register_console_user_commands
from engine.bundled import RULES_DIR as DEFAULT_RULES
from engine.examples import run_examples
from engine.loader import RulesetLoadError
from engine.ruleset import HOOKS, load_ruleset
from engine.ruleset import parse_now as engine_parse_now
from fhir_adapter import InputError
from governance.cli import register_governance_commands
from governance.manifest import check_manifest
from governance.reference import build as build_reference
from population.generate import write_export

from .serve import register_commands as register_serve_command


class UsageError(Exception):
    """A bad argument or input file: exit 2 with a one-line reason."""


def parse_now(text: str | None) -> dt.datetime | None:
    try:
        return engine_parse_now(text)
    except ValueError as exc:
        raise UsageError(f"--now {exc}") from None


def read_json(path: str) -> dict:
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{path}: malformed JSON: {exc}") from None


def _load(rules_dir):
    return load_ruleset(rules_dir or DEFAULT_RULES)


def cmd_validate(args) -> int:
    try:
        rs = _load(args.rules_dir)
    except RulesetLoadError as exc:
        for error in exc.errors:
            print(error)
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    counts = {}
    for rule in rs.rules:
        counts[rule.status] = counts.get(rule.status, 0) + 1
    detail = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"ok: {rs.name} {rs.version}: {len(rs.rules)} rules ({detail}), {len(rs.tree.facts)} facts, "
          f"{len(rs.tree.valuesets)} value sets; sha256 {rs.sha256}")
    return 0


def cmd_evaluate(args) -> int:
    rs = _load(args.rules)
    request = read_json(args.input)
    started = time.perf_counter()
    result = rs.evaluate(request, now=parse_now(args.now), hook=args.hook)
    if getattr(args, "audit", False):  # recorded (committed) before the cards are printed, as in the service
        record_cli_evaluation(rs, request, result, (time.perf_counter() - started) * 1000)
    sys.stdout.write(json.dumps(result.response(), indent=2, ensure_ascii=False) + "\n")
    return 0


def cmd_explain(args) -> int:
    rs = _load(args.rules)
    request = read_json(args.input)
    explanation = rs.explain(request, now=parse_now(args.now), hook=args.hook)
    if args.format == "json":
        sys.stdout.write(json.dumps(explanation, indent=2, ensure_ascii=False, default=str) + "\n")
    else:
        sys.stdout.write(render_explanation(explanation))
    return 0


def render_explanation(explanation: dict) -> str:
    lines = [
        f"hook {explanation['hook']}, patient {explanation['patient']}, now {explanation['now']}",
        f"ruleset {explanation['ruleset']['name']} {explanation['ruleset']['version']} "
        f"(sha256 {explanation['ruleset']['sha256'][:16]}...)",
    ]
    if explanation["missing"]:
        lines.append("missing data: " + ", ".join(explanation["missing"]))
    for note in explanation["data_notes"]:
        lines.append(f"data note: {note}")
    for name, state in (explanation.get("states") or {}).items():
        values = state["values"]
        lines.append(f"{name}: {values.get('state')} ({values.get('state_text')})")
        shown = {k: v for k, v in values.items() if k not in ("state", "state_text", "present")}
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    for rule in explanation["rules"]:
        state = "FIRED" if rule["fired"] else "not fired"
        shadow = " (draft: shadow mode)" if rule["status"] == "draft" else ""
        lines.append(f"\n{rule['id']} {rule['version']}: {state}{shadow}")
        _explain_lines(rule["condition"], 1, lines)
        for j, section in enumerate(rule.get("sections") or []):
            lines.append(f"  section {j + 1}: {'shown' if section['shown'] else 'not shown'}")
            _explain_lines(section["when"], 2, lines)
        for suggestion in rule.get("suggestions") or []:
            offered = "offered" if suggestion["offered"] else f"left out: {suggestion.get('why_not')}"
            lines.append(f"  suggestion '{suggestion['label']}': {offered}")
            if "when" in suggestion:
                _explain_lines(suggestion["when"], 2, lines)
    return "\n".join(lines) + "\n"


def _explain_lines(node: dict, depth: int, lines: list) -> None:
    pad = "  " * depth
    if "children" in node:
        lines.append(f"{pad}{node['op']}: {node['result']}")
        for child in node["children"]:
            _explain_lines(child, depth + 1, lines)
        return
    value = "missing" if node["value"] is None else node["value"]
    source = f" [{', '.join(node['provenance'][-3:])}]" if node["provenance"] else ""
    lines.append(f"{pad}{node['test']}: {node['result']} (saw {value}){source}")


def cmd_test(args) -> int:
    rules_dir = Path(args.rules_dir) if args.rules_dir else DEFAULT_RULES
    examples = Path(args.examples) if args.examples else rules_dir.parent / "tests" / "examples" / "cases.yaml"
    if not args.examples and not examples.is_file():  # an installed pacecds has rules but no tests/ beside them
        print(f"pacecds test: no example cases file found (looked for {examples}); "
              f"give one with --examples CASES.yaml", file=sys.stderr)
        return 2
    rs = load_ruleset(rules_dir)
    outcomes = run_examples(rs, examples)
    failed = 0
    for outcome in outcomes:
        print(f"{'PASS' if outcome.ok else 'FAIL'} {outcome.name}")
        for problem in outcome.problems:
            print(f"     {problem}")
        failed += not outcome.ok
    print(f"{len(outcomes) - failed} passed, {failed} failed")
    # what CI checks about the rules besides the examples: the release manifest and the generated docs
    ci_failed = 0
    for check, problems, fix in _ci_checks(rules_dir):
        print(f"{'FAIL' if problems else 'PASS'} {check}")
        for problem in problems:
            print(f"     {problem}")
        if problems:
            print(f"     fix: {fix}")
            ci_failed += 1
    return 1 if failed or ci_failed else 0


def _ci_checks(rules_dir: Path) -> list[tuple[str, list[str], str]]:
    """(check, problems, the command that fixes them) for what CI checks about a rules tree."""
    checks = []
    problems = check_manifest(rules_dir, public_keys=[])
    if any("has no approvals" in p for p in problems):
        fix = f"run `pacecds release {rules_dir} --approved-by NAME --role ROLE` (the approver of this version)"
    else:
        fix = f"run `pacecds release {rules_dir}` (with `--version X.Y.Z --approved-by NAME` for a new release)"
    checks.append(("release manifest matches the rules (rules/ruleset.yaml)", problems, fix))
    # docs/rules.md beside the rules tree is generated from it (governance.reference, tools/build_rules_doc.py)
    doc = rules_dir.parent / "docs" / "rules.md"
    if doc.exists():
        current = doc.read_text(encoding="utf-8") == build_reference(rules_dir)
        checks.append((f"generated rule reference is current ({doc})",
                       [] if current else [f"{doc} is not what tools/build_rules_doc.py writes from {rules_dir}"],
                       "run `python tools/build_rules_doc.py`" if rules_dir.resolve() == DEFAULT_RULES.resolve()
                       else f"run `python tools/build_rules_doc.py {rules_dir}`"))
    return checks


def cmd_generate_export(args) -> int:
    if args.patients < 0 or args.files_per_type < 1:
        raise UsageError("--patients must be 0 or more and --files-per-type 1 or more")
    try:
        manifest = write_export(Path(args.out), args.patients, args.seed, files_per_type=args.files_per_type,
                                gzip=args.gzip, now=parse_now(args.now))
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {args.patients} patients ({len(manifest['output'])} files and manifest.json) to {args.out}")
    return 0


def cmd_impact(args) -> int:
    from tqdm import tqdm

    from population.export import ExportError
    from population.impact import run_impact

    now = parse_now(args.now)
    if now is None:
        raise UsageError("--now is required: a population run is evaluated at one fixed time")
    for name in ("workers", "partitions"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name} must be 1 or more")
    bars: list = []

    def progress(total):
        bar = tqdm(total=total, unit="patient", file=sys.stderr, disable=args.quiet, dynamic_ncols=True)
        bars.append(bar)
        return bar.update

    try:
        outcome = run_impact(args.input, rules=args.rules or str(DEFAULT_RULES), baseline=args.baseline,
                             hook=args.hook, now=now, out_dir=args.out, engine=args.engine, workers=args.workers,
                             master=args.master, partitions=args.partitions, progress=progress)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    finally:
        for bar in bars:
            bar.close()
    print(f"pacecds impact: {outcome.line()}; wrote {args.out}/impact.html", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacecds", description="Pacing and comorbidity CDS Hooks rules engine")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a rules directory; file:line:col errors")
    p.add_argument("rules_dir", nargs="?")
    p.set_defaults(func=cmd_validate)

    for name, func, help_text in (
        ("evaluate", cmd_evaluate, "evaluate a CDS Hooks request or FHIR Bundle; print the CDS Hooks response"),
        ("explain", cmd_explain, "show, for every rule, each condition with the value it saw"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("input", help="CDS Hooks request or FHIR Bundle JSON file ('-' for stdin)")
        p.add_argument("--rules", help="rules directory (default: the bundled rules)")
        p.add_argument("--hook", choices=HOOKS, help="hook to evaluate (default: the request's, or patient-view)")
        p.add_argument("--now", help="evaluation time, ISO 8601 (default: now); makes results reproducible")
        if name == "explain":
            p.add_argument("--format", choices=("text", "json"), default="text")
        if name == "evaluate":
            p.add_argument("--audit", action="store_true",
                           help="append the decision to the audit log (PACECDS_DATABASE_URL or var/)")
        p.set_defaults(func=func)

    p = sub.add_parser("test", help="run the example patients against the rules")
    p.add_argument("rules_dir", nargs="?")
    p.add_argument("--examples", help="cases file (default: tests/examples/cases.yaml beside the rules)")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("generate-export", help="write a synthetic FHIR Bulk Data export (NDJSON) for tests and benchmarks")
    p.add_argument("out", help="output directory (created if missing)")
    p.add_argument("--patients", type=int, required=True, help="number of patients")
    p.add_argument("--seed", type=int, default=0, help="random seed (same arguments, same bytes)")
    p.add_argument("--files-per-type", type=int, default=1, help="NDJSON files per resource type (default 1)")
    p.add_argument("--gzip", action="store_true", help="write .ndjson.gz files")
    p.add_argument("--now", help="the export's reference time, ISO 8601 (default 2026-11-20T12:00:00Z)")
    p.set_defaults(func=cmd_generate_export)

    p = sub.add_parser("impact", help="evaluate one release, or two compared, over a FHIR Bulk Data export",
                       description="Group a population's resources by patient, evaluate each patient at a fixed "
                                   "time, and write OUT/patients.ndjson, OUT/cards.parquet, OUT/input.json and the "
                                   "impact report OUT/impact.json and OUT/impact.html.")
    p.add_argument("input", help="Bulk Data export directory (.ndjson, .ndjson.gz) or a folder of Bundle .json files")
    p.add_argument("--rules", help="the release to evaluate (the candidate when --baseline is given): a rules "
                                   "directory or git:REV[:PATH] (default: the bundled rules)")
    p.add_argument("--baseline", metavar="DIR_OR_GIT_REV", help="the release serving today, to compare with")
    p.add_argument("--hook", choices=HOOKS, default="patient-view")
    p.add_argument("--now", required=True, help="evaluation time, ISO 8601: every patient is evaluated at it")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="local: a process per core (default); spark: PySpark (pip install 'pacecds[spark]')")
    p.add_argument("--workers", type=int, help="local engine: worker processes (default: every core)")
    p.add_argument("--master", help="spark engine: master URL (default local[*])")
    p.add_argument("--partitions", type=int, help="spark engine: partitions of the patient join (default: cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_impact)

    for register in (register_serve_command, register_audit_commands, register_governance_commands,
                     register_console_user_commands):
        register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (UsageError, InputError) as exc:
        print(f"pacecds {args.command}: {exc}", file=sys.stderr)
        return 2
    except RulesetLoadError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
