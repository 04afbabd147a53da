"""In-process benchmark: for each patient size, median and p99 of

    floor      orjson.loads of the request bytes (the least any service must do)
    validate   orjson.loads + fhir.resources (R4B) model_validate of every resource in the request, no cache
    cold       orjson.loads + Ruleset.evaluate of a patient never seen before (fresh ids and values)
    warm       orjson.loads + Ruleset.evaluate of the same request again (a chart reopened)

The ruleset is loaded once before timing (as the server does). Cold iterations each use a patient
generated with another id and seed, so no content-hash cache can help them.
"""

from __future__ import annotations

import gc
import statistics
import time

import orjson
from fhir.resources.R4B import get_fhir_model_class

from .generate import NOW, make_request

ITERATIONS = {"small": 300, "standard": 200, "large": 30}


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of the samples."""
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def summary(samples_s: list[float]) -> dict:
    ms = [s * 1000 for s in samples_s]
    return {"n": len(ms), "median_ms": statistics.median(ms), "p99_ms": percentile(ms, 99),
            "min_ms": min(ms), "max_ms": max(ms)}


def _resources(request: dict):
    for value in request["prefetch"].values():
        if value.get("resourceType") == "Bundle":
            for entry in value.get("entry") or []:
                yield entry["resource"]
        else:
            yield value


def validate_all(request: dict) -> None:
    for resource in _resources(request):
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def _time(fn, arg, cpu: list) -> float:
    c, t = time.process_time(), time.perf_counter()
    fn(arg)
    elapsed = time.perf_counter() - t
    cpu.append(time.process_time() - c)
    return elapsed


def run_size(ruleset, size: str, iterations: int) -> dict:
    raw = orjson.dumps(make_request(size, patient_id=f"bench-{size}"))
    fresh = [orjson.dumps(make_request(size, patient_id=f"bench-{size}-cold-{i}", seed=i + 1))
             for i in range(iterations)]
    parsed = orjson.loads(raw)
    n_resources = sum(1 for _ in _resources(parsed))

    def evaluate(body: bytes):
        return ruleset.evaluate(orjson.loads(body), now=NOW)

    def validate(body: bytes):
        validate_all(orjson.loads(body))

    # warm-up: imports, model classes, first-call caches (not part of any sample)
    warm_up = orjson.dumps(make_request(size, patient_id=f"bench-{size}-warmup", seed=10**6))
    evaluate(warm_up)
    validate(warm_up)
    evaluate(raw)  # first sight of the warm patient

    gc.collect()
    gc.freeze()  # as server.create_app() does once the service is loaded
    # Pairs are interleaved (validate then cold of the same new patient; floor then warm) so that load
    # from other processes on a shared machine hits both sides of each ratio alike.
    samples = {k: [] for k in ("floor", "validate", "cold", "warm")}
    cpu = {k: [] for k in samples}
    for body in fresh:
        samples["validate"].append(_time(validate, body, cpu["validate"]))
        samples["cold"].append(_time(evaluate, body, cpu["cold"]))
    for _ in range(max(iterations, 200)):
        samples["floor"].append(_time(orjson.loads, raw, cpu["floor"]))
        samples["warm"].append(_time(evaluate, raw, cpu["warm"]))
    result = evaluate(raw)
    out = {"resources": n_resources, "request_bytes": len(raw), "cards": len(result.cards)}
    for k in samples:
        out[k] = summary(samples[k])
        out[k]["cpu_median_ms"] = statistics.median(cpu[k]) * 1000
    out["warm_over_floor"] = out["warm"]["median_ms"] / out["floor"]["median_ms"]
    out["cold_over_validate"] = out["cold"]["median_ms"] / out["validate"]["median_ms"]
    out["cpu_warm_over_floor"] = out["warm"]["cpu_median_ms"] / out["floor"]["cpu_median_ms"]
    out["cpu_cold_over_validate"] = out["cold"]["cpu_median_ms"] / out["validate"]["cpu_median_ms"]
    return out


def run(ruleset, sizes, scale: float = 1.0) -> dict:
    return {size: run_size(ruleset, size, max(3, int(ITERATIONS[size] * scale))) for size in sizes}
