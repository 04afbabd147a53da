"""The Bulk Data export generator: deterministic, readable as the Bulk Data IG writes it, valid FHIR R4."""

import collections
import datetime as dt
import gzip
import json
import re

import pytest
from fhir.resources.R4B import get_fhir_model_class

from engine.ruleset import load_ruleset
from pacecds.cli import main
from population.generate import MIX, NOW, OPIOID_MEDS, build_patient, patient_id, plan, write_export
from tests.conftest import ROOT

PATIENTS = 300


def read_export(out_dir):
    """{resourceType: [resource, ...]} from the manifest's files (plain or gzip)."""
    manifest = json.loads((out_dir / "manifest.json").read_text())
    found: dict[str, list[dict]] = collections.defaultdict(list)
    for item in manifest["output"]:
        path = out_dir / item["url"]
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        lines = raw.decode().splitlines()
        assert len(lines) == item["count"], item
        for line in lines:
            resource = json.loads(line)
            assert resource["resourceType"] == item["type"]
            found[item["type"]].append(resource)
    return manifest, found


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    manifest = write_export(out, PATIENTS, seed=7, files_per_type=3, gzip=True)
    return out, manifest


def test_same_arguments_give_the_same_bytes(tmp_path):
    for name in ("a", "b"):
        write_export(tmp_path / name, 60, seed=3, files_per_type=2, gzip=True)
    files_a = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files_a == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert "Patient.1.ndjson.gz" in files_a and "manifest.json" in files_a
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    write_export(tmp_path / "c", 60, seed=4, files_per_type=2, gzip=True)
    assert (tmp_path / "c" / "Observation.1.ndjson.gz").read_bytes() != (
        tmp_path / "a" / "Observation.1.ndjson.gz").read_bytes()


def test_a_patient_does_not_depend_on_the_population_size():
    assert build_patient(0, 5, "pop-000005") == build_patient(0, 5, "pop-000005")
    assert plan(0, 5) == plan(0, 5)
    assert patient_id(5, 10) == "pop-000005" and patient_id(5, 10_000_000) == "pop-0000005"


def test_manifest_lists_every_file_with_relative_urls(export):
    out, manifest = export
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["transactionTime"] == "2026-11-20T12:00:00Z"
    assert manifest["requiresAccessToken"] is False and manifest["error"] == []
    listed = {item["url"] for item in manifest["output"]}
    on_disk = {p.name for p in out.iterdir()} - {"manifest.json"}
    assert listed == on_disk
    assert all("/" not in url for url in listed)
    types = {item["type"] for item in manifest["output"]}
    assert {"Patient", "Observation", "Condition", "MedicationRequest", "Goal"} <= types
    assert [item["url"] for item in manifest["output"] if item["type"] == "Patient"] == [
        "Patient.1.ndjson.gz", "Patient.2.ndjson.gz", "Patient.3.ndjson.gz"]


def test_every_resource_is_valid_fhir_r4_except_the_deliberately_invalid(export):
    out, _ = export
    _, found = read_export(out)
    invalid_patients = {patient_id(i, PATIENTS) for i in range(PATIENTS) if plan(7, i)["record"] == "invalid"}
    bad = set()
    for rtype, resources in found.items():
        model = get_fhir_model_class(rtype)
        for resource in resources:
            try:
                model.model_validate(resource)
            except Exception:  # noqa: BLE001 - any validation failure counts
                bad.add(resource["subject"]["reference"].removeprefix("Patient/"))
    assert bad == invalid_patients


def test_patient_references_resolve_and_ids_are_unique(export):
    out, _ = export
    _, found = read_export(out)
    patients = [r["id"] for r in found["Patient"]]
    assert sorted(patients) == [patient_id(i, PATIENTS) for i in range(PATIENTS)]
    ids = collections.Counter((rtype, r["id"]) for rtype, rs in found.items() for r in rs)
    assert max(ids.values()) == 1
    for rtype, resources in found.items():
        if rtype == "Patient":
            continue
        for r in resources:
            assert r["subject"]["reference"].removeprefix("Patient/") in set(patients), (rtype, r["id"])


