"""Bounded soak, isolation stress and HTTP benchmark runs (seconds). The full runs:

    python -m bench soak                      # 100,000 evaluations, RSS growth < 5 %, no error
    python -m bench soak --cold               # the same, every evaluation a patient never seen before
    python -m bench isolation --threads 64 --rounds 20
    python -m bench http-isolation            # 64 patients in flight through gunicorn threads
    python -m bench http                      # gunicorn on loopback, concurrency 1, 16, 64

Nothing here asserts a timing: only correctness, memory and error counts.
"""

import copy
import dataclasses

import pytest

from bench import stress
from bench.generate import SIZES, count_resources, make_bundle, make_request


def test_generator_is_deterministic_and_sized():
    import orjson

    for size, (low, high) in zip(SIZES, [(15, 30), (200, 240), (1800, 2200)]):
        a, b = make_request(size, patient_id="det"), make_request(size, patient_id="det")
        assert orjson.dumps(a) == orjson.dumps(b)
        assert low <= count_resources(a) <= high
        assert count_resources(make_bundle(size, patient_id="det")) == count_resources(a)
    assert orjson.dumps(make_request("small", seed=1)) != orjson.dumps(make_request("small", seed=2))


def test_generated_patients_are_valid_fhir():
    from fhir.resources.R4B import get_fhir_model_class

    for entry in make_bundle("standard", patient_id="valid")["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_soak_bounded(ruleset):
    result = stress.soak(ruleset, evaluations=300, size="small", patients=8)
    assert result["errors"] == 0, result["first_errors"]
    # growth is reported, not asserted here: 300 evaluations are too few for a meaningful percentage
    assert result["rss_end_mb"] > 0


def test_soak_bounded_every_patient_new(ruleset):
    result = stress.soak(ruleset, evaluations=40, size="small", patients=4, cold=True, cold_warmup=10)
    assert result["errors"] == 0, result["first_errors"]


def test_isolation_bounded(ruleset):
    result = stress.isolation(ruleset, threads=64, rounds=2, size="small")
    assert result["errors"] == 0, result["first_errors"]
    assert result["violations"] == []
    assert result["checked"] == 128 and result["ok"]


def test_isolation_checks_catch_a_leak(ruleset):
    """The checker itself: hand thread 3 the result computed for thread 4; it must be reported."""
    import orjson

    from bench.generate import NOW, unique_hemoglobin

    other = ruleset.evaluate(orjson.loads(orjson.dumps(make_request("small", patient_id="iso-4", seed=4,
                                                                    hemoglobin=unique_hemoglobin(4)))), now=NOW)

    def leak(i, result):
        if i != 3:
            return result
        mixed = dataclasses.replace(result, cards=copy.deepcopy(other.cards))
        return mixed

    result = stress.isolation(ruleset, threads=8, rounds=1, size="small", check_hook=leak)
    assert not result["ok"]
    assert any(v.startswith("iso-3:") for v in result["violations"])
    assert all(v.startswith("iso-3:") for v in result["violations"])


def test_http_benchmark_bounded():
    """The HTTP benchmark end to end, tiny: gunicorn starts, answers 200s under load, and stops."""
    pytest.importorskip("aiohttp")
    pytest.importorskip("gunicorn")
    from bench import http

    result = http.run(concurrency=(1, 4), requests=12, duration=10, workers=1, size="small")
    assert [r["concurrency"] for r in result["runs"]] == [1, 4]
    for row in result["runs"]:
        assert row["errors"] == 0, row["statuses"]
        assert row["ok"] == row["requests"] > 0
    # as deployed: the decision log on (SQLite), and every 200 (warm-up included) has its record
    assert result["server"]["audit"] == "sqlite" and result["patients"] == "new"
    assert result["records"] == result["responses_200"] > 24 and result["every_200_audited"] is True


def test_http_benchmark_sends_a_new_patient_every_request():
    """Every body names a patient (and resources) no other body names; `repeat` sends one patient."""
    import orjson

    from bench import http

    make = http.body_factory("small", "new")
    docs = [orjson.loads(make()) for _ in range(40)]
    pids = {d["context"]["patientId"] for d in docs}
    obs = {e["resource"]["id"] for d in docs for e in d["prefetch"]["observations"]["entry"]}
    assert len(pids) == 40 and all(d["prefetch"]["patient"]["id"] == d["context"]["patientId"] for d in docs)
    assert len(obs) == sum(len(d["prefetch"]["observations"]["entry"]) for d in docs)
    assert len({d["hookInstance"] for d in docs}) == 40
    values = {tuple(e["resource"]["valueQuantity"]["value"] for e in d["prefetch"]["observations"]["entry"])
              for d in docs}
    assert len(values) == 16  # the values of 16 seeded patients in turn
    same = http.body_factory("small", "repeat")
    assert len({orjson.loads(same())["context"]["patientId"] for _ in range(5)}) == 1


def test_http_isolation_bounded():
    """Patient isolation through gunicorn worker threads: 16 patients in flight at once, responses checked."""
    pytest.importorskip("aiohttp")
    from bench import http

    result = http.isolation(patients=16, rounds=2, workers=2, threads=4, size="small")
    assert result["violations"] == [] and result["ok"], result


def test_http_floor_benchmark_bounded():
    """The HTTP floor (a do-nothing app under the same gunicorn) runs and answers every request."""
    pytest.importorskip("aiohttp")
    from bench import http

    result = http.run(concurrency=(2,), requests=8, duration=10, workers=1, size="small", floor=True)
    assert result["server"]["app"] == "bench.floor_app:app"
    assert [r["ok"] for r in result["runs"]] == [8]
