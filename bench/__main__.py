"""pacecds benchmarks and stress runs.

    python -m bench generate SIZE [--patient ID] [--seed N] [--bundle] > patient.json
    python -m bench inproc  [--sizes small,standard,large] [--scale 1.0]
    python -m bench http    [--concurrency 1,16,64] [--requests 2000] [--duration 20] [--workers 2] [--threads 1]
                            [--worker-class gthread|sync] [--floor]
    python -m bench soak    [--evaluations 100000]
    python -m bench isolation [--threads 64] [--rounds 20]
    python -m bench http-isolation [--patients 64] [--rounds 10] [--workers 2] [--threads 8]
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
    from .http import run

    conc = [int(c) for c in args.concurrency.split(",")]
    results = run(concurrency=conc, requests=args.requests, duration=args.duration, workers=args.workers,
                  threads=args.threads, size=args.size, rules=args.rules, port=args.port, audit=args.audit,
                  client=args.client, worker_class=args.worker_class, floor=args.floor)
    payload = {"machine": machine(), "command": " ".join(["python -m bench"] + sys.argv[1:]), **results}
    path = save("http_floor" if args.floor else "http", payload)
    for row in results["runs"]:
        print(f"c={row['concurrency']:3d} n={row['requests']:6d} ok={row['ok']:6d} err={row['errors']:3d} "
              f"{row['throughput_rps']:8.1f} req/s  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
              f"server CPU {row['server_cpu_ms_per_request']:.2f} ms/req  client CPU {row['client_cpu_s'] / row['seconds']:.0%}")
    print(f"-> {path}")
    return 0 if all(r["errors"] == 0 for r in results["runs"]) else 1


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

    p = sub.add_parser("http", help="the service under gunicorn on loopback, async load at fixed concurrency")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--requests", type=int, default=3000, help="request cap per concurrency level")
    p.add_argument("--duration", type=float, default=20.0, help="time cap (s) per concurrency level")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    p.add_argument("--worker-class", default="gthread", choices=("gthread", "sync"),
                   help="gthread (as `pacecds serve`; connections kept open) or sync (a connection per request)")
    p.add_argument("--floor", action="store_true",
                   help="serve a do-nothing app (read and parse the body) under the same gunicorn: the HTTP floor")
    p.add_argument("--size", default="standard", choices=("small", "standard", "large"))
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--client", default="aiohttp", choices=("aiohttp",))
    p.add_argument("--audit", default="off", help="off | sqlite | a database URL (decisions recorded per request)")
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
