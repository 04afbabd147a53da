"""Rule governance: release manifests, release-to-release diffs, and source attributes.

Works on the rule files themselves (YAML and FHIR ValueSet JSON), not on the compiled
engine, so that an auditor can compare any two releases, even ones the engine of the
day could no longer load.
"""
from __future__ import annotations

import argparse
import datetime as dt
import difflib
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Iterable

import yaml

MANIFEST = "ruleset.yaml"
SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "ruleset-manifest.schema.json"
# Directories of the rules tree that hold something other than rules.
NON_RULE_DIRS = {"valuesets", "facts", "examples"}
DEV_ENV = "PACECDS_DEV"


# ============================================================================================
# Files and manifest
# ============================================================================================

def tree_files(root: Path) -> list[Path]:
    """Every file of the tree the manifest covers (same exclusions as the loader's hash)."""
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            if rel.as_posix() != MANIFEST:
                out.append(p)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_hashes(root: str | Path) -> dict[str, str]:
    root = Path(root)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in tree_files(root)}


def content_digest(hashes: dict[str, str]) -> str:
    """One hash for the release's content: over the sorted (path, sha256) list."""
    h = hashlib.sha256()
    for path in sorted(hashes):
        h.update(f"{path}\0{hashes[path]}\n".encode())
    return h.hexdigest()


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def is_rule(rel: str, data: Any) -> bool:
    top = rel.split("/", 1)[0]
    return (isinstance(data, dict) and "id" in data and "version" in data and top not in NON_RULE_DIRS
            and rel != MANIFEST and rel.endswith((".yaml", ".yml")))


def read_rules(root: Path) -> dict[str, tuple[str, dict]]:
    """{rule id: (relative file, rule as written)} for every rule file in the tree."""
    rules: dict[str, tuple[str, dict]] = {}
    for p in tree_files(root):
        rel = p.relative_to(root).as_posix()
        if not rel.endswith((".yaml", ".yml")) or rel.split("/", 1)[0] in NON_RULE_DIRS or "/" not in rel:
            continue
        try:
            data = _load_yaml(p)
        except yaml.YAMLError:
            continue
        if is_rule(rel, data):
            rules[str(data["id"])] = (rel, data)
    return rules


def _date(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    return str(v)


def write_manifest(rules_dir: str | Path, *, name: str | None = None, version: str | None = None,
                   released: str | None = None, approvals: Iterable[dict] = ()) -> dict:
    """Write rules/ruleset.yaml: keep the release's name, version, description and approvals,
    add the given ones, and record the sha256 of every file and the rules it releases."""
    root = Path(rules_dir)
    path = root / MANIFEST
    old = _load_yaml(path) if path.exists() else {}
    old = old if isinstance(old, dict) else {}
    hashes = file_hashes(root)
    rules = read_rules(root)
    manifest: dict[str, Any] = {
        "name": name or old.get("name") or root.resolve().name,
        "version": str(version or old.get("version") or "0.1.0"),
        "released": _date(released or old.get("released") or dt.date.today().isoformat()),
    }
    for k in ("description", "publisher", "contact"):
        if old.get(k) is not None:
            manifest[k] = old[k]
    approvals_list = [dict(a) for a in old.get("approvals") or []]
    for a in approvals:
        if a not in approvals_list:
            approvals_list.append(dict(a))
    for a in approvals_list:
        if "date" in a:
            a["date"] = _date(a["date"])
    manifest["approvals"] = approvals_list
    manifest["rules"] = {rid: {"version": str(r["version"]), "status": r.get("status", "draft"), "file": rel}
                         for rid, (rel, r) in sorted(rules.items())}
    manifest["content_sha256"] = content_digest(hashes)
    manifest["files"] = hashes
    # A signature stays only while what it signed is unchanged (re-sign after any change).
    kept = [s for s in old.get("signatures") or [] if isinstance(s, dict)
            and signed_payload(old) == signed_payload(manifest)]
    if kept:
        manifest["signatures"] = kept
    header = ("# Ruleset release manifest, written by `pacecds release` (edit name, version, description and\n"
              "# approvals by hand or with its options; the hashes are checked when the service starts).\n")
    path.write_text(header + yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=110),
                    encoding="utf-8")
    return manifest


