"""Soak and isolation stress, in process (the full runs are `python -m bench soak|isolation`;
tests/hardening runs the same functions with small counts).

soak:      many evaluations over a rotating set of distinct patients; resident memory (RSS) after a
           warm-up pass and at the end; every result checked against that patient's first result.
isolation: N threads, each with its own patient (unique id, unique hemoglobin, its own random series),
           all released at once by a barrier; every response checked to name only its own patient
           (patient id, every resource a fact used, every patient reference in the cards) and to show
           its own hemoglobin.
"""

from __future__ import annotations

import gc
import re
import threading
import time
from pathlib import Path

import orjson

from .generate import NOW, make_request, unique_hemoglobin


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; ru_maxrss elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _signature(result) -> tuple:
    """What must not change between two evaluations of the same patient (card uuids do)."""
    return (result.patient_id, tuple((c["extension"]["pacecds.rule"]["id"], c["summary"]) for c in result.cards),
            tuple(f.rule_id for f in result.shadow))


def soak(ruleset, evaluations: int = 100_000, size: str = "standard", patients: int = 32, progress=None,
         cold: bool = False, cold_warmup: int = 2_500) -> dict:
    """cold=False: rotate over `patients` patients (charts reopened). cold=True: every evaluation a patient
    never seen before (same values, a new id in every resource), so every cache runs at its bound; the
    warm-up is then long enough (2,500 patients: more than the 2,000 charts the validator remembers) to fill
    the bounded caches before RSS is first read."""
    bodies = [orjson.dumps(make_request(size, patient_id=f"soak-{i:06d}", seed=i, hemoglobin=unique_hemoglobin(i)))
              for i in range(patients)]
    expected = [_signature(ruleset.evaluate(orjson.loads(b), now=NOW)) for b in bodies]  # warm-up pass

    def body_for(n: int) -> tuple[bytes, str, int]:
        i = n % patients
        if not cold:
            return bodies[i], f"soak-{i:06d}", i
        new_id = f"s{n:010d}"  # same length as soak-NNNNNN: a byte replace keeps the JSON valid
        return bodies[i].replace(f"soak-{i:06d}".encode(), new_id.encode()), new_id, i

    if cold:
        for n in range(cold_warmup):
            ruleset.evaluate(orjson.loads(body_for(evaluations + n)[0]), now=NOW)
    gc.collect()
    rss_start = rss_mb()
    errors: list[str] = []
    samples: list[float] = []  # RSS after each tenth of the run
    started = time.perf_counter()
    step = max(1, evaluations // 10)
    for n in range(evaluations):
        body, pid, i = body_for(n)
        try:
            got = _signature(ruleset.evaluate(orjson.loads(body), now=NOW))
            want = (pid,) + expected[i][1:]
            if got != want:
                errors.append(f"evaluation {n} ({pid}): {got} != {want}")
        except Exception as exc:  # noqa: BLE001 - a soak counts every failure
            errors.append(f"evaluation {n} ({pid}): {type(exc).__name__}: {exc}")
        if (n + 1) % step == 0:
            samples.append(rss_mb())
            if progress:
                progress(f"{n + 1}/{evaluations} evaluations, RSS {samples[-1]:.1f} MB, errors {len(errors)}")
    seconds = time.perf_counter() - started
    gc.collect()
    rss_end = rss_mb()
    growth = (rss_end - rss_start) / rss_start * 100
    return {
        "evaluations": evaluations, "size": size, "patients": "all new" if cold else patients, "seconds": seconds,
        "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_growth_pct": growth, "rss_samples_mb": samples,
        # growth over the second half: a leak keeps growing, bounded caches filling do not
        "rss_growth_second_half_pct": ((rss_end - samples[len(samples) // 2 - 1]) / samples[len(samples) // 2 - 1] * 100
                                       if len(samples) >= 2 else None),
        "errors": len(errors), "first_errors": errors[:10],
        "ok": not errors and growth < 5.0,
    }


_PATIENT_ID = re.compile(r"iso-(\d+)(?![\d])")


def isolation(ruleset, threads: int = 64, rounds: int = 20, size: str = "small", check_hook=None) -> dict:
    """check_hook(i, result) -> result lets a test corrupt results to prove the checks catch a leak."""
    bodies = [orjson.dumps(make_request(size, patient_id=f"iso-{i}", seed=i, hemoglobin=unique_hemoglobin(i)))
              for i in range(threads)]
    violations: list[str] = []
    errors: list[str] = []
    checked = [0] * threads
    barrier = threading.Barrier(threads)
    lock = threading.Lock()

    def check(i: int, result) -> list[str]:
        me = f"iso-{i}"
        bad = []
        if result.patient_id != me:
            bad.append(f"{me}: result is for patient {result.patient_id}")
        for name, fact in result.facts.items():
            for ref in fact.provenance:
                if _PATIENT_ID.search(ref).group(0) != me:
                    bad.append(f"{me}: fact {name} used {ref}")
        hb = result.facts.get("hemoglobin")
        if hb is not None and hb.values.get("value") != unique_hemoglobin(i):
            bad.append(f"{me}: hemoglobin {hb.values.get('value')} is not its own {unique_hemoglobin(i)}")
        text = orjson.dumps(result.cards).decode()
        others = {m.group(0) for m in _PATIENT_ID.finditer(text)} - {me}
        if others:
            bad.append(f"{me}: cards mention {sorted(others)}")
        anaemia = [c for c in result.cards if c["extension"]["pacecds.rule"]["id"] == "anemia.low-hemoglobin"]
        if len(anaemia) != 1:  # every stress patient has a low, unique hemoglobin: its card must be there
            bad.append(f"{me}: {len(anaemia)} anaemia cards")
        for card in anaemia:
            if f"{unique_hemoglobin(i):.1f} g/dL" not in card["summary"]:
                bad.append(f"{me}: anaemia card shows another value: {card['summary']}")
        return bad

    def worker(i: int):
        try:
            barrier.wait()
            for _ in range(rounds):
                result = ruleset.evaluate(orjson.loads(bodies[i]), now=NOW)
                if check_hook is not None:
                    result = check_hook(i, result)
                bad = check(i, result)
                with lock:
                    checked[i] += 1
                    violations.extend(bad)
        except Exception as exc:  # noqa: BLE001
            with lock:
                errors.append(f"iso-{i}: {type(exc).__name__}: {exc}")

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,), name=f"iso-{i}") for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {
        "threads": threads, "rounds": rounds, "size": size, "seconds": time.perf_counter() - started,
        "checked": sum(checked),
        "violations": violations[:100], "errors": len(errors), "first_errors": errors[:10],
        "ok": not violations and not errors and sum(checked) == threads * rounds,
    }
