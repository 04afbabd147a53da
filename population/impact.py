"""One population impact run: read, join and evaluate with an engine, write the outputs and the report.

OUT/patients.ndjson   one row per patient, sorted by patient id (population.evaluate's rows)
OUT/cards.parquet     one row per card: patient, release, rule_id, rule_version, indicator, summary, draft
OUT/input.json        what reading found: files, resources, patients, and the lines not used (file:line, reason)
OUT/impact.json, OUT/impact.html   the report (population.report)
Rows stream from the engine through the writers into the report: memory does not grow with the population.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from . import spark as spark_engine  # imports pyspark only when a Spark run starts
from .evaluate import check_hook, materialise_releases, release_metadata
from .export import ExportError, discover
from .local import LocalRun
from .report import build_report, write_report

ENGINES = ("local", "spark")
CARD_SCHEMA = pa.schema([("patient", pa.string()), ("release", pa.string()), ("rule_id", pa.string()),
                         ("rule_version", pa.string()), ("indicator", pa.string()), ("summary", pa.string()),
                         ("draft", pa.bool_())])
PARQUET_BATCH = 10_000


@dataclass
class Outcome:
    """What a run did, for the command's summary line and the benchmark."""

    patients: int = 0
    cards: Counter = field(default_factory=Counter)  # release label -> cards
    errors: Counter = field(default_factory=Counter)  # release label -> patients not evaluated
    read: dict = field(default_factory=dict)  # population.local.ReadSummary.as_dict()
    seconds: float = 0.0  # from the first line read to the report written
    evaluate_seconds: float = 0.0  # the engine's evaluation alone (join, evaluate, collect)
    paths: dict = field(default_factory=dict)
    cores: int = 1  # local: worker processes; spark: the cluster's default parallelism (its cores)

    def line(self) -> str:
        workers = self.cores
        rate = self.patients / self.seconds if self.seconds else 0.0
        cards = ", ".join(f"{label} {n}" for label, n in sorted(self.cards.items())) or "0"
        errors = ", ".join(f"{label} {n}" for label, n in sorted(self.errors.items()) if n) or "0"
        skipped = f", {self.read.get('issue_count', 0)} input line(s) not used" if self.read.get("issue_count") else ""
        return (f"{self.patients} patients, cards: {cards}; errors: {errors}{skipped}; {rate:.1f} patients/s "
                f"({rate / max(workers, 1):.1f} per core, {workers} cores) in {self.seconds:.1f}s")


class Writers:
    """patients.ndjson and cards.parquet, written as rows stream past."""

    def __init__(self, out_dir: Path, outcome: Outcome):
        self.outcome = outcome
        self.ndjson_path, self.parquet_path = out_dir / "patients.ndjson", out_dir / "cards.parquet"
        self._ndjson = open(self.ndjson_path, "wb")
        self._parquet = pq.ParquetWriter(self.parquet_path, CARD_SCHEMA)
        self._batch: dict[str, list] = {name: [] for name in CARD_SCHEMA.names}
        self._last: str | None = None

    def tee(self, rows: Iterable[dict]) -> Iterator[dict]:
        for row in rows:
            patient = row["patient"]
            if self._last is not None and patient <= self._last:  # both engines promise sorted, unique rows
                raise RuntimeError(f"engine gave rows out of order: {patient!r} after {self._last!r}")
            self._last = patient
            self._ndjson.write(orjson.dumps(row) + b"\n")
            self.outcome.patients += 1
            for label, result in row["results"].items():
                if result.get("error"):
                    self.outcome.errors[label] += 1
                for card in result["cards"]:
                    self.outcome.cards[label] += 1
                    values = (patient, label, card["rule_id"], card["rule_version"], card["indicator"],
                              card["summary"], bool(card.get("draft")))
                    for name, value in zip(CARD_SCHEMA.names, values):
                        self._batch[name].append(value)
            if len(self._batch["patient"]) >= PARQUET_BATCH:
                self._flush()
            yield row

    def _flush(self) -> None:
        if self._batch["patient"]:
            self._parquet.write_table(pa.table(self._batch, schema=CARD_SCHEMA))
            self._batch = {name: [] for name in CARD_SCHEMA.names}

    def close(self) -> None:
        self._flush()
        self._parquet.close()
        self._ndjson.close()


def run_impact(input_dir: str | Path, *, rules: str, baseline: str | None, hook: str, now: dt.datetime,
               out_dir: str | Path, engine: str = "local", workers: int | None = None, master: str | None = None,
               partitions: int | None = None, spark=None,
               progress: Callable[[int | None], Callable[[int], None]] | None = None) -> Outcome:
    """Evaluate a population export; write OUT's files. `progress(total)` gives the callback the engine calls
    with the number of patients just finished. `spark`: a SparkSession to use (else one is made from master)."""
    if engine not in ENGINES:
        raise ExportError(f"engine '{engine}' is not one of {', '.join(ENGINES)}")
    check_hook(hook)
    started = time.perf_counter()
    sources = discover(input_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="pacecds-impact-releases-") as tmp:
        specs = materialise_releases(rules, baseline, Path(tmp))
        releases = release_metadata(specs)
        if engine == "local":
            outcome.cores = workers or os.cpu_count() or 1
            run_ctx: LocalRun | spark_engine.SparkRun = LocalRun(sources, specs, hook, now, workers=outcome.cores)
        else:
            reason = spark_engine.unavailable()
            if reason:
                raise ExportError(f"the Spark engine cannot run: {reason}")
            if spark is None:
                spark = spark_engine.session(master or spark_engine.DEFAULT_MASTER, partitions=partitions or 8)
            outcome.cores = spark.sparkContext.defaultParallelism
            run_ctx = spark_engine.SparkRun(spark, sources, specs, hook, now, partitions=partitions)
        with run_ctx as run:
            outcome.read = run.summary.as_dict()
            (out / "input.json").write_text(json.dumps(outcome.read, indent=2, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
            callback = progress(run.summary.patients) if progress else None
            writers = Writers(out, outcome)
            evaluating = time.perf_counter()
            try:
                report = build_report(writers.tee(run.rows(progress=callback)), releases, hook=hook,
                                      now=now.isoformat())
            finally:
                writers.close()
            outcome.evaluate_seconds = time.perf_counter() - evaluating
    json_path, html_path = write_report(report, out)
    outcome.seconds = time.perf_counter() - started
    outcome.paths = {"patients": str(writers.ndjson_path), "cards": str(writers.parquet_path),
                     "input": str(out / "input.json"), "report_json": str(json_path), "report_html": str(html_path)}
    return outcome