def check_manifest(rules_dir: str | Path, public_keys: Iterable[str | Path] | None = None) -> list[str]:
    """Problems that make this tree not the release its manifest describes ([] when it is).

    The service calls this at start and refuses to serve on problems unless it is a
    development run. With trusted release keys (`public_keys`, else the PEM files listed in
    PACECDS_RELEASE_PUBLIC_KEYS) the manifest must also carry a valid signature by one of them."""
    root = Path(rules_dir)
    path = root / MANIFEST
    if not path.exists():
        return [f"{path}: no release manifest (run `pacecds release {root}`)"]
    try:
        manifest = _load_yaml(path)
    except yaml.YAMLError as e:
        return [f"{path}: not valid YAML: {e}"]
    if not isinstance(manifest, dict):
        return [f"{path}: the manifest must be a mapping"]
    problems = [f"{path}: {p}" for p in _schema_problems(manifest)]
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        problems.append(f"{path}: lists no file hashes (run `pacecds release {root}`)")
        return problems
    if not manifest.get("approvals"):
        problems.append(f"{path}: the release has no approvals")
    actual = file_hashes(root)
    for rel in sorted(set(listed) | set(actual)):
        if rel not in actual:
            problems.append(f"{root / rel}: listed in the manifest but missing")
        elif rel not in listed:
            problems.append(f"{root / rel}: not in the manifest (added after the release)")
        elif str(listed[rel]).lower() != actual[rel]:
            problems.append(f"{root / rel}: content differs from the release (sha256 {actual[rel][:12]}…, "
                            f"manifest says {str(listed[rel])[:12]}…)")
    if manifest.get("content_sha256") and manifest["content_sha256"] != content_digest(
            {k: str(v).lower() for k, v in listed.items()}):
        problems.append(f"{path}: content_sha256 does not match the listed file hashes")
    if isinstance(manifest.get("rules"), dict):
        rules = read_rules(root)
        for rid in sorted(set(manifest["rules"]) | set(rules)):
            want, have = manifest["rules"].get(rid), rules.get(rid)
            if want is None:
                problems.append(f"{path}: rule {rid} is not listed in the manifest")
            elif have is None:
                problems.append(f"{path}: rule {rid} is listed but no file defines it")
            elif (str(want.get("version")), want.get("status")) != (str(have[1]["version"]),
                                                                   have[1].get("status", "draft")):
                problems.append(f"{path}: rule {rid} is {have[1]['version']} ({have[1].get('status', 'draft')}) "
                                f"but the manifest lists {want.get('version')} ({want.get('status')})")
    if public_keys is None:
        public_keys = [k for k in os.environ.get(PUBLIC_KEYS_ENV, "").split(",") if k.strip()]
    public_keys = list(public_keys)
    if public_keys:
        problems += [f"{path}: {p}" for p in _signature_problems(manifest, public_keys)]
    return problems


# ---- signed releases (as OPA signs its bundles): Ed25519 over the manifest minus its file list ----

PUBLIC_KEYS_ENV = "PACECDS_RELEASE_PUBLIC_KEYS"


