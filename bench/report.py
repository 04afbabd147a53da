"""Markdown tables from bench/results/*.json (pasted into docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import orjson

TARGETS = {
    "warm": "warm <= 5x floor (standard)",
    "cold": "cold <= validate (standard)",
    "http": "p99 <= 50 ms at 16 concurrent and >= 400 req/s (standard, 2 cores)",
}


def _load(results: Path, name: str):
    path = results / f"{name}.json"
    return orjson.loads(path.read_bytes()) if path.exists() else None


def _machine(m: dict) -> str:
    return f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['system']}; {m['date']}"


def render(results: Path) -> str:
    out: list[str] = []
    inproc = _load(results, "inproc")
    if inproc:
        out += [f"### In process (`{inproc['command']}`)", "", f"Machine: {_machine(inproc['machine'])}", "",
                "| patient | resources | request | floor: orjson parse | validate every resource | pacecds cold "
                "| pacecds warm | warm / floor | cold / validate |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for size, r in inproc["sizes"].items():
            cells = [f"{r[k]['median_ms']:.2f} / {r[k]['p99_ms']:.2f}" for k in ("floor", "validate", "cold", "warm")]
            out.append(f"| {size} | {r['resources']} | {r['request_bytes'] / 1024:.0f} kB | " + " | ".join(cells)
                       + f" | {r['warm_over_floor']:.1f}x | {r['cold_over_validate']:.2f}x |")
        out += ["", "Cells are median / p99 wall-clock milliseconds. CPU-time medians (less disturbed by other work on "
                "the machine): " + "; ".join(
                    f"{size} warm/floor {r['cpu_warm_over_floor']:.1f}x, cold/validate {r['cpu_cold_over_validate']:.2f}x"
                    for size, r in inproc["sizes"].items() if "cpu_warm_over_floor" in r) + ".", ""]
    matrix = _load(results, "http_matrix")
    if matrix:
        from .http import matrix_table
        out += [f"### Deployed shape (`{matrix['command']}`)", "", f"Machine: {_machine(matrix['machine'])}; "
                f"{matrix['server']['workers']} workers x {matrix['server']['threads']} threads (`pacecds serve`); "
                f"{matrix['size']} patient.", "", matrix_table(matrix), ""]
    for name, title in (("http", "HTTP"), ("http_floor", "HTTP floor: the same gunicorn serving a do-nothing app")):
        http = _load(results, name)
        if not http:
            continue
        srv = http["server"]
        out += [f"### {title} (`{http['command']}`)", "", f"Machine: {_machine(http['machine'])}; load average "
                f"before the run {', '.join(f'{x:.1f}' for x in http['loadavg_before'])}.", "",
                f"gunicorn {srv['worker_class']}, {srv['workers']} workers x {srv['threads']} threads, audit "
                f"{srv['audit']}; {http['size']} patient ({http['request_bytes'] / 1024:.0f} kB per request"
                f"{', a new patient every request' if http.get('patients') == 'new' else ''}); "
                f"client: {http['runs'][0].get('client', 'aiohttp')} on the same machine.", "",
                "| concurrency | requests | errors | throughput | p50 | p90 | p99 | max | server CPU / request "
                "| client CPU | capacity on 2 idle cores |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in http["runs"]:
            client_ms = r["client_cpu_s"] * 1000 / max(1, r["requests"])
            capacity = 2000 / (r["server_cpu_ms_per_request"] + client_ms)
            out.append(f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['throughput_rps']:.0f} req/s "
                       f"| {r['p50_ms']:.1f} ms | {r['p90_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['max_ms']:.1f} ms "
                       f"| {r['server_cpu_ms_per_request']:.2f} ms | {client_ms:.2f} ms/req "
                       f"| ~{capacity:.0f} req/s |")
        out += ["", "Capacity = 2,000 ms of CPU per second / (server + client CPU per request): the throughput "
                "the same work would reach with both cores to itself.", ""]
    for soak in (_load(results, "soak"), _load(results, "soak_cold")):
        if not soak:
            continue
        out += [f"### Soak (`{soak['command']}`)", "", f"Machine: {_machine(soak['machine'])}", "",
                "| evaluations | patients | seconds | RSS start | RSS end | growth | growth, 2nd half | errors |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
                f"| {soak['evaluations']:,} | {soak['patients']} ({soak['size']}) | {soak['seconds']:.0f} "
                f"| {soak['rss_start_mb']:.1f} MB | {soak['rss_end_mb']:.1f} MB | {soak['rss_growth_pct']:+.2f}% "
                + (f"| {soak['rss_growth_second_half_pct']:+.2f}% " if soak.get("rss_growth_second_half_pct") is not None
                   else "| - ") + f"| {soak['errors']} |", ""]
    iso = _load(results, "isolation")
    if iso:
        out += [f"### Isolation (`{iso['command']}`)", "", f"Machine: {_machine(iso['machine'])}", "",
                "| threads | rounds | responses checked | violations | errors | seconds |",
                "| ---: | ---: | ---: | ---: | ---: | ---: |",
                f"| {iso['threads']} | {iso['rounds']} | {iso['checked']:,} | {len(iso['violations'])} "
                f"| {iso['errors']} | {iso['seconds']:.1f} |", ""]
    hiso = _load(results, "http_isolation")
    if hiso:
        srv = hiso["server"]
        out += [f"### Isolation over HTTP (`{hiso['command']}`)", "", f"Machine: {_machine(hiso['machine'])}", "",
                "| patients in flight | rounds | gunicorn | responses checked | violations |",
                "| ---: | ---: | --- | ---: | ---: |",
                f"| {hiso['patients']} | {hiso['rounds']} | {srv['worker_class']}, {srv['workers']} workers x "
                f"{srv['threads']} threads | {hiso['checked']:,} | {len(hiso['violations'])} |", ""]
    return "\n".join(out) if out else "no results yet: run python -m bench inproc|http|soak|isolation"
