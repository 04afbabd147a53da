"""The population engines: reading an export, the join on the patient reference, and the local and Spark
engines giving the same rows on the same export (Spark in local mode, local[2])."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from engine import load_ruleset
from population import spark as spark_engine
from population.evaluate import CANDIDATE, SERVING, SINGLE, ReleaseSpec, materialise_releases
from population.export import ExportError, discover
from population.impact import run_impact
from population.local import LocalRun
from tests.conftest import RULES
from tests.population.exports import (
    NOW,
    build_bundle_folder,
    build_export,
    candidate_rules,
    example_resources,
)

HOOK = "patient-view"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def export(workdir):
    return build_export(workdir)


@pytest.fixture(scope="module")
def two_releases(workdir):
    return materialise_releases(str(candidate_rules(workdir)), str(RULES), workdir / "releases")


def run_local(input_dir, specs, workers=2):
    with LocalRun(discover(input_dir), specs, HOOK, NOW, workers=workers) as run:
        return list(run.rows()), run.summary.as_dict()


@pytest.fixture(scope="module")
def local_result(export, two_releases):
    return run_local(export, two_releases)


def rule_ids(result: dict, draft: bool = False) -> list[str]:
    return sorted(c["rule_id"] for c in result["cards"] if c["draft"] == draft)


def test_rows_are_one_per_patient_sorted_with_both_releases(local_result):
    rows, summary = local_result
    patients = [row["patient"] for row in rows]
    assert patients == sorted(set(patients))
    assert len(rows) == summary["patients"] == 43  # 40 generated + three example-based
    assert all(set(row["results"]) == {SERVING, CANDIDATE} for row in rows)
    assert sum(len(r["results"][SERVING]["cards"]) for r in rows) > len(rows)  # the mix fires rules


def test_lines_not_used_are_named_by_file_and_line(local_result):
    _, summary = local_result
    issues = {i["where"]: i["reason"] for i in summary["issues"]}
    assert issues["Observation.zz.ndjson:1"].startswith("Observation names no patient")
    assert issues["Observation.zz.ndjson:2"].startswith("malformed JSON")
    assert issues["Observation.zz.ndjson:4"] == "not a JSON object"  # line 3 is blank: nothing to report
    assert issues["Observation.zz.ndjson:5"] == "no resourceType"
    assert summary["issue_count"] == 4
    assert summary["shared"] == 1  # the Medication; the Practitioner is reference data no fact reads


def test_a_shared_medication_is_joined_to_the_patient_who_references_it(local_result):
    rows, _ = local_result
    row = next(r for r in rows if r["patient"] == "pt-mme")
    # the opioid order names Medication/oxycodone-10-tab in another file: the dose is computed from it
    assert "meds.medication-safety" in rule_ids(row["results"][SERVING])
    card = next(c for c in row["results"][SERVING]["cards"] if c["rule_id"] == "meds.medication-safety")
    assert "105 MME/day" in card["summary"] and card["indicator"] == "critical"


def test_a_patient_row_equals_evaluating_that_patient_alone(local_result, ruleset):
    rows, _ = local_result
    row = next(r for r in rows if r["patient"] == "pt-mme")
    alone = ruleset.evaluate({"resourceType": "Bundle", "type": "collection",
                              "entry": [{"resource": r} for r in example_resources("mme-high")]}, now=NOW, hook=HOOK)
    assert rule_ids(row["results"][SERVING]) == sorted(f.rule_id for f in alone.fired)
    assert rule_ids(row["results"][SERVING], draft=True) == sorted(f.rule_id for f in alone.shadow)


def test_the_candidate_release_stops_cards_below_its_threshold(local_result):
    rows, _ = local_result
    def gets(row, label):
        return "meds.medication-safety" in rule_ids(row["results"][label])

    stopped = [r["patient"] for r in rows if gets(r, SERVING) and not gets(r, CANDIDATE)]
    started = [r["patient"] for r in rows if gets(r, CANDIDATE) and not gets(r, SERVING)]
    assert "pt-mme" in stopped  # 105 MME/day: at least 50, below 120
    assert started == []
    assert all(r["results"][CANDIDATE]["error"] == r["results"][SERVING]["error"] for r in rows)


def test_patient_errors_are_recorded_in_the_row_not_raised(local_result):
    rows, _ = local_result
    errors = {r["patient"]: r["results"] for r in rows if r["results"][SERVING]["error"]}
    assert {"pt-finn", "pt-unknown-type"} <= set(errors)
    finn = errors["pt-finn"][SERVING]["error"]
    assert finn.startswith("Invalid.ndjson:") and "valueQuantity.value" in finn  # names the file, line and field
    unknown = errors["pt-unknown-type"]
    assert unknown[SERVING]["error"] == unknown[CANDIDATE]["error"]
    assert "Invalid.ndjson:" in unknown[SERVING]["error"] and "unknown FHIR R4 resourceType" in unknown[SERVING]["error"]
    for results in errors.values():
        assert all(r["cards"] == [] and "\n" not in r["error"] for r in results.values())


def test_a_folder_of_bundles(workdir):
    names = ["mme-high", "anemia-severe", "meds-opioid-benzo"]
    rows, summary = run_local(build_bundle_folder(workdir, names), [ReleaseSpec(SINGLE, str(RULES))], workers=1)
    assert summary["issue_count"] == 0 and summary["files"] == 3
    ruleset = load_ruleset(RULES)
    for name in names:
        bundle = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": r} for r in example_resources(name)]}
        alone = ruleset.evaluate(bundle, now=NOW, hook=HOOK)
        row = next(r for r in rows if r["patient"] == alone.patient_id)
        assert rule_ids(row["results"][SINGLE]) == sorted(f.rule_id for f in alone.fired), name


def test_not_an_export(tmp_path):
    with pytest.raises(ExportError, match="no .ndjson"):
        discover(tmp_path)
    with pytest.raises(ExportError, match="not a directory"):
        discover(tmp_path / "missing")


# ---- Spark (local mode): the same rows ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def spark():
    reason = spark_engine.unavailable()
    if reason:
        pytest.skip(f"Spark engine tests need PySpark and Java: {reason}")
    session = spark_engine.session("local[2]", partitions=3, driver_memory="512m")
    yield session
    session.stop()


def test_spark_gives_exactly_the_local_rows(spark, export, two_releases, local_result):
    with spark_engine.SparkRun(spark, discover(export), two_releases, HOOK, NOW, partitions=3) as run:
        rows = list(run.rows())
        summary = run.summary.as_dict()
    local_rows, local_summary = local_result
    assert summary == local_summary
    assert rows == local_rows


def test_spark_and_local_write_the_same_files(spark, export, workdir):
    """The contract: both engines give identical output files (the report too) on the same export."""
    outs = {}
    for engine in ("local", "spark"):
        outs[engine] = workdir / f"out-{engine}"
        run_impact(export, rules=str(RULES), baseline=None, hook=HOOK, now=NOW, out_dir=outs[engine],
                   engine=engine, workers=2, partitions=2, spark=spark)
    for name in ("patients.ndjson", "impact.json", "input.json"):
        assert (outs["local"] / name).read_bytes() == (outs["spark"] / name).read_bytes(), name
    assert pq.read_table(outs["local"] / "cards.parquet").equals(pq.read_table(outs["spark"] / "cards.parquet"))


def test_spark_reads_a_folder_of_bundles_as_locally(spark, workdir):
    folder = build_bundle_folder(workdir / "spark-bundles", ["mme-high", "anemia-severe", "order-benzo-on-opioid"])
    specs = [ReleaseSpec(SINGLE, str(RULES))]
    with spark_engine.SparkRun(spark, discover(folder), specs, HOOK, NOW, partitions=2) as run:
        rows, summary = list(run.rows()), run.summary.as_dict()
    assert (rows, summary) == run_local(folder, specs, workers=1)