def signed_payload(manifest: dict) -> bytes:
    """What a release signature covers: name, version, date, approvals, rules and the content hash
    (which covers every file), as canonical JSON. Approvals cannot be edited without re-signing."""
    keys = ("name", "version", "released", "approvals", "rules", "content_sha256")
    data = {k: _jsonable(manifest.get(k)) for k in keys}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _key_id(public_key) -> str:
    from cryptography.hazmat.primitives import serialization
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_release_key(private_path: str | Path) -> tuple[Path, Path]:
    """A new Ed25519 key pair: PRIVATE (0600) for the release signer, PRIVATE.pub for the service."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    priv, pub = Path(private_path), Path(str(private_path) + ".pub")
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def sign_manifest(rules_dir: str | Path, private_key_path: str | Path, *, signer: str | None = None) -> dict:
    """Add an Ed25519 signature over `signed_payload` to rules/ruleset.yaml."""
    import base64
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    path = Path(rules_dir) / MANIFEST
    manifest = _load_yaml(path)
    key = serialization.load_pem_private_key(Path(private_key_path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{private_key_path}: not an Ed25519 private key")
    sig = {"keyid": _key_id(key.public_key()), "algorithm": "ed25519",
           "value": base64.b64encode(key.sign(signed_payload(manifest))).decode()}
    if signer:
        sig["signer"] = signer
    sigs = [s for s in manifest.get("signatures") or [] if s.get("keyid") != sig["keyid"]]
    manifest["signatures"] = sigs + [sig]
    text = path.read_text(encoding="utf-8")
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    path.write_text(header + yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=110),
                    encoding="utf-8")
    return sig


def _signature_problems(manifest: dict, public_keys: list) -> list[str]:
    import base64
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    trusted = {}
    for k in public_keys:
        try:
            pub = serialization.load_pem_public_key(Path(str(k).strip()).read_bytes())
            trusted[_key_id(pub)] = pub
        except (OSError, ValueError) as e:
            return [f"cannot read trusted release key {k}: {e}"]
    sigs = [s for s in manifest.get("signatures") or [] if isinstance(s, dict)]
    if not sigs:
        return ["the release is not signed (trusted release keys are configured)"]
    payload = signed_payload(manifest)
    untrusted = []
    for s in sigs:
        pub = trusted.get(s.get("keyid"))
        if pub is None:
            untrusted.append(str(s.get("keyid")))
            continue
        try:
            pub.verify(base64.b64decode(s.get("value", "")), payload)
            return []
        except (InvalidSignature, ValueError):
            return [f"the signature by key {s.get('keyid')} does not match the manifest "
                    "(its name, version, approvals, rules or content changed after signing)"]
    return [f"no signature by a trusted release key (signed by {', '.join(untrusted)})"]


class ReleaseCheckError(Exception):
    """The rules tree is not the release its manifest describes."""

    def __init__(self, problems: list[str]):
        super().__init__("the rules do not match their release manifest:\n  " + "\n  ".join(problems))
        self.problems = problems


def enforce_manifest(rules_dir: str | Path, *, development: bool, log=None) -> list[str]:
    """For the service at start: raise ReleaseCheckError on any manifest problem unless this is
    a development run, where the problems are only logged (as warnings) and returned."""
    problems = check_manifest(rules_dir)
    if problems and not development:
        raise ReleaseCheckError(problems)
    for p in problems:
        if log is not None:
            log.warning("release manifest (ignored in development): %s", p)
    return problems


def _schema_problems(manifest: dict) -> list[str]:
    try:
        import jsonschema
        schema = json.loads(SCHEMA.read_text())
    except (OSError, ImportError):
        return []
    v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    data = json.loads(json.dumps(manifest, default=_date))
    return [f"{'.'.join(map(str, e.absolute_path)) or '(manifest)'}: {e.message}"
            for e in sorted(v.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))]


# ============================================================================================
# Diff
# ============================================================================================

_OPERATORS = {"lt", "lte", "gt", "gte", "eq", "ne", "in", "not_in", "between", "present", "within_days",
              "older_than_days", "value", "min", "max", "threshold", "param"}


@dataclass
class Change:
    path: str
    old: Any
    new: Any
    kind: str

    def as_dict(self) -> dict:
        return {"path": self.path, "old": self.old, "new": self.new, "kind": self.kind}


def _classify(path: str) -> str:
    head = path.split(".", 1)[0].split("[", 1)[0]
    last = re.split(r"[.\[]", path)[-1].rstrip("]")
    if head == "status":
        return "status"
    if head == "parameters" or (head == "when" and last in _OPERATORS) or (
            head == "card" and ".when" in path and last in _OPERATORS):
        return "threshold"
    if head == "when":
        return "condition"
    if head == "card":
        return "card"
    if head == "evidence":
        return "evidence"
    if head in ("approval", "authors", "developer", "funding", "released", "revised", "last_reviewed"):
        return "governance"
    if head == "hooks":
        return "hooks"
    return "metadata"


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=_date))


def field_changes(old: Any, new: Any, path: str = "") -> list[Change]:
    """Field-by-field differences; lists compared by position (conditions and evidence are ordered)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Change] = []
        for k in list(old) + [k for k in new if k not in old]:
            p = f"{path}.{k}" if path else str(k)
            if k not in new:
                out.append(Change(p, _jsonable(old[k]), None, _classify(p)))
            elif k not in old:
                out.append(Change(p, None, _jsonable(new[k]), _classify(p)))
            else:
                out += field_changes(old[k], new[k], p)
        return out
    if isinstance(old, list) and isinstance(new, list):
        return _list_changes(old, new, path)
    if isinstance(old, bool) != isinstance(new, bool) or old != new:  # 12 == 12.0, but True != 1
        return [Change(path or "(document)", _jsonable(old), _jsonable(new), _classify(path))]
    return []


def _list_changes(old: list, new: list, path: str) -> list[Change]:
    """Align the two lists first, so that one condition or citation inserted at the top reads as one
    addition, not as every later item changed. Added items carry their new index, removed their old."""
    a = [json.dumps(_jsonable(x), sort_keys=True) for x in old]
    b = [json.dumps(_jsonable(x), sort_keys=True) for x in new]
    out: list[Change] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for k in range(i2 - i1):  # edited in place: field by field
                out += field_changes(old[i1 + k], new[j1 + k], f"{path}[{j1 + k}]")
            continue
        for k in range(i1, i2):
            out.append(Change(f"{path}[{k}]", _jsonable(old[k]), None, _classify(f"{path}[{k}]")))
        for k in range(j1, j2):
            out.append(Change(f"{path}[{k}]", None, _jsonable(new[k]), _classify(f"{path}[{k}]")))
    return out


def _semver(v: Any) -> tuple:
    parts = re.findall(r"\d+", str(v))
    return tuple(int(p) for p in parts[:3]) if parts else (str(v),)


# ---- value sets -----------------------------------------------------------------------------

def valueset_members(path: Path) -> tuple[dict[str, str], list[str]]:
    """({"system|code": display}, notes) from a YAML code list or a FHIR ValueSet (compose
    concepts and expansion contains). Notes name parts that cannot be enumerated (filters,
    imported value sets), whose changes are then shown as definition changes."""
    notes: list[str] = []
    members: dict[str, str] = {}
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        compose = data.get("compose") or {}
        for inc in compose.get("include") or []:
            system = inc.get("system", "")
            for c in inc.get("concept") or []:
                members[f"{system}|{c.get('code')}"] = c.get("display", "")
            if inc.get("filter") or inc.get("valueSet"):
                notes.append("compose.include uses filters or other value sets")
        for exc in compose.get("exclude") or []:
            for c in exc.get("concept") or []:
                members.pop(f"{exc.get('system', '')}|{c.get('code')}", None)

        def walk(items):
            for c in items or []:
                if c.get("code") is not None and not c.get("abstract"):
                    members[f"{c.get('system', '')}|{c.get('code')}"] = c.get("display", "")
                walk(c.get("contains"))
        walk((data.get("expansion") or {}).get("contains"))
    else:
        data = _load_yaml(path) or {}
        vs = data.get("valueset", data) if isinstance(data, dict) else {}
        default = vs.get("system", "")
        for c in vs.get("codes") or []:
            if isinstance(c, dict):
                members[f"{c.get('system', default)}|{c.get('code')}"] = c.get("display", "")
            else:
                members[f"{default}|{c}"] = ""
    return members, notes


