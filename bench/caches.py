"""What each cache saves: in-process evaluation of the standard patient with every cache on, and with one
cache at a time turned off (docs/caches.md).

    python -m bench.caches [--rounds 7] [--warm 30] [--cold 8] [--only NAME ...]
    valgrind --tool=callgrind --dump-before=adler32 --callgrind-out-file=/tmp/cg/out \
        python -m bench.caches --rounds 1 --warm 10 --cold 4 --marks /tmp/cg/marks.json
    python -m bench.caches --counts /tmp/cg/marks.json /tmp/cg/out      # instructions, not noisy

Per variant: median CPU milliseconds of a warm evaluation (the same request again) and of a cold one (a
patient never seen before), orjson.loads included, as `python -m bench inproc` measures them; and the audit
scrub of the standard patient's decision record. Variants run interleaved, round after round, so load from
other processes hits them alike; CPU time (process_time), not wall time, as this machine is shared.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import zlib
from functools import lru_cache
from pathlib import Path

import orjson

from audit import record as audit_record
from fhir_adapter import facts, resources, ucum, valuesets
from service import validation

from .generate import NOW, make_request

ROOT = Path(__file__).resolve().parent.parent


class _NoStore(dict):
    """A memo dict that never keeps anything (the memo turned off)."""

    def __setitem__(self, key, value):
        pass


def _lru_off(module, name):
    """The function itself in place of its lru_cache (no extra call, so the comparison is fair)."""
    original = getattr(module, name)
    return (lambda: setattr(module, name, original.__wrapped__), lambda: setattr(module, name, original))


def variants(ruleset) -> dict:
    validator = ruleset._validator
    selectors = [p.needs for p in ruleset._programs.values()]
    out = {"all caches on": (lambda: None, lambda: None)}
    if hasattr(resources._known_type, "__wrapped__"):
        out["resources._known_type"] = _lru_off(resources, "_known_type")
    else:  # its lru_cache was removed (docs/caches.md): measured by putting it back
        plain = resources._known_type
        out["resources._known_type, cache put back"] = (
            lambda: setattr(resources, "_known_type", lru_cache(maxsize=None)(plain)),
            lambda: setattr(resources, "_known_type", plain))
    out["resources._members"] = _lru_off(resources, "_members")
    out["ucum._parse_memo"] = _lru_off(ucum, "_parse_memo" if hasattr(ucum, "_parse_memo") else "parse")
    if hasattr(valuesets, "_cached_key"):  # removed (docs/caches.md)
        out["valuesets._cached_key"] = _lru_off(valuesets, "_cached_key")
    out["facts._one_key"] = _lru_off(facts, "_one_key")
    out["facts._parse_time_memo"] = _lru_off(facts, "_parse_time_memo")
    out["facts._utc_day"] = _lru_off(facts, "_utc_day")

    def attr_off(obj, name, value):
        old = getattr(obj, name)
        return (lambda: setattr(obj, name, value), lambda: setattr(obj, name, old))
    def emptied(name, bound):  # off: bound 0 and what it holds dropped (a hit never evicts)
        old = getattr(validator, bound)

        def off():
            setattr(validator, bound, 0)
            getattr(validator, name).clear()
            validator._chart_resources = 0 if name == "_charts" else validator._chart_resources
        return off, lambda: setattr(validator, bound, old)
    out["ResourceValidator._ok"] = emptied("_ok", "_max")
    out["ResourceValidator._charts"] = emptied("_charts", "_max_charts")
    out["ResourceValidator._parts"] = attr_off(validator, "_max_parts", 0)

    def selector_memo(on: bool):
        for s in selectors:
            s._memo = {} if on else _NoStore()
    out["ResourceSelector._memo"] = (lambda: selector_memo(False), lambda: selector_memo(True))

    per_chart, per_eval = facts._per_chart, facts._per_evaluation
    out["facts._per_chart"] = (lambda: setattr(facts, "_per_chart", lambda d, k, c: facts._per_evaluation(d, k, c)),
                               lambda: setattr(facts, "_per_chart", per_chart))
    out["facts._per_evaluation"] = (lambda: setattr(facts, "_per_evaluation", lambda d, k, c: c()),
                                    lambda: setattr(facts, "_per_evaluation", per_eval))
    both = [_lru_off(facts, "_one_key"), _lru_off(facts, "_parse_time_memo")]
    out["facts._one_key and facts._parse_time_memo"] = (lambda: [f[0]() for f in both], lambda: [f[1]() for f in both])
    if hasattr(valuesets, "_cached_key"):
        codes = [_lru_off(facts, "_one_key"), _lru_off(valuesets, "_cached_key")]
        out["facts._one_key and valuesets._cached_key"] = (lambda: [f[0]() for f in codes],
                                                             lambda: [f[1]() for f in codes])
    return out


def run(rules: Path, rounds: int, n_warm: int, n_cold: int, only: list[str] | None, marks: list | None = None) -> dict:
    def mark(label) -> None:
        """Ends a segment: callgrind dumps its counts before each zlib.adler32 call (--dump-before=adler32)."""
        marks.append(label)
        zlib.adler32(b"")

    from engine import load_ruleset
    ruleset = load_ruleset(rules)
    table = variants(ruleset)
    if only:
        table = {k: v for k, v in table.items() if k == "all caches on" or k in only}
    raw = orjson.dumps(make_request("standard", patient_id="bench-caches"))
    cold = {name: [[orjson.dumps(make_request("standard", patient_id=f"c-{r}-{i}-{j}", seed=1 + r * 10_000 + i * 100 + j))
                    for j in range(n_cold)] for r in range(rounds)] for i, name in enumerate(table)}
    def changed(k: int) -> bytes:
        """The warm chart with one reading changed: a new chart, all but one of its resources seen before."""
        doc = orjson.loads(raw)
        obs = next(e["resource"] for e in doc["prefetch"]["observations"]["entry"] if "valueQuantity" in e["resource"])
        obs["valueQuantity"]["value"] = 100_000 + k
        return orjson.dumps(doc)
    edits = {name: [[changed(r * 100_000 + i * 1_000 + j) for j in range(n_warm)] for r in range(rounds)]
             for i, name in enumerate(table)}
    result = ruleset.evaluate(orjson.loads(raw), now=NOW)
    decision = audit_record.build_decision_record(
        result, hook="patient-view", hook_instance="bench", service_id="pacing-review", patient_id="bench-caches",
        latency_ms=1.0, key=b"k" * 32, ruleset=ruleset)
    for _ in range(3):  # warm-up: imports, model classes, first-call caches
        ruleset.evaluate(orjson.loads(raw), now=NOW)
        audit_record.scrub(decision)
    gc.collect()
    gc.freeze()
    samples = {name: {"warm": [], "changed": [], "cold": [], "scrub": []} for name in table}

    def cpu(fn) -> float:
        t = time.process_time()
        fn()
        return (time.process_time() - t) * 1000

    if marks is not None:  # instruction counts: one callgrind dump per segment, each ended by mark()
        def cpu(fn) -> float:  # noqa: F811
            fn()
            return 0.0
        mark("setup")
    for r in range(rounds):
        for name, (off, on) in table.items():
            off()
            try:
                s = samples[name]
                ruleset.evaluate(orjson.loads(raw), now=NOW)  # the chart seen once with this variant
                if marks is not None:
                    mark(None)
                for _ in range(n_warm):
                    s["warm"].append(cpu(lambda: ruleset.evaluate(orjson.loads(raw), now=NOW)))
                if marks is not None:
                    mark((name, "warm", n_warm))
                for body in edits[name][r]:
                    s["changed"].append(cpu(lambda: ruleset.evaluate(orjson.loads(body), now=NOW)))
                if marks is not None:
                    mark((name, "changed", n_warm))
                for body in cold[name][r]:
                    s["cold"].append(cpu(lambda: ruleset.evaluate(orjson.loads(body), now=NOW)))
                if marks is not None:
                    mark((name, "cold", n_cold))
                for _ in range(n_warm):
                    s["scrub"].append(cpu(lambda: audit_record.scrub(decision)))
                if marks is not None:
                    mark((name, "scrub", n_warm))
            finally:
                on()
    if marks is not None:
        return {}
    out = {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}
    base = out["all caches on"]
    for name, m in out.items():
        m.update({f"{k}_delta_pct": (m[k] / base[k] - 1) * 100 for k in ("warm", "changed", "cold", "scrub")})
    return out


def schema_validators() -> dict:
    """One schema validator built (the cache turned off) against one taken from the cache, in ms."""
    validation.validator("request")
    t = time.process_time()
    for _ in range(20):
        validation.validator.__wrapped__("request")
    built = (time.process_time() - t) / 20 * 1000
    t = time.process_time()
    for _ in range(20_000):
        validation.validator("request")
    cached = (time.process_time() - t) / 20_000 * 1000
    return {"validator('request') built ms": built, "from the cache ms": cached}


def counts(marks_path: Path, prefix: str) -> None:
    """Instructions per warm / cold evaluation and per scrub, by variant, from callgrind's dumps.

    Dump k (callgrind.out.PID.k, from 1) holds the instructions of the segment ended by the k-th mark."""
    import glob
    marks = orjson.loads(marks_path.read_text())
    per: dict = {}
    for k, label in enumerate(marks, start=1):
        if not label or label == "setup":
            continue
        (path,) = glob.glob(f"{prefix}.{k}")
        text = Path(path).read_text()
        total = next(int(line.split()[1]) for line in text.splitlines() if line.startswith(("summary:", "totals:")))
        name, kind, n = label
        per.setdefault(name, {})[kind] = total / n
    base = per["all caches on"]
    kinds = [k for k in ("warm", "changed", "cold", "scrub") if k in base]
    print("| turned off | " + " | ".join(f"{k} Minstr | {k} vs all on" for k in kinds) + " |")
    print("| --- |" + " ---: | ---: |" * len(kinds))
    for name, m in per.items():
        cells = [f"{m[k] / 1e6:.2f} | {(m[k] / base[k] - 1) * 100:+.1f}%" for k in kinds]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.caches", description=__doc__.splitlines()[0])
    p.add_argument("--rules", type=Path, default=ROOT / "rules")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warm", type=int, default=30)
    p.add_argument("--cold", type=int, default=8)
    p.add_argument("--only", nargs="*")
    p.add_argument("--marks", type=Path, help="under callgrind: write the segment labels here (see --counts)")
    p.add_argument("--counts", nargs=2, metavar=("MARKS", "DUMPS_PREFIX"),
                   help="print instructions per evaluation from a --marks file and its callgrind dumps")
    args = p.parse_args(argv)
    if args.counts:
        return counts(Path(args.counts[0]), args.counts[1])
    if args.marks:
        marks: list = []
        run(args.rules, args.rounds, args.warm, args.cold, args.only, marks)
        args.marks.write_text(orjson.dumps(marks).decode())
        return
    out = run(args.rules, args.rounds, args.warm, args.cold, args.only)
    kinds = ("warm", "changed", "cold", "scrub")
    print("| turned off | " + " | ".join(f"{k} ms | {k} vs all on" for k in kinds) + " |")
    print("| --- |" + " ---: | ---: |" * len(kinds))
    for name, m in out.items():
        print(f"| {name} | " + " | ".join(f"{m[k]:.3f} | {m[k + '_delta_pct']:+.1f}%" for k in kinds) + " |")
    for k, v in schema_validators().items():
        print(f"{k}: {v:.4f}")


if __name__ == "__main__":
    main()