def test_no_data_patients_have_only_a_patient_resource():
    for i in range(200):
        resources = build_patient(0, i, patient_id(i, 200))
        if plan(0, i)["record"] == "no_data":
            assert [r["resourceType"] for r in resources] == ["Patient"]
        else:
            assert resources[0]["resourceType"] == "Patient"


def test_the_mix_follows_the_documented_proportions():
    n = 20_000
    plans = [plan(1, i) for i in range(n)]
    for axis, weights in MIX.items():
        counts = collections.Counter(p[axis] for p in plans)
        assert set(counts) <= set(weights)
        for situation, percent in weights.items():
            share = 100 * counts[situation] / n
            # binomial standard deviation at n=20000 is at most 0.36 points: 1.5 points is > 4 sd
            assert abs(share - percent) < 1.5, (axis, situation, share, percent)
    assert sum(p["meds"] in OPIOID_MEDS for p in plans) > 0.3 * n * sum(MIX["meds"][m] for m in OPIOID_MEDS) / 100


def test_many_rules_fire_and_only_invalid_patients_fail():
    rs = load_ruleset(ROOT / "rules")
    fired: set[str] = set()
    failed, expected_failures = set(), set()
    for i in range(250):
        resources = build_patient(0, i, f"p{i}")
        if plan(0, i)["record"] == "invalid":
            expected_failures.add(i)
        try:
            result = rs.evaluate({"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": r} for r in resources]}, now=NOW)
        except Exception:  # noqa: BLE001 - the per-patient error an engine counts
            failed.add(i)
            continue
        fired |= {c["extension"]["pacecds.rule"]["id"] for c in result.cards}
    assert failed == expected_failures and failed
    patient_view_rules = {r.id for r in rs.rules if not r.id.startswith("meds.order-")}
    assert len(fired) >= 18, sorted(patient_view_rules - fired)


def test_the_export_is_dated_from_now(tmp_path):
    later = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
    manifest = write_export(tmp_path / "x", 5, now=later)
    assert manifest["transactionTime"] == "2027-03-01T09:00:00Z"
    with pytest.raises(ValueError, match="time zone"):
        write_export(tmp_path / "y", 5, now=dt.datetime(2027, 3, 1))


def test_refuses_to_write_over_an_earlier_export(tmp_path):
    write_export(tmp_path, 3)
    with pytest.raises(ValueError, match="already holds an export"):
        write_export(tmp_path, 3)


def test_cli_generate_export(tmp_path, capsys):
    assert main(["generate-export", str(tmp_path / "cli"), "--patients", "20", "--seed", "2"]) == 0
    assert "wrote 20 patients" in capsys.readouterr().out
    write_export(tmp_path / "api", 20, seed=2)
    for p in (tmp_path / "api").iterdir():
        assert (tmp_path / "cli" / p.name).read_bytes() == p.read_bytes()
    assert main(["generate-export", str(tmp_path / "cli"), "--patients", "20"]) == 2
    assert "already holds an export" in capsys.readouterr().err
    assert main(["generate-export", str(tmp_path / "z"), "--patients", "-3"]) == 2


def test_the_documented_mix_is_the_generator_mix():
    """docs/population-impact.md lists each axis's percentages in MIX order: the numbers must be MIX's."""
    doc = (ROOT / "docs" / "population-impact.md").read_text()
    table = doc[doc.index("| axis | situations |"):]
    lines = [line for line in table.splitlines()[2:] if line.startswith("| ")][:len(MIX)]
    assert len(lines) == len(MIX)
    for line, (axis, weights) in zip(lines, MIX.items()):
        cells = line.split(" | ", 1)[1]
        numbers = [float(n) for n in re.findall(r"(?<![\w.-])(\d+(?:\.\d+)?)(?=[;:]| \(|$| \|)", cells)]
        assert numbers == list(weights.values()), (axis, numbers)