def _valuesets(root: Path) -> dict[str, Path]:
    d = root / "valuesets"
    if not d.is_dir():
        return {}
    return {p.stem: p for p in sorted(d.iterdir()) if p.suffix in (".json", ".yaml", ".yml")}


# ---- trees from git -------------------------------------------------------------------------

class DiffError(Exception):
    pass


def materialise(spec: str, workdir: Path) -> Path:
    """A directory for `spec`: a path, or git:REV (rules/ at REV) or git:REV:PATH."""
    if not spec.startswith("git:"):
        p = Path(spec)
        if not p.is_dir():
            raise DiffError(f"{spec}: not a directory")
        return p
    rest = spec[4:]
    rev, _, sub = rest.partition(":")
    sub = sub or "rules"
    if not rev:
        raise DiffError(f"{spec}: name a revision, e.g. git:v1.0 or git:HEAD~1")
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             check=True).stdout.strip()
        prefix = subprocess.run(["git", "rev-parse", "--show-prefix"], capture_output=True, text=True,
                                check=True).stdout.strip()
        # rules/ relative to where we stand, else relative to the repository's top
        for path in dict.fromkeys([prefix + sub, sub]):
            run = subprocess.run(["git", "-C", top, "archive", "--format=tar", rev, "--", path],
                                 capture_output=True)
            if run.returncode == 0:
                data, prefix = run.stdout, path[: -len(sub)]
                break
        else:
            raise subprocess.CalledProcessError(run.returncode, "git archive", stderr=run.stderr)
    except FileNotFoundError:
        raise DiffError("git is not installed")
    except subprocess.CalledProcessError as e:
        msg = (e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr or "").strip()
        raise DiffError(f"{spec}: {msg or 'git failed'}")
    dest = workdir / re.sub(r"[^A-Za-z0-9._-]", "_", rev)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    out = dest / prefix / sub
    if not out.is_dir():
        raise DiffError(f"{spec}: {sub} does not exist at {rev}")
    return out


# ---- the diff --------------------------------------------------------------------------------

def diff_trees(old_dir: str | Path, new_dir: str | Path) -> dict:
    old_root, new_root = Path(old_dir), Path(new_dir)
    report: dict[str, Any] = {"old": _tree_info(old_root), "new": _tree_info(new_root), "errors": [],
                              "warnings": []}

    old_rules, new_rules = read_rules(old_root), read_rules(new_root)
    added = [_rule_summary(new_rules[r]) for r in sorted(set(new_rules) - set(old_rules))]
    removed = [_rule_summary(old_rules[r]) for r in sorted(set(old_rules) - set(new_rules))]
    changed = []
    for rid in sorted(set(old_rules) & set(new_rules)):
        (of, o), (nf, n) = old_rules[rid], new_rules[rid]
        changes = [c for c in field_changes(o, n) if c.path != "version"]
        if not changes and of == nf:
            continue
        ov, nv = str(o.get("version")), str(n.get("version"))
        entry = {"id": rid, "old_version": ov, "new_version": nv, "old_file": of, "new_file": nf,
                 "changes": [c.as_dict() for c in changes]}
        if changes and ov == nv:
            report["errors"].append(f"rule {rid} changed without a version bump (still {nv}; "
                                    f"{len(changes)} field(s) differ, e.g. {changes[0].path})")
        elif changes and _semver(nv) < _semver(ov):
            report["errors"].append(f"rule {rid} changed and its version went backwards ({ov} -> {nv})")
        changed.append(entry)
    report["rules"] = {"added": added, "removed": removed, "changed": changed}

    ovs, nvs = _valuesets(old_root), _valuesets(new_root)
    vs_changed = []
    for name in sorted(set(ovs) & set(nvs)):
        if sha256_file(ovs[name]) == sha256_file(nvs[name]):
            continue
        om, onotes = valueset_members(ovs[name])
        nm, nnotes = valueset_members(nvs[name])
        plus = [{"code": k, "display": nm[k]} for k in sorted(set(nm) - set(om))]
        minus = [{"code": k, "display": om[k]} for k in sorted(set(om) - set(nm))]
        vs_changed.append({"name": name, "added_codes": plus, "removed_codes": minus,
                           "members_before": len(om), "members_after": len(nm),
                           "notes": sorted(set(onotes + nnotes))})
    report["valuesets"] = {
        "added": [{"name": n, "members": len(valueset_members(nvs[n])[0])} for n in sorted(set(nvs) - set(ovs))],
        "removed": [{"name": n, "members": len(valueset_members(ovs[n])[0])} for n in sorted(set(ovs) - set(nvs))],
        "changed": vs_changed,
    }

    # Everything else (facts, tables, the manifest): by file, field by field where YAML/JSON.
    rule_files = {f for f, _ in old_rules.values()} | {f for f, _ in new_rules.values()}
    oh, nh = file_hashes(old_root), file_hashes(new_root)
    others = {"added": [], "removed": [], "changed": []}
    for rel in sorted(set(oh) | set(nh)):
        if rel in rule_files or rel.startswith("valuesets/"):
            continue
        if rel not in nh:
            others["removed"].append(rel)
        elif rel not in oh:
            others["added"].append(rel)
        elif oh[rel] != nh[rel]:
            others["changed"].append({"file": rel, "changes": [c.as_dict() for c in
                                                               _file_changes(old_root / rel, new_root / rel)]})
    report["files"] = others
    om, nm = _manifest(old_root), _manifest(new_root)
    report["manifest"] = [c.as_dict() for c in field_changes(
        {k: v for k, v in om.items() if k not in ("files", "rules", "content_sha256")},
        {k: v for k, v in nm.items() if k not in ("files", "rules", "content_sha256")})]
    content_changed = added or removed or changed or vs_changed or report["valuesets"]["added"] \
        or report["valuesets"]["removed"] or any(others.values())
    if content_changed and om.get("version") is not None and om.get("version") == nm.get("version"):
        # A warning, not an error: between releases (git:HEAD vs the work tree) this is normal.
        report["warnings"].append(f"the ruleset changed but its release version did not ({nm.get('version')})")
    report["ok"] = not report["errors"]
    return report


