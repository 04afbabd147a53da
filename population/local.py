"""The embedded engine: a disk-backed join on the patient reference, then a process pool over all local cores.

1. Index: every line of the export is routed (population.export) into a temporary SQLite file keyed by
   patient (resources in input order) and a table of shared reference data; memory stays flat whatever the
   population's size.
2. Evaluate: patients are cut, in id order, into chunks of consecutive ids; each worker process of a
   `concurrent.futures.ProcessPoolExecutor` compiles the releases once (its initializer) and reads a chunk's
   resources from the index. Chunks are handed out in order and their rows come back in order, so the rows
   are sorted by patient id as they stream out.
"""
from __future__ import annotations

import datetime as dt
import itertools
import os
import sqlite3
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .evaluate import PatientEvaluator, ReleaseSpec
from .export import ISSUE, PATIENT, SHARED, ReadIssue, Source, read_source

ISSUES_KEPT = 1000  # listed in full up to this many; all are counted
INSERT_BATCH = 5000
CHUNK_PATIENTS = 50  # patients per task: big enough to amortise a round trip, small enough to balance cores


@dataclass
class ReadSummary:
    """What reading the input found: resources routed, patients, and the lines not used."""

    files: int = 0
    resources: int = 0
    shared: int = 0
    patients: int = 0
    issues: list[ReadIssue] = field(default_factory=list)
    issue_count: int = 0

    def add_issue(self, where: str, reason: str) -> None:
        self.issue_count += 1
        if len(self.issues) < ISSUES_KEPT:
            self.issues.append(ReadIssue(where, reason))

    def as_dict(self) -> dict:
        return {"files": self.files, "resources": self.resources, "shared": self.shared, "patients": self.patients,
                "issue_count": self.issue_count, "issues": [i.as_dict() for i in self.issues]}


def build_index(sources: list[Source], db_path: Path) -> ReadSummary:
    """Route every line into an SQLite index keyed by patient (the join happens in its B-tree, on disk)."""
    summary = ReadSummary(files=len(sources))
    con = sqlite3.connect(db_path)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("CREATE TABLE res (patient TEXT NOT NULL, seq INTEGER NOT NULL, src TEXT NOT NULL, body BLOB)")
        con.execute("CREATE TABLE shared (ref TEXT PRIMARY KEY, body BLOB)")
        seq = itertools.count()
        batch: list[tuple] = []
        for source in sources:
            for kind, key, where, payload in read_source(source):
                if kind == PATIENT:
                    batch.append((key, next(seq), where, payload))
                    if len(batch) >= INSERT_BATCH:
                        con.executemany("INSERT INTO res VALUES (?, ?, ?, ?)", batch)
                        summary.resources += len(batch)
                        batch.clear()
                elif kind == SHARED:
                    # the first of two copies wins, as Pool keeps the first of a duplicate
                    con.execute("INSERT OR IGNORE INTO shared VALUES (?, ?)", (key, payload))
                elif kind == ISSUE:
                    summary.add_issue(where, payload)
        con.executemany("INSERT INTO res VALUES (?, ?, ?, ?)", batch)
        summary.resources += len(batch)
        con.execute("CREATE INDEX res_patient ON res (patient, seq)")
        summary.shared = con.execute("SELECT count(*) FROM shared").fetchone()[0]
        summary.patients = con.execute("SELECT count(DISTINCT patient) FROM res").fetchone()[0]
        con.commit()
    finally:
        con.close()
    return summary


def _chunks(db_path: Path, size: int) -> Iterator[tuple[str, str, int]]:
    """(first id, last id, patients) of consecutive patient ids, in order, streamed from the index."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        cursor = con.execute("SELECT DISTINCT patient FROM res ORDER BY patient")
        while True:
            ids = [row[0] for row in cursor.fetchmany(size)]
            if not ids:
                return
            yield ids[0], ids[-1], len(ids)
    finally:
        con.close()


# ---- worker processes: one compiled evaluator each ----------------------------------------------

_worker: dict = {}


def _init_worker(db_path: str, specs: list[ReleaseSpec], hook: str, now: dt.datetime) -> None:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    shared = dict(con.execute("SELECT ref, body FROM shared"))
    _worker["con"] = con
    _worker["evaluator"] = PatientEvaluator(specs, hook, now, shared)


def _evaluate_chunk(first: str, last: str) -> list[dict]:
    con, evaluator = _worker["con"], _worker["evaluator"]
    rows = con.execute("SELECT patient, src, body FROM res WHERE patient BETWEEN ? AND ? ORDER BY patient, seq",
                       (first, last))
    return [evaluator.evaluate(patient, ((src, body) for _, src, body in group))
            for patient, group in itertools.groupby(rows, key=lambda r: r[0])]


def evaluate_index(db_path: Path, specs: list[ReleaseSpec], hook: str, now: dt.datetime, *,
                   workers: int | None = None, chunk: int = CHUNK_PATIENTS,
                   progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Rows sorted by patient id, evaluated by `workers` processes (default: every core)."""
    workers = workers or os.cpu_count() or 1
    window = workers * 4  # chunks in flight: keeps every worker busy without queueing the whole population
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                             initargs=(str(db_path), specs, hook, now)) as pool:
        pending: deque[tuple[Future, int]] = deque()
        for first, last, count in _chunks(db_path, chunk):
            pending.append((pool.submit(_evaluate_chunk, first, last), count))
            if len(pending) >= window:
                yield from _take(pending, progress)
        while pending:
            yield from _take(pending, progress)


def _take(pending: deque, progress) -> list[dict]:
    future, count = pending.popleft()
    rows = future.result()
    if progress is not None:
        progress(count)
    return rows


class LocalRun:
    """An index in a temporary directory for one run; `rows()` streams the evaluated rows."""

    def __init__(self, sources: list[Source], specs: list[ReleaseSpec], hook: str, now: dt.datetime, *,
                 workers: int | None = None, tmp_dir: str | None = None):
        self._tmp = tempfile.TemporaryDirectory(prefix="pacecds-impact-", dir=tmp_dir)
        self.db_path = Path(self._tmp.name) / "index.sqlite"
        self.specs, self.hook, self.now, self.workers = specs, hook, now, workers
        self.summary = build_index(sources, self.db_path)

    def rows(self, progress: Callable[[int], None] | None = None) -> Iterator[dict]:
        return evaluate_index(self.db_path, self.specs, self.hook, self.now, workers=self.workers,
                              progress=progress)

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
