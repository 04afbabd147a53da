"""The rules tree: which files it holds, what each one is, how they are read, and its one hash.

Every part of pacecds that looks at a rules directory (the loader, the hot-reload watcher, the
release manifest, `pacecds diff`, the source attributes) asks this module, so a file is a rule
for all of them or for none, and the ruleset sha256 is the same on cards, `/healthz`, audit
records and `rules/ruleset.yaml`.

Layout of a tree:
  ruleset.yaml          the release manifest (name, version, approvals, file hashes)
  facts/*.yaml          fact definitions
  valuesets/*           value sets: FHIR ValueSet JSON or YAML code lists
  drugs/*.json          data tables facts read (drug strengths, MME factors)
  examples/...          example cases (read by `pacecds test`, never served)
  any other *.yaml      one rule per file, at any depth (top level included)
  anything else         documentation (e.g. valuesets/SOURCES.md): hashed, not read
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fhir_adapter.valuesets import ValueSet, ValueSetError, from_code_list, from_fhir_json

MANIFEST = "ruleset.yaml"
YAML_SUFFIXES = (".yaml", ".yml")

MANIFEST_KIND, FACTS, VALUESET, TABLE, EXAMPLE, RULE, OTHER = (
    "manifest", "facts", "valueset", "table", "example", "rule", "other")


@dataclass(frozen=True)
class TreeFile:
    path: Path
    rel: str   # relative POSIX path, e.g. "anemia/low-hemoglobin.yaml"
    kind: str  # one of the kinds above


def classify(rel: str) -> str:
    """What a file of the tree is, from its relative POSIX path alone."""
    top = rel.split("/", 1)[0] if "/" in rel else ""
    suffix = Path(rel).suffix
    if rel == MANIFEST:
        return MANIFEST_KIND
    if top == "valuesets":
        return VALUESET if suffix in (".json",) + YAML_SUFFIXES else OTHER
    if top == "facts":
        return FACTS if suffix in YAML_SUFFIXES else OTHER
    if top == "drugs":
        return TABLE if suffix == ".json" else OTHER
    if top == "examples":
        return EXAMPLE
    return RULE if suffix in YAML_SUFFIXES else OTHER


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in parts)


def tree_files(root: str | Path) -> list[TreeFile]:
    """Every file of the tree (hidden files and __pycache__ left out), sorted by relative path."""
    root = Path(root)
    out = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if not _hidden(relative.parts) and path.is_file():
            rel = relative.as_posix()
            out.append(TreeFile(path, rel, classify(rel)))
    return sorted(out, key=lambda f: f.rel)


def fingerprint(root: str | Path) -> tuple:
    """Cheap change detector for hot reload: every file's path, size and mtime (nothing is read)."""
    out = []
    for f in tree_files(root):
        stat = f.path.stat()
        out.append((f.rel, stat.st_size, stat.st_mtime_ns))
    return tuple(out)


# ---- the one hash ---------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_hashes(root: str | Path) -> dict[str, str]:
    """{relative path: sha256} of every file a release covers: all of them but the manifest itself."""
    return {f.rel: sha256_file(f.path) for f in tree_files(root) if f.kind != MANIFEST_KIND}


def content_digest(hashes: dict[str, str]) -> str:
    """The ruleset sha256: over the sorted "path NUL sha256" lines of `file_hashes`."""
    h = hashlib.sha256()
    for path in sorted(hashes):
        h.update(f"{path}\0{hashes[path]}\n".encode())
    return h.hexdigest()


def ruleset_sha256(root: str | Path) -> str:
    """The hash stamped on cards, /healthz and audit records, and recorded as the manifest's content_sha256."""
    return content_digest(file_hashes(root))


# ---- reading, as plain data (governance works on any release, even one the engine cannot load) ----

def read_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def read_manifest(root: str | Path) -> dict:
    """The manifest as a mapping ({} when it is missing or unreadable)."""
    path = Path(root) / MANIFEST
    try:
        data = read_yaml(path) if path.exists() else {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_rules(root: str | Path) -> dict[str, tuple[str, dict]]:
    """{rule id: (relative file, rule as written)} for every rule file that parses and has an id and a
    version. The loader reads the same files (and reports those that do not parse)."""
    rules: dict[str, tuple[str, dict]] = {}
    for f in tree_files(root):
        if f.kind != RULE:
            continue
        try:
            data = read_yaml(f.path)
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and "id" in data and "version" in data:
            rules[str(data["id"])] = (f.rel, data)
    return rules


def read_fact_definitions(root: str | Path) -> dict[str, dict]:
    """{fact name: definition as written} from the tree's fact files."""
    out: dict[str, dict] = {}
    for f in tree_files(root):
        if f.kind != FACTS:
            continue
        try:
            data = read_yaml(f.path)
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("facts"), dict):
            out.update({str(k): v for k, v in data["facts"].items() if isinstance(v, dict)})
    return out


# ---- value sets -----------------------------------------------------------------------------

def parse_valueset(name: str, path: Path, text: str | None = None, yaml_reader=None) -> ValueSet:
    """A value set file of the tree, parsed by the adapter's one value-set parser.

    `yaml_reader(path, text)` returns the YAML code list's `valueset` mapping (the loader passes one that
    keeps positions and checks the schema); by default the file is read as plain YAML."""
    text = path.read_text(encoding="utf-8") if text is None else text
    if path.suffix == ".json":
        try:
            resource = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueSetError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        return from_fhir_json(name, resource)
    if yaml_reader is not None:
        doc = yaml_reader(path, text)
    else:
        data = yaml.safe_load(text)
        doc = data.get("valueset") if isinstance(data, dict) else None
        if not isinstance(doc, dict) or not isinstance(doc.get("codes"), list):
            raise ValueSetError("a YAML value set needs 'valueset: {codes: [...]}'")
    return from_code_list(name, doc)


def valueset_files(root: str | Path) -> dict[str, Path]:
    """{value set name (file stem): path} for the tree's value sets."""
    return {f.path.stem: f.path for f in tree_files(root) if f.kind == VALUESET}