def _file_changes(a: Path, b: Path) -> list[Change]:
    try:
        if a.suffix in (".yaml", ".yml"):
            return field_changes(_load_yaml(a), _load_yaml(b))
        if a.suffix == ".json":
            return field_changes(json.loads(a.read_text()), json.loads(b.read_text()))
    except (ValueError, yaml.YAMLError):
        pass
    return [Change("(file)", sha256_file(a), sha256_file(b), "content")]


def _manifest(root: Path) -> dict:
    p = root / MANIFEST
    try:
        data = _load_yaml(p) if p.exists() else {}
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _tree_info(root: Path) -> dict:
    m = _manifest(root)
    return {"path": str(root), "name": m.get("name"), "version": None if m.get("version") is None
            else str(m.get("version")), "released": _date(m.get("released"))}


def _rule_summary(item: tuple[str, dict]) -> dict:
    rel, r = item
    return {"id": str(r["id"]), "version": str(r.get("version")), "status": r.get("status"),
            "title": r.get("title"), "file": rel}


def _short(v: Any, n: int = 100) -> str:
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return s if len(s) <= n else s[: n - 1] + "…"


def format_diff(rep: dict) -> str:
    o, n = rep["old"], rep["new"]
    out = [f"Ruleset {o['name']} {o['version']} ({o['path']}) -> {n['name']} {n['version']} ({n['path']})"]
    for c in rep["manifest"]:
        out.append(f"  release {c['path']}: {_short(c['old'])} -> {_short(c['new'])}")
    r = rep["rules"]
    out.append("")
    out.append(f"Rules added ({len(r['added'])}):")
    out += [f"  + {a['id']} {a['version']} [{a['status']}] {a['file']}" for a in r["added"]]
    out.append(f"Rules removed ({len(r['removed'])}):")
    out += [f"  - {a['id']} {a['version']} [{a['status']}] {a['file']}" for a in r["removed"]]
    out.append(f"Rules changed ({len(r['changed'])}):")
    for c in r["changed"]:
        bump = "" if c["old_version"] != c["new_version"] else "   ** NO VERSION BUMP **"
        out.append(f"  ~ {c['id']} {c['old_version']} -> {c['new_version']}{bump}")
        if c["old_file"] != c["new_file"]:
            out.append(f"      moved {c['old_file']} -> {c['new_file']}")
        for ch in c["changes"]:
            out.append(f"      {ch['kind']:<10} {ch['path']}: {_short(ch['old'])} -> {_short(ch['new'])}")
    v = rep["valuesets"]
    if v["added"] or v["removed"] or v["changed"]:
        out.append("Value sets:")
        out += [f"  + {a['name']} ({a['members']} codes)" for a in v["added"]]
        out += [f"  - {a['name']} ({a['members']} codes)" for a in v["removed"]]
        for c in v["changed"]:
            out.append(f"  ~ {c['name']}: {c['members_before']} -> {c['members_after']} codes "
                       f"(+{len(c['added_codes'])}, -{len(c['removed_codes'])})")
            out += [f"      + {x['code']} {x['display']}" for x in c["added_codes"][:50]]
            out += [f"      - {x['code']} {x['display']}" for x in c["removed_codes"][:50]]
            for note in c["notes"]:
                out.append(f"      note: {note}; membership from it is not compared")
    f = rep["files"]
    if f["added"] or f["removed"] or f["changed"]:
        out.append("Other files (facts, tables):")
        out += [f"  + {x}" for x in f["added"]]
        out += [f"  - {x}" for x in f["removed"]]
        for c in f["changed"]:
            out.append(f"  ~ {c['file']}")
            for ch in c["changes"][:40]:
                out.append(f"      {ch['path']}: {_short(ch['old'])} -> {_short(ch['new'])}")
            if len(c["changes"]) > 40:
                out.append(f"      … {len(c['changes']) - 40} more")
    out.append("")
    for w in rep.get("warnings") or []:
        out.append(f"warning: {w}")
    if rep["errors"]:
        out.append("ERRORS:")
        out += [f"  {e}" for e in rep["errors"]]
    else:
        out.append("No governance errors.")
    return "\n".join(out)


