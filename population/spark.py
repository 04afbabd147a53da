"""The Apache Spark engine (PySpark, the optional extra `spark`): the same rows as population.local.

The job:
1. read: each NDJSON file as text lines (Spark splits big files; `.gz` through Hadoop's codec), numbered
   with zipWithIndex so errors name file:line as the local engine does; each line routed by
   population.export (the same function as the local engine: patient key, shared data, or an issue);
2. join: the shared reference data (Medication) is small and is broadcast; the patient-keyed resources are
   grouped by patient in one shuffle, a range-partitioned sort on the key (sortByKey), so that a patient's
   resources are together and the partitions are in patient order;
3. evaluate: mapPartitions runs durable-rules inside the executors' Python workers, one compiled
   PatientEvaluator per Python process (a module-level holder; workers are reused between tasks);
4. collect: the rows are cached and counted (all partitions at once, every core), then streamed to the
   driver partition by partition, already sorted by patient id.
The rules trees travel in a broadcast and are written out once per executor process, so executors need no
shared filesystem for them (the export files must be readable by every executor, as for any Spark input).
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from itertools import groupby
from pathlib import Path

from .evaluate import PatientEvaluator, ReleaseSpec
from .export import ISSUE, PATIENT, SHARED, Source, read_source, route_text, where_of
from .local import ISSUES_KEPT, ReadSummary

DEFAULT_MASTER = "local[*]"


def unavailable() -> str | None:
    """Why the Spark engine cannot run here (None when it can): PySpark not installed, or no Java runtime."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "PySpark is not installed (pip install 'pacecds[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if not shutil.which("java") and not (java_home and Path(java_home, "bin", "java").exists()):
        return "no Java runtime (java on PATH or JAVA_HOME): Spark needs Java 17 or later"
    return None


def session(master: str = DEFAULT_MASTER, *, partitions: int = 8, driver_memory: str = "1g"):
    """A SparkSession for an impact run: no web UI, few shuffle partitions (the population is re-partitioned
    explicitly), quiet logs."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName("pacecds-impact")
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        os.environ["PYSPARK_PYTHON"] = sys.executable  # workers run this environment's pacecds, not PATH's python
    spark = (builder
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")  # the command draws its own progress bar
             .config("spark.driver.memory", driver_memory)
             .config("spark.sql.shuffle.partitions", str(partitions))
             .config("spark.python.worker.reuse", "true")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# ---- executors: one compiled evaluator per Python worker process ----------------------------------

_holder: dict = {}


def _evaluator(config: tuple, trees, shared) -> PatientEvaluator:
    evaluator = _holder.get("evaluator") if _holder.get("config") == config else None
    if evaluator is None:  # the first task of this run in this Python worker
        _, labels, hook, now_iso = config
        root = Path(tempfile.mkdtemp(prefix="pacecds-rules-"))
        specs = []
        for label in labels:
            for rel, data in trees.value[label].items():
                target = root / label / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            specs.append(ReleaseSpec(label, str(root / label)))
        evaluator = PatientEvaluator(specs, hook, dt.datetime.fromisoformat(now_iso), shared.value)
        _holder.update(config=config, evaluator=evaluator)
    return evaluator


def _route_line(source_index: int, source_name: str, numbered) -> list[tuple]:
    line, index = numbered
    return [(kind, key, (source_index, index + 1, k), where, payload)
            for k, (kind, key, where, payload) in enumerate(route_text(line, where_of(source_name, index + 1)))]


def _route_bundle(source: Source) -> list[tuple]:
    return [(kind, key, (source.index, 0, k), where, payload)
            for k, (kind, key, where, payload) in enumerate(read_source(source))]


def _evaluate_partition(config: tuple, trees, shared, records: Iterator) -> Iterator[tuple[str, dict]]:
    evaluator = _evaluator(config, trees, shared)
    for patient, group in groupby(records, key=lambda kv: kv[0]):
        resources = sorted(value for _, value in group)  # (order, where, body): the input's order
        yield patient, evaluator.evaluate(patient, ((where, body) for _, where, body in resources))


def _read_tree(path: str) -> dict[str, bytes]:
    root = Path(path)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class SparkRun:
    """One impact run on Spark: read and route in the constructor (issues and shared data are known then),
    `rows()` evaluates and streams the rows sorted by patient."""

    def __init__(self, spark, sources: list[Source], specs: list[ReleaseSpec], hook: str, now: dt.datetime, *,
                 partitions: int | None = None):
        from pyspark import StorageLevel

        self.spark, self.sc = spark, spark.sparkContext
        self.partitions = partitions or self.sc.defaultParallelism
        parts = []
        for source in sources:
            if source.kind == "ndjson":
                # one partition a file unless Hadoop splits a big one by blocks: zipWithIndex then costs no extra
                # job for the many small files of an export
                lines = self.sc.textFile(str(source.path), minPartitions=1, use_unicode=False).zipWithIndex()
                parts.append(lines.flatMap(partial(_route_line, source.index, source.name)))
        bundles = [s for s in sources if s.kind == "bundle"]
        if bundles:
            parts.append(self.sc.parallelize(bundles, min(len(bundles), self.partitions)).flatMap(_route_bundle))
        records = self.sc.union(parts)
        if records.getNumPartitions() > self.partitions:
            records = records.coalesce(self.partitions)  # one file's lines per task is too fine for small files
        records = records.persist(StorageLevel.MEMORY_AND_DISK)  # read once, used by the jobs below
        self._records = records

        self.summary = ReadSummary(files=len(sources))
        kinds = records.map(lambda r: r[0]).countByValue()
        self.summary.resources = kinds.get(PATIENT, 0)
        if kinds.get(ISSUE):
            issues = records.filter(lambda r: r[0] == ISSUE).map(lambda r: (r[2], r[3], r[4]))
            for _, where, reason in issues.takeOrdered(ISSUES_KEPT):  # the first ones in input order, as locally
                self.summary.add_issue(where, reason)
            self.summary.issue_count = kinds[ISSUE]
        shared: dict = {}
        if kinds.get(SHARED):  # the first copy of a shared resource wins, in input order (as in the local engine)
            shared = (records.filter(lambda r: r[0] == SHARED).map(lambda r: (r[1], (r[2], r[4])))
                      .reduceByKey(min).collectAsMap())
        self.summary.shared = len(shared)
        self._shared = self.sc.broadcast({ref: body for ref, (_, body) in shared.items()})
        self._trees = self.sc.broadcast({spec.label: _read_tree(spec.path) for spec in specs})
        # the run's id keys the executors' compiled evaluator: a later run in the same workers compiles its own
        self._config = (uuid.uuid4().hex, tuple(spec.label for spec in specs), hook, now.isoformat())
        self._patients = records.filter(lambda r: r[0] == PATIENT).map(lambda r: (r[1], (r[2], r[3], r[4])))
        self.summary.patients = self._patients.keys().distinct().count()

    def rows(self, progress: Callable[[int], None] | None = None) -> Iterator[dict]:
        from pyspark import StorageLevel

        if self.summary.patients == 0:
            return iter(())
        grouped = self._patients.sortByKey(numPartitions=self.partitions)
        rows = grouped.mapPartitions(partial(_evaluate_partition, self._config, self._trees, self._shared))
        rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
        self._count_with_progress(rows, progress)  # every partition at once; the rows stay cached
        return (row for _, row in rows.toLocalIterator())

    def _count_with_progress(self, rows, progress) -> None:
        """Evaluate every partition (one job); report finished partitions' patients as they finish."""
        if progress is None:
            rows.count()
            return
        done = threading.Event()
        errors: list[BaseException] = []

        def run():
            try:
                self.sc.setJobGroup("pacecds-impact-evaluate", "evaluate patients")
                rows.count()
            except BaseException as exc:  # re-raised on the driver's thread
                errors.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        tracker, reported = self.sc.statusTracker(), 0
        total = self.summary.patients
        while not done.wait(0.5):
            finished = ran = 0
            for job in tracker.getJobIdsForGroup("pacecds-impact-evaluate"):
                info = tracker.getJobInfo(job)
                for stage in info.stageIds if info else []:
                    stage_info = tracker.getStageInfo(stage)
                    if stage_info:
                        finished += stage_info.numCompletedTasks
                        ran += stage_info.numTasks
            share = int(total * finished / ran) if ran else 0
            if share > reported:
                progress(share - reported)
                reported = share
        thread.join()
        if errors:
            raise errors[0]
        progress(total - reported)

    def close(self) -> None:
        self._records.unpersist()
        for broadcast in (self._shared, self._trees):
            broadcast.destroy()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
