"""Test exports for the population engines: a generated export with the odd cases the generator does not make
(malformed lines, a Medication shared by reference, a resource naming no patient), and a candidate release."""
from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

from population.generate import write_export
from tests.conftest import EXAMPLES, RULES, load_example

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.timezone.utc)
MEDICATION_ID = "oxycodone-10-tab"
BAD_LINES = [b"{not json", b"", b"[1, 2]", b'{"id": "x"}']  # malformed, blank (skipped), not an object, no type


def example_resources(name: str) -> list[dict]:
    return [entry["resource"] for entry in load_example(name)["entry"]]


def with_medication_reference(resources: list[dict]) -> tuple[list[dict], dict]:
    """The example's opioid orders naming a shared Medication instead of carrying the code inline."""
    out, medication = [], None
    for resource in resources:
        resource = copy.deepcopy(resource)
        if resource["resourceType"] == "MedicationRequest" and medication is None:
            concept = resource.pop("medicationCodeableConcept")
            medication = {"resourceType": "Medication", "id": MEDICATION_ID, "code": concept}
            resource["medicationReference"] = {"reference": f"Medication/{MEDICATION_ID}"}
        out.append(resource)
    assert medication is not None
    return out, medication


def write_ndjson(path: Path, resources: list, *, extra_lines: list[bytes] = ()) -> None:
    lines = [json.dumps(r).encode() for r in resources] + list(extra_lines)
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)


def build_export(root: Path, patients: int = 40, seed: int = 7) -> Path:
    """A generated export (two gzip files per type) plus: the `mme-high` example patient whose opioid order
    names a shared Medication (Medication.ndjson), malformed lines, and an Observation naming no patient."""
    export = root / "export"
    write_export(export, patients, seed, files_per_type=2, gzip=True, now=NOW)
    resources, medication = with_medication_reference(example_resources("mme-high"))
    by_type: dict[str, list] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    for rtype, items in by_type.items():
        write_ndjson(export / f"{rtype}.extra.ndjson", items)
    # a patient whose hemoglobin value is not a number (validation refuses it), and one with a resource of no
    # FHIR type: both get their reason in their row
    invalid = copy.deepcopy(example_resources("anemia-severe"))
    hb = next(r for r in invalid if r["resourceType"] == "Observation")
    hb["valueQuantity"]["value"] = "low"
    write_ndjson(export / "Invalid.ndjson", invalid + [
        {"resourceType": "Patient", "id": "pt-unknown-type"},
        {"resourceType": "NotAFhirType", "id": "n1", "subject": {"reference": "Patient/pt-unknown-type"}}])
    orphan = {"resourceType": "Observation", "id": "no-subject", "status": "final", "code": {"text": "x"}}
    write_ndjson(export / "Observation.zz.ndjson", [orphan], extra_lines=BAD_LINES)
    write_ndjson(export / "Medication.ndjson", [medication, {"resourceType": "Practitioner", "id": "dr"}])
    return export


def build_bundle_folder(root: Path, names: list[str]) -> Path:
    folder = root / "bundles"
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(EXAMPLES / "patients" / f"{name}.json", folder / f"{name}.json")
    return folder


def candidate_rules(root: Path) -> Path:
    """A candidate release: the bundled rules with the MME reassess threshold raised from 50 to 120 MME/day
    (a test change, not a clinical one), so that some patients stop getting meds.medication-safety."""
    target = root / "candidate-rules"
    shutil.copytree(RULES, target)
    rule = target / "meds" / "medication-safety.yaml"
    text = rule.read_text()
    assert "reassess: {value: 50," in text
    rule.write_text(text.replace("reassess: {value: 50,", "reassess: {value: 120,"))
    return target