# ============================================================================================
# Source attributes (ONC HTI-1, 45 CFR 170.315(b)(11)(iv)(A): evidence-based DSIs)
# ============================================================================================

# Input data elements HTI-1 asks an evidence-based DSI to disclose, and the fact names
# (as the rules name them) that count as using them.
_HTI1_INPUTS = {
    "race": ("race",),
    "ethnicity": ("ethnicity",),
    "language": ("language", "preferred_language"),
    "sexual_orientation": ("sexual_orientation",),
    "gender_identity": ("gender_identity",),
    "sex": ("sex", "gender", "pregnancy", "pregnant"),
    "date_of_birth": ("age", "birth_date", "date_of_birth"),
    "social_determinants_of_health": ("sdoh", "housing", "food_insecurity", "transportation", "employment"),
    "health_status_assessments": ("pain_score", "pain_interference", "phq9", "phq2", "gad7", "promis",
                                  "peg", "fatigue_score", "sleep_quality", "function_score", "odi", "bpi"),
}


def facts_read(node: Any) -> set[str]:
    """Fact names a condition tree reads (base name before any '.attribute')."""
    out: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("fact"), str):
            out.add(node["fact"].split(".", 1)[0])
        for v in node.values():
            out |= facts_read(v)
    elif isinstance(node, list):
        for v in node:
            out |= facts_read(v)
    return out


# Patient fields (fact kind `patient`) and the HTI-1 data elements they are.
_PATIENT_FIELDS = {"gender": "sex", "sex": "sex", "age": "date_of_birth", "birthDate": "date_of_birth",
                   "race": "race", "ethnicity": "ethnicity", "language": "language"}


def read_fact_definitions(rules_dir: str | Path) -> dict[str, dict]:
    """{fact name: definition} from rules/facts/*.yaml (empty when there are none)."""
    out: dict[str, dict] = {}
    for p in sorted((Path(rules_dir) / "facts").glob("*.y*ml")):
        try:
            data = _load_yaml(p)
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and isinstance(data.get("facts"), dict):
            out.update({str(k): v for k, v in data["facts"].items() if isinstance(v, dict)})
    return out


_FACTS_CACHE: dict[tuple, dict] = {}


def _facts_near(rule: Any) -> dict[str, dict]:
    """Fact definitions of the rules tree an engine Rule was loaded from (found from its file)."""
    f = getattr(rule, "file", None)
    if not f:
        return {}
    for d in Path(f).resolve().parents:
        if (d / MANIFEST).exists():
            key = (str(d), max((p.stat().st_mtime for p in (d / "facts").glob("*.y*ml")), default=0))
            if key not in _FACTS_CACHE:
                _FACTS_CACHE[key] = read_fact_definitions(d)
            return _FACTS_CACHE[key]
    return {}


def _is_assessment(definition: dict) -> bool:
    """A patient-reported or clinician-scored instrument (pain ratings, PHQ-9, GAD-7, ...)."""
    if definition.get("unit") == "{score}":
        return True
    text = " ".join([str(definition.get("title", ""))] + [str(c.get("display", "")) for c in
                                                           definition.get("codes") or [] if isinstance(c, dict)])
    return bool(re.search(r"\[score\]|\bscore\b|questionnaire|\breported\b", text, re.I))


def data_elements_used(reads: set[str], facts: dict[str, dict]) -> dict[str, bool]:
    """Which HTI-1 data elements the facts a rule reads are built on (through derived facts too)."""
    used = {k: False for k in _HTI1_INPUTS}
    stack, seen = list(reads), set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        d = facts.get(name)
        if d is None:  # no definition at hand: judge by the fact's name
            for k, names in _HTI1_INPUTS.items():
                if any(name == n or name.startswith(n + "_") for n in names):
                    used[k] = True
            continue
        if d.get("kind") == "patient" and d.get("field") in _PATIENT_FIELDS:
            used[_PATIENT_FIELDS[d["field"]]] = True
        if _is_assessment(d):
            used["health_status_assessments"] = True
        # derived facts (e.g. series_pair) name the facts they are computed from
        stack += [v for k, v in d.items() if isinstance(v, str) and v in facts and k not in ("title", "unit")]
    return used


