"""Reading a population: a FHIR Bulk Data export directory, or a folder of FHIR Bundles.

A Bulk Data export holds one or more NDJSON files per resource type (`Observation.ndjson`,
`Observation.2.ndjson`, optionally gzipped), one resource per line. Every resource is routed
here to the patient it is filed under (`fhir_adapter.identity.patient_key`) or, for resources
about no one (Medication, ...), to the shared reference data; both engines use these functions,
so they route every line the same way. A line that cannot be read is a `ReadIssue` naming file
and line; it never stops the run.
"""
from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from fhir_adapter.identity import PATIENT_DATA_TYPES, patient_key

NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")
PATIENT, SHARED, ISSUE = "patient", "shared", "issue"
# resources about no patient that facts read through a patient's resource (fhir_adapter.facts.medication_concept
# resolves MedicationRequest/Statement.medicationReference): broadcast to the workers, a small table
SHARED_TYPES = frozenset({"Medication"})
REASON_MAX_CHARS = 200


class ExportError(ValueError):
    """The input is not a population this command can read (one line naming what is wrong)."""


@dataclass(frozen=True)
class Source:
    """One input file: NDJSON (a resource a line) or a Bundle (a JSON document), in the run's file order."""

    index: int
    path: Path
    name: str  # relative to the input directory: what errors name
    kind: str  # "ndjson" | "bundle"


@dataclass(frozen=True)
class ReadIssue:
    """A line or entry not used: malformed, or naming no patient and not shared reference data."""

    where: str
    reason: str

    def as_dict(self) -> dict:
        return {"where": self.where, "reason": self.reason}


def discover(input_dir: str | Path) -> list[Source]:
    """The files of an export directory, in a fixed order (by name): NDJSON files if there are any, else the
    `*.json` Bundles (a `manifest.json` is the export's listing, not data)."""
    root = Path(input_dir)
    if not root.is_dir():
        raise ExportError(f"{input_dir}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    ndjson = [p for p in files if p.name.endswith(NDJSON_SUFFIXES)]
    if ndjson:
        chosen, kind = ndjson, "ndjson"
    else:
        chosen = [p for p in files if p.name.endswith(".json") and p.name != "manifest.json"]
        kind = "bundle"
    if not chosen:
        raise ExportError(f"{input_dir}: no .ndjson, .ndjson.gz or Bundle .json files")
    return [Source(i, p, p.relative_to(root).as_posix(), kind) for i, p in enumerate(chosen)]


def open_text(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]  # a binary stream, typed more narrowly
    return open(path, "rb")


def route(doc, where: str) -> list[tuple]:
    """Where one parsed document goes: a list of (PATIENT, patient id, where, resource JSON bytes),
    (SHARED, "Type/id", where, bytes) or (ISSUE, None, where, reason). A Bundle is opened entry by entry."""
    if not isinstance(doc, dict):
        return [(ISSUE, None, where, "not a JSON object")]
    rtype = doc.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return [(ISSUE, None, where, "no resourceType")]
    if rtype == "Bundle":
        entries = doc.get("entry") or []
        if not isinstance(entries, list):
            return [(ISSUE, None, where, "Bundle.entry is not an array")]
        out: list[tuple] = []
        for i, entry in enumerate(entries):
            inner = entry.get("resource") if isinstance(entry, dict) else None
            if inner is None:
                out.append((ISSUE, None, f"{where}.entry[{i}]", "entry has no resource"))
                continue
            out += route(inner, f"{where}.entry[{i}]")
        return out
    if rtype == "OperationOutcome":
        return []  # an export's error report is not clinical data
    key = patient_key(doc)
    if key is not None:
        return [(PATIENT, key, where, orjson.dumps(doc))]
    if rtype == "Patient" or rtype in PATIENT_DATA_TYPES:
        return [(ISSUE, None, where, f"{rtype} names no patient (subject, patient or beneficiary Patient/id)")]
    if rtype not in SHARED_TYPES:
        return []  # reference data no fact reads (Practitioner, Organization, ...)
    rid = doc.get("id")
    if not isinstance(rid, str) or not rid:
        return [(ISSUE, None, where, f"{rtype} has no id, so nothing can reference it")]
    return [(SHARED, f"{rtype}/{rid}", where, orjson.dumps(doc))]


def route_text(text: bytes | str, where: str) -> list[tuple]:
    """route() for one NDJSON line as read from the file; a malformed line is one ISSUE, a blank one nothing."""
    if not text.strip():
        return []
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return [(ISSUE, None, where, _reason(f"malformed JSON: {exc}"))]
    return route(doc, where)


def where_of(source_name: str, line_no: int) -> str:
    return f"{source_name}:{line_no}"


def read_source(source: Source) -> Iterator[tuple]:
    """Every routed record of one file, in order; an unreadable file or a broken gzip stream is one ISSUE."""
    if source.kind == "bundle":
        try:
            doc = orjson.loads(source.path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            yield (ISSUE, None, source.name, _reason(f"cannot read a Bundle: {exc}"))
            return
        yield from route(doc, source.name)
        return
    line_no = 0
    try:
        with open_text(source.path) as stream:
            for line_no, line in enumerate(stream, start=1):
                yield from route_text(line, where_of(source.name, line_no))
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # gzip errors are OSError/EOFError
        yield (ISSUE, None, where_of(source.name, line_no + 1), _reason(f"cannot read further: {exc}"))


def _reason(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= REASON_MAX_CHARS else line[: REASON_MAX_CHARS - 3] + "..."


def shared_references(resource: dict) -> list[str]:
    """The shared resources ("Type/id") a patient's resource names that facts read: its medicationReference,
    matched by its last path segment as fhir_adapter.facts.medication_concept matches it."""
    ref = resource.get("medicationReference")
    text = ref.get("reference") if isinstance(ref, dict) else None
    if isinstance(text, str) and "Medication/" in text and not text.startswith("#"):
        return [f"Medication/{text.split('/')[-1]}"]
    return []
