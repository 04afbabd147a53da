"""In-process benchmark: for each patient size, median and p99 of

    floor      orjson.loads of the request bytes (the least any service must do)
    validate   fhir.resources (R4B) model_validate of every resource in the request, no cache
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


def _time(fn, arg) -> float:
    t = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t


def run_size(ruleset, size: str, iterations: int) -> dict:
    raw = orjson.dumps(make_request(size, patient_id=f"bench-{size}"))
    fresh = [orjson.dumps(make_request(size, patient_id=f"bench-{size}-cold-{i}", seed=i + 1))
             for i in range(iterations)]
    parsed = orjson.loads(raw)
    n_resources = sum(1 for _ in _resources(parsed))

    def evaluate(body: bytes):
        return ruleset.evaluate(orjson.loads(body), now=NOW)

    # warm-up: imports, model classes, first-call caches (not part of any sample)
    warm_up = orjson.dumps(make_request(size, patient_id=f"bench-{size}-warmup", seed=10**6))
    evaluate(warm_up)
    validate_all(orjson.loads(warm_up))

    gc.collect()
    gc.freeze()  # as server.create_app() does once the service is loaded
    floor = [_time(orjson.loads, raw) for _ in range(max(iterations, 200))]
    validate = [_time(validate_all, orjson.loads(body)) for body in fresh[: max(5, iterations // 2)]]
    cold = [_time(evaluate, body) for body in fresh]
    evaluate(raw)  # first sight of the warm patient
    warm = [_time(evaluate, raw) for _ in range(iterations)]
    result = evaluate(raw)
    out = {
        "resources": n_resources,
        "request_bytes": len(raw),
        "cards": len(result.cards),
        "floor": summary(floor),
        "validate": summary(validate),
        "cold": summary(cold),
        "warm": summary(warm),
    }
    out["warm_over_floor"] = out["warm"]["median_ms"] / out["floor"]["median_ms"]
    out["cold_over_validate"] = out["cold"]["median_ms"] / out["validate"]["median_ms"]
    return out


def run(ruleset, sizes, scale: float = 1.0) -> dict:
    return {size: run_size(ruleset, size, max(3, int(ITERATIONS[size] * scale))) for size in sizes}