def rule_source_attributes(rule: Any, facts: dict[str, dict] | None = None) -> dict:
    """Source attributes of one rule, from its YAML fields (a loaded Rule or the raw dict).
    `facts` (fact definitions) sharpen which data elements it uses; for an engine Rule they are
    found from the rules tree it was loaded from."""
    src = rule if isinstance(rule, dict) else getattr(rule, "source", None) or {}
    if facts is None:
        facts = _facts_near(rule)
    authors = src.get("authors") or []
    developer = src.get("developer")
    if not developer and authors:
        developer = ", ".join(a.get("name", str(a)) if isinstance(a, dict) else str(a) for a in authors)
    approval = src.get("approval") or {}
    reads = facts_read(src.get("when")) | facts_read((src.get("card") or {}).get("variants"))
    inputs = data_elements_used(reads, facts)
    evidence = []
    for e in src.get("evidence") or []:
        evidence.append(e if isinstance(e, dict) else {"citation": str(e)})
    not_stated = "not stated"
    return {
        "id": src.get("id"),
        "version": None if src.get("version") is None else str(src.get("version")),
        "status": src.get("status"),
        "title": src.get("title"),
        "description": src.get("description"),
        "hooks": src.get("hooks") or [],
        "bibliography": evidence,
        "developer": developer or not_stated,
        "authors": authors,
        "funding": src.get("funding") or not_stated,
        "released": _date(src.get("released") or approval.get("date")),
        "revised": _date(src.get("revised")),
        "last_reviewed": _date(src.get("last_reviewed")),
        "approval": _jsonable(approval) if approval else None,
        "intended_use": src.get("intended_use") or not_stated,
        "population": src.get("population") or not_stated,
        "exclusions": src.get("exclusions") or [],
        "inputs": sorted(reads),
        "uses": inputs,
    }


def ruleset_source_attributes(rules_dir: str | Path) -> list[dict]:
    facts = read_fact_definitions(rules_dir)
    return [rule_source_attributes(r, facts) for _, (_, r) in sorted(read_rules(Path(rules_dir)).items())]


_USE_LABELS = {
    "race": "Race", "ethnicity": "Ethnicity", "language": "Language", "sexual_orientation": "Sexual orientation",
    "gender_identity": "Gender identity", "sex": "Sex", "date_of_birth": "Date of birth (age)",
    "social_determinants_of_health": "Social determinants of health",
    "health_status_assessments": "Health status assessments",
}


def format_source_attributes_markdown(items: list[dict], *, title: str = "Decision support source attributes") -> str:
    out = [f"# {title}", "",
           "Source attributes for each rule (ONC HTI-1 evidence-based decision support interventions, "
           "45 CFR 170.315(b)(11)(iv)(A)).", ""]
    for a in items:
        out.append(f"## {a['title'] or a['id']}")
        out.append("")
        out.append(f"- **Rule**: `{a['id']}` version {a['version']} ({a['status']}); hooks: "
                   f"{', '.join(a['hooks']) or 'none'}")
        out.append(f"- **Developer**: {a['developer']}")
        out.append(f"- **Funding source**: {a['funding']}")
        out.append(f"- **Release date**: {a['released'] or 'not stated'}; **revised**: {a['revised'] or 'never'}"
                   + (f"; **last reviewed**: {a['last_reviewed']}" if a['last_reviewed'] else ""))
        if a["approval"]:
            ap = a["approval"]
            out.append(f"- **Approved by**: {ap.get('by', ap)}" + (f" on {ap['date']}" if ap.get("date") else ""))
        out.append(f"- **Intended use**: {_oneline(a['intended_use'])}")
        out.append(f"- **Intended population**: {_oneline(a['population'])}")
        out.append("- **Exclusions / cautioned use**:" + ("" if a["exclusions"] else " none stated"))
        out += [f"  - {_oneline(x)}" for x in a["exclusions"]]
        out.append("- **Bibliography**:" + ("" if a["bibliography"] else " none"))
        for e in a["bibliography"]:
            line = f"  - {_oneline(e.get('citation', ''))}"
            if e.get("url"):
                line += f" <{e['url']}>"
            if e.get("supports"):
                line += f" — supports: {_oneline(e['supports'])}"
            out.append(line)
        used = [label for k, label in _USE_LABELS.items() if a["uses"].get(k)]
        out.append(f"- **Patient data used**: {', '.join(a['inputs']) or 'none'}")
        out.append(f"- **Uses demographic / assessment data elements**: {', '.join(used) or 'none of those listed'}")
        out.append("")
    return "\n".join(out)


def _oneline(v: Any) -> str:
    return " ".join(str(v).split())


# ============================================================================================
# CLI: pacecds release | diff | rules
# ============================================================================================

