"""pacecds benchmarks and stress runs.

    python -m bench generate SIZE [--patient ID] [--seed N] [--bundle] > patient.json
    python -m bench inproc  [--sizes small,standard,large] [--scale 1.0]
    python -m bench http    [--concurrency 1,16,64] [--requests 3000] [--duration 20] [--workers 2] [--threads 4]
                            [--audit sqlite|off|postgres|URL] [--patients new|repeat] [--floor]
    python -m bench http --matrix --concurrency 1,16   # log off / SQLite / PostgreSQL x new / repeated patients
    python -m bench soak    [--evaluations 100000]
    python -m bench isolation [--threads 64] [--rounds 20]
    python -m bench http-isolation [--patients 64] [--rounds 10] [--workers 2] [--threads 8]
    python -m bench record-size  # bytes per decision record, per patient size
    python -m bench impact  --patients N --engine local|spark [--workers W] [--master local[*]] [--partitions P]
    python -m bench memory  [--patients 20000] [--every 500] [--concurrency 4] [--holders]
    python -m bench report  # docs/benchmarks.md tables from bench/results/*.json

Results are written as JSON to bench/results/ (git-ignored); `report` renders the markdown tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    return path


def _ruleset(rules: str | None):
    from engine import load_ruleset

    return load_ruleset(rules or ROOT / "rules")


def cmd_generate(args) -> int:
    from .generate import make_bundle, make_request

    make = make_bundle if args.bundle else make_request
    doc = make(args.size, patient_id=args.patient or f"bench-{args.size}", seed=args.seed)
    sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def cmd_inproc(args) -> int:
    from .inproc import run

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    results = run(_ruleset(args.rules), sizes, args.scale)
    payload = {"machine": machine(), "command": " ".join(["python -m bench"] + sys.argv[1:]), "sizes": results}
    path = save("inproc", payload)
    print(f"{'size':9} {'res':>5} {'floor':>14} {'validate':>16} {'cold':>16} {'warm':>14}  warm/floor cold/validate")
    for size, r in results.items():
        cells = [f"{r[k]['median_ms']:.2f}/{r[k]['p99_ms']:.2f}" for k in ("floor", "validate", "cold", "warm")]
        print(f"{size:9} {r['resources']:>5} {cells[0]:>14} {cells[1]:>16} {cells[2]:>16} {cells[3]:>14}"
              f"  {r['warm_over_floor']:9.1f}x {r['cold_over_validate']:12.2f}x")
    print(f"(median/p99 ms) -> {path}")
    return 0


def cmd_http(args) -> int:
    from .http import matrix, matrix_table, run

    conc = [int(c) for c in args.concurrency.split(",")]
    command = " ".join(["python -m bench"] + sys.argv[1:])
    if args.matrix:
        result = matrix(concurrency=conc, requests=args.requests, duration=args.duration, workers=args.workers,
                        threads=args.threads, size=args.size, rules=args.rules, client=args.client,
                        progress=lambda m: print(m, file=sys.stderr))
        path = save("http_matrix", {"machine": machine(), "command": command, **result})
        print(matrix_table(result))
        print(f"-> {path}")
        return 0 if all(run["errors"] == 0 for r in result["rows"] for run in r["runs"]) and all(
            r["every_200_audited"] is not False for r in result["rows"]) else 1
    results = run(concurrency=conc, requests=args.requests, duration=args.duration, workers=args.workers,
                  threads=args.threads, size=args.size, rules=args.rules, port=args.port, audit=args.audit,
                  client=args.client, floor=args.floor, patients=args.patients)
    payload = {"machine": machine(), "command": command, **results}
    path = save("http_floor" if args.floor else "http", payload)
    for row in results["runs"]:
        print(f"c={row['concurrency']:3d} n={row['requests']:6d} ok={row['ok']:6d} err={row['errors']:3d} "
              f"{row['throughput_rps']:8.1f} req/s  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
              f"server CPU {row['server_cpu_ms_per_request']:.2f} ms/req  client CPU {row['client_cpu_s'] / row['seconds']:.0%}")
    if results["records"] is not None:
        print(f"decision log ({results['server']['audit']}): {results['records']} records for "
              f"{results['responses_200']} responses 200: "
              f"{'every 200 audited' if results['every_200_audited'] else 'NOT every 200 audited'}")
    print(f"-> {path}")
    return 0 if all(r["errors"] == 0 for r in results["runs"]) and results["every_200_audited"] is not False else 1


def cmd_soak(args) -> int:
    from .stress import soak

    result = soak(_ruleset(args.rules), evaluations=args.evaluations, size=args.size, cold=args.cold,
                  progress=lambda m: print(m, file=sys.stderr))
    payload = {"machine": machine(), "command": " ".join(["python -m bench"] + sys.argv[1:]), **result}
    path = save("soak_cold" if args.cold else "soak", payload)
    print(f"{result['evaluations']} evaluations in {result['seconds']:.1f}s, errors {result['errors']}, "
          f"RSS {result['rss_start_mb']:.1f} MB -> {result['rss_end_mb']:.1f} MB "
          f"({result['rss_growth_pct']:+.2f}%) -> {path}")
    return 0 if result["ok"] else 1


def cmd_isolation(args) -> int:
    from .stress import isolation

    result = isolation(_ruleset(args.rules), threads=args.threads, rounds=args.rounds, size=args.size)
    payload = {"machine": machine(), "command": " ".join(["python -m bench"] + sys.argv[1:]), **result}
    path = save("isolation", payload)
    print(f"{result['threads']} threads x {result['rounds']} rounds = {result['checked']} responses checked, "
          f"{len(result['violations'])} violations, {result['errors']} errors in {result['seconds']:.1f}s -> {path}")
    for v in result["violations"][:10]:
        print("  " + v)
    return 0 if result["ok"] else 1


def cmd_http_isolation(args) -> int:
    from .http import isolation

    result = isolation(patients=args.patients, rounds=args.rounds, workers=args.workers, threads=args.threads,
                       size=args.size, rules=args.rules)
    payload = {"machine": machine(), "command": " ".join(["python -m bench"] + sys.argv[1:]), **result}
    path = save("http_isolation", payload)
    print(f"{result['patients']} patients x {result['rounds']} rounds over HTTP "
          f"({result['server']['workers']} workers x {result['server']['threads']} threads): "
          f"{result['checked']} responses, {len(result['violations'])} violations -> {path}")
    for v in result["violations"][:10]:
        print("  " + v)
    return 0 if result["ok"] else 1


def cmd_record_size(args) -> int:
    """Bytes per decision record (the stored canonical JSON) for each benchmark patient."""
    from audit.record import canonical_json, decision_body, expand_record

    from .generate import NOW, make_request

    rs = _ruleset(args.rules)
    rows = {}
    for size in ("small", "standard", "large"):
        result = rs.evaluate(make_request(size, patient_id=f"bench-{size}"), now=NOW)
        body = decision_body(result, hook="patient-view", hook_instance="bench", service_id="pacing-review",
                             patient_id=f"bench-{size}", latency_ms=1.0, key=b"k" * 32, ruleset=rs)
        full = expand_record(body)  # what format 2 stored: every fact spelled out where it is used
        rows[size] = {"format3_bytes": len(canonical_json(body).encode()),
                      "expanded_bytes": len(canonical_json(full).encode())}
        print(f"{size:9} format 3: {rows[size]['format3_bytes']:7d} bytes   expanded (format 2 shape): "
              f"{rows[size]['expanded_bytes']:7d} bytes")
    save("record_size", {"machine": machine(), "sizes": rows})
    return 0


def cmd_impact(args) -> int:
    """Population impact throughput: a generated export (not timed) through one engine (SparkSession start not
    timed); patients/s over the whole run (read, join, evaluate, write, report) and over evaluation alone."""
    import tempfile

    from population.generate import NOW, write_export
    from population.impact import run_impact

    with tempfile.TemporaryDirectory(prefix="bench-impact-") as tmp:
        export = Path(tmp) / "export"
        write_export(export, args.patients, args.seed, files_per_type=args.files_per_type, gzip=args.gzip)
        spark = None
        if args.engine == "spark":
            from population import spark as spark_engine

            reason = spark_engine.unavailable()
            if reason:
                print(f"bench impact: {reason}", file=sys.stderr)
                return 2
            spark = spark_engine.session(args.master, partitions=args.partitions or 8)
        try:
            outcome = run_impact(export, rules=args.rules or str(ROOT / "rules"), baseline=args.baseline,
                                 hook="patient-view", now=NOW, out_dir=Path(tmp) / "out", engine=args.engine,
                                 workers=args.workers, partitions=args.partitions, spark=spark)
        finally:
            if spark is not None:
                spark.stop()
    rate, eval_rate = outcome.patients / outcome.seconds, outcome.patients / outcome.evaluate_seconds
    result = {"engine": args.engine, "patients": outcome.patients, "cores": outcome.cores,
              "partitions": args.partitions, "master": args.master if args.engine == "spark" else None,
              "releases": 2 if args.baseline else 1, "seconds": round(outcome.seconds, 2),
              "evaluate_seconds": round(outcome.evaluate_seconds, 2), "patients_per_s": round(rate, 1),
              "patients_per_s_per_core": round(rate / outcome.cores, 1),
              "evaluate_patients_per_s": round(eval_rate, 1),
              "evaluate_patients_per_s_per_core": round(eval_rate / outcome.cores, 1),
              "cards": dict(outcome.cards), "errors": dict(outcome.errors)}
    name = f"impact_{args.engine}" + (f"_p{args.partitions}" if args.partitions else "")
    path = save(name, {"machine": machine(), "command": " ".join(["python -m bench"] + sys.argv[1:]), **result})
    print(f"{args.engine}: {outcome.patients} patients on {outcome.cores} cores in {outcome.seconds:.1f}s: "
          f"{rate:.1f} patients/s, {rate / outcome.cores:.1f} patients/s/core (evaluation alone "
          f"{eval_rate:.1f} patients/s, {eval_rate / outcome.cores:.1f}/core) -> {path}")
    return 0


def cmd_memory(args) -> int:
    from . import memory

    command = " ".join(["python -m bench"] + sys.argv[1:])
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.holders:
        result = memory.holders(patients=args.patients, templates=args.templates, progress=log)
        path = save("memory_holders", {"machine": machine(), "command": command, **result})
        print(f"RSS (MB) by patients: {result['rss_mb']}")
        for name, h in result["held"].items():
            print(f"  {name}: {h['entries']} / {h['bound']} entries, {h['mb']} MB")
        print(f"  one chart: {result['chart_kb']} kB; {result['charts_at_bound_mb']} MB at the bound")
        for name, c in result["caches"].items():
            print(f"  cache {name}: {c['entries']} / {c['bound']}")
        print(f"-> {path}")
        return 0
    result = memory.run(patients=args.patients, every=args.every, concurrency=args.concurrency,
                        workers=args.workers, templates=args.templates, rules=args.rules, audit=args.audit,
                        progress=log)
    path = save("memory", {"machine": machine(), "command": command, **result})
    print(f"{'patients':>8}  " + "  ".join(f"worker {i + 1} RSS MB" for i in range(args.workers)))
    for n, per in result["at"].items():
        if per:
            print(f"{int(n):8d}  " + "  ".join(f"{kb / 1024:16.1f}" for kb in per.values()))
    print(f"{result['patients']} patients in {result['seconds']} s, errors {result['errors']}, "
          f"answered (per /metrics) {result['answered_per_metrics']:.0f} -> {path}")
    return 0 if not result["errors"] else 1


def cmd_report(args) -> int:
    from .report import render

    print(render(RESULTS))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rules", help="rules directory (default: the repository's rules/)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="print a synthetic patient (CDS Hooks request, or --bundle)")
    p.add_argument("size", choices=("small", "standard", "large"))
    p.add_argument("--patient")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bundle", action="store_true", help="a FHIR Bundle instead of a CDS Hooks request")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("inproc", help="floor / validate / cold / warm per patient size")
    p.add_argument("--sizes", default="small,standard,large")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the iteration counts")
    p.set_defaults(func=cmd_inproc)

    p = sub.add_parser("http", help="the service as `pacecds serve` runs it, async load at fixed concurrency; "
                                    "by default the decision log on (SQLite) and a new patient per request")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--requests", type=int, default=3000, help="request cap per concurrency level")
    p.add_argument("--duration", type=float, default=20.0, help="time cap (s) per concurrency level")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4, help="threads per worker (4, as `pacecds serve`)")
    p.add_argument("--floor", action="store_true",
                   help="serve a do-nothing app (read and parse the body) under the same gunicorn: the HTTP floor")
    p.add_argument("--size", default="standard", choices=("small", "standard", "large"))
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--client", default="aiohttp", choices=("aiohttp",))
    p.add_argument("--audit", default="sqlite",
                   help="sqlite (default) | off | postgres (a throwaway database on the local server, "
                        "PACECDS_BENCH_PG_URL) | a database URL")
    p.add_argument("--patients", default="new", choices=("new", "repeat"),
                   help="new: a patient never seen before on every request (default); repeat: the same patient")
    p.add_argument("--matrix", action="store_true",
                   help="the side-by-side table: log off / SQLite / PostgreSQL x new / repeated patients "
                        "(use e.g. --concurrency 1,16)")
    p.set_defaults(func=cmd_http)

    p = sub.add_parser("soak", help="many in-process evaluations; RSS at start and end")
    p.add_argument("--evaluations", type=int, default=100_000)
    p.add_argument("--cold", action="store_true", help="every evaluation a new patient (caches at their bounds)")
    p.add_argument("--size", default="standard", choices=("small", "standard", "large"))
    p.set_defaults(func=cmd_soak)

    p = sub.add_parser("isolation", help="threads, each with its own patient, responses checked")
    p.add_argument("--threads", type=int, default=64)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--size", default="small", choices=("small", "standard", "large"))
    p.set_defaults(func=cmd_isolation)

    p = sub.add_parser("http-isolation", help="every patient's request in flight at once through gunicorn threads")
    p.add_argument("--patients", type=int, default=64)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--size", default="small", choices=("small", "standard", "large"))
    p.set_defaults(func=cmd_http_isolation)

    p = sub.add_parser("record-size", help="bytes per decision record for each benchmark patient")
    p.set_defaults(func=cmd_record_size)
    p = sub.add_parser("impact", help="population impact throughput of one engine on a generated export")
    p.add_argument("--patients", type=int, default=10_000)
    p.add_argument("--engine", choices=("local", "spark"), default="local")
    p.add_argument("--workers", type=int, help="local: worker processes (default: every core)")
    p.add_argument("--master", default="local[*]", help="spark: master URL")
    p.add_argument("--partitions", type=int, help="spark: partitions of the join (default: cores)")
    p.add_argument("--baseline", help="also evaluate this release (two releases compared)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--files-per-type", type=int, default=4)
    p.add_argument("--gzip", action="store_true")
    p.set_defaults(func=cmd_impact)
    p = sub.add_parser("memory", help="RSS per worker of `pacecds serve` over many new patients (or --holders)")
    p.add_argument("--patients", type=int, default=20_000)
    p.add_argument("--every", type=int, default=500, help="read each worker's RSS every N requests")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--templates", type=int, default=32, help="generated patients the new ones are made from")
    p.add_argument("--audit", default="sqlite", help="sqlite (the default store) | off | a database URL")
    p.add_argument("--holders", action="store_true",
                   help="in-process Ruleset.evaluate: the bytes each cache holds after --patients new patients")
    p.set_defaults(func=cmd_memory)

    p = sub.add_parser("report", help="markdown tables from bench/results/*.json")
    p.set_defaults(func=cmd_report)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