def register_governance_commands(subparsers) -> None:
    r = subparsers.add_parser("release", help="write or check the release manifest (rules/ruleset.yaml)",
                              description="Write the release manifest with the sha256 of every rule file, "
                                          "or with --check verify the tree still matches it.")
    r.add_argument("rules_dir", nargs="?", default="rules", metavar="RULES_DIR")
    r.add_argument("--check", action="store_true", help="only check; exit 1 if the files differ from the manifest")
    r.add_argument("--version", dest="release_version", help="release version to record")
    r.add_argument("--name", help="ruleset name to record")
    r.add_argument("--released", help="release date (YYYY-MM-DD; default today or the one recorded)")
    r.add_argument("--approved-by", action="append", default=[], metavar="NAME",
                   help="add an approval by NAME dated today (repeatable)")
    r.add_argument("--role", help="role of the approver(s), e.g. 'clinical governance chair'")
    r.add_argument("--sign", metavar="PRIVATE_KEY", help="sign the release with this Ed25519 key (PEM)")
    r.add_argument("--signer", help="who signs (recorded with the signature)")
    r.add_argument("--public-key", action="append", default=None, metavar="PEM",
                   help=f"with --check: require a signature by this key (default: ${PUBLIC_KEYS_ENV})")
    r.add_argument("--keygen", metavar="PRIVATE_KEY",
                   help="create an Ed25519 key pair (PRIVATE_KEY and PRIVATE_KEY.pub) and exit")
    r.set_defaults(func=cmd_release)

    d = subparsers.add_parser("diff", help="what changed between two rule releases",
                              description="Compare two rules trees (directories, or git:REV for rules/ at a "
                                          "revision): rules added/removed/changed field by field, value-set "
                                          "membership; exit 1 when a rule changed without a version bump.")
    d.add_argument("old", metavar="OLD")
    d.add_argument("new", metavar="NEW")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_diff)

    s = subparsers.add_parser("rules", help="list rules with their source attributes (HTI-1)")
    s.add_argument("--rules", dest="rules_dir", default="rules", metavar="DIR")
    s.add_argument("--format", choices=("json", "markdown"), default="markdown")
    s.add_argument("rule_id", nargs="?", help="only this rule")
    s.set_defaults(func=cmd_rules)


def cmd_release(args) -> int:
    if args.keygen:
        try:
            priv, pub = generate_release_key(args.keygen)
        except FileExistsError:
            print(f"pacecds release: {args.keygen} exists; not overwriting a key", file=sys.stderr)
            return 2
        print(f"wrote {priv} (keep it secret) and {pub} (give it to the service: {PUBLIC_KEYS_ENV})")
        return 0
    root = Path(args.rules_dir)
    if not root.is_dir():
        print(f"pacecds release: {root}: not a directory", file=sys.stderr)
        return 2
    if args.check:
        problems = check_manifest(root, public_keys=args.public_key)
        for p in problems:
            print(p)
        if not problems:
            m = _manifest(root)
            print(f"OK: {root} is release {m.get('name')} {m.get('version')} "
                  f"({len(m.get('files') or {})} files match the manifest)")
        return 1 if problems else 0
    approvals = [{"by": name, **({"role": args.role} if args.role else {}), "date": dt.date.today().isoformat()}
                 for name in args.approved_by]
    m = write_manifest(root, name=args.name, version=args.release_version, released=args.released,
                       approvals=approvals)
    print(f"wrote {root / MANIFEST}: {m['name']} {m['version']}, {len(m['files'])} files, "
          f"{len(m['rules'])} rules, content sha256 {m['content_sha256']}")
    if not m["approvals"]:
        print("warning: the release has no approvals yet (add with --approved-by NAME)", file=sys.stderr)
    if args.sign:
        try:
            sig = sign_manifest(root, args.sign, signer=args.signer)
        except (OSError, ValueError) as e:
            print(f"pacecds release: cannot sign: {e}", file=sys.stderr)
            return 2
        print(f"signed with key {sig['keyid']}")
    return 0


def cmd_diff(args) -> int:
    with tempfile.TemporaryDirectory(prefix="pacecds-diff-") as tmp:
        try:
            old = materialise(args.old, Path(tmp) / "old")
            new = materialise(args.new, Path(tmp) / "new")
        except DiffError as e:
            print(f"pacecds diff: {e}", file=sys.stderr)
            return 2
        rep = diff_trees(old, new)
        rep["old"]["path"], rep["new"]["path"] = args.old, args.new
    if args.json:
        print(json.dumps(rep, indent=2, ensure_ascii=False))
    else:
        print(format_diff(rep))
    return 0 if rep["ok"] else 1


def cmd_rules(args) -> int:
    root = Path(args.rules_dir)
    if not root.is_dir():
        print(f"pacecds rules: {root}: not a directory", file=sys.stderr)
        return 2
    items = ruleset_source_attributes(root)
    if args.rule_id:
        items = [i for i in items if i["id"] == args.rule_id]
        if not items:
            print(f"pacecds rules: no rule {args.rule_id} in {root}", file=sys.stderr)
            return 1
    if args.format == "json":
        print(json.dumps(items, indent=2, ensure_ascii=False))
    else:
        m = _manifest(root)
        print(format_source_attributes_markdown(
            items, title=f"{m.get('name') or 'Rules'} {m.get('version') or ''}: source attributes".strip()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.governance release|diff|rules ...` until the main CLI registers these."""
    parser = argparse.ArgumentParser(prog="pacecds")
    sub = parser.add_subparsers(dest="command", required=True)
    register_governance_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
