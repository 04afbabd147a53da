"""What changed between two rule releases: rules field by field, value-set membership, other files."""
from __future__ import annotations

import difflib
import json
import re
import subprocess
import tarfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml

from engine.rulestree import (
    file_hashes,
    parse_valueset,
    read_manifest,
    read_rules,
    read_yaml,
    sha256_file,
    valueset_files,
)
from fhir_adapter.valuesets import ValueSetError

from .manifest import jsonable, plain_date

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


def field_changes(old: Any, new: Any, path: str = "") -> list[Change]:
    """Field-by-field differences; lists compared by position (conditions and evidence are ordered)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Change] = []
        for k in list(old) + [k for k in new if k not in old]:
            p = f"{path}.{k}" if path else str(k)
            if k not in new:
                out.append(Change(p, jsonable(old[k]), None, _classify(p)))
            elif k not in old:
                out.append(Change(p, None, jsonable(new[k]), _classify(p)))
            else:
                out += field_changes(old[k], new[k], p)
        return out
    if isinstance(old, list) and isinstance(new, list):
        return _list_changes(old, new, path)
    if isinstance(old, bool) != isinstance(new, bool) or old != new:  # 12 == 12.0, but True != 1
        return [Change(path or "(document)", jsonable(old), jsonable(new), _classify(path))]
    return []


def _list_changes(old: list, new: list, path: str) -> list[Change]:
    """Align the two lists first, so that one condition or citation inserted at the top reads as one
    addition, not as every later item changed. Added items carry their new index, removed their old."""
    a = [json.dumps(jsonable(x), sort_keys=True) for x in old]
    b = [json.dumps(jsonable(x), sort_keys=True) for x in new]
    out: list[Change] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for k in range(i2 - i1):  # edited in place: field by field
                out += field_changes(old[i1 + k], new[j1 + k], f"{path}[{j1 + k}]")
            continue
        for k in range(i1, i2):
            out.append(Change(f"{path}[{k}]", jsonable(old[k]), None, _classify(f"{path}[{k}]")))
        for k in range(j1, j2):
            out.append(Change(f"{path}[{k}]", None, jsonable(new[k]), _classify(f"{path}[{k}]")))
    return out


def _semver(v: Any) -> tuple:
    parts = re.findall(r"\d+", str(v))
    return tuple(int(p) for p in parts[:3]) if parts else (str(v),)


# ---- value sets -----------------------------------------------------------------------------

def valueset_members(path: Path) -> tuple[dict[str, str], list[str]]:
    """({"system|code": display}, notes) of a value set file, read by the same parser the engine uses
    (compose includes less excludes, and the expansion). A value set that cannot be enumerated
    (filters or imported value sets without an expansion, unreadable) gives a note instead of members."""
    try:
        vs = parse_valueset(path.stem, path)
    except (ValueSetError, OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return {}, [f"cannot list members: {exc}"]
    return {f"{system}|{code}": vs.displays.get((system, code)) or "" for system, code in sorted(vs.codes)}, []


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

    ovs, nvs = valueset_files(old_root), valueset_files(new_root)
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
    others: dict[str, list] = {"added": [], "removed": [], "changed": []}
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
    om, nm = read_manifest(old_root), read_manifest(new_root)
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
            return field_changes(read_yaml(a), read_yaml(b))
        if a.suffix == ".json":
            return field_changes(json.loads(a.read_text()), json.loads(b.read_text()))
    except (ValueError, yaml.YAMLError):
        pass
    return [Change("(file)", sha256_file(a), sha256_file(b), "content")]


def _tree_info(root: Path) -> dict:
    m = read_manifest(root)
    return {"path": str(root), "name": m.get("name"), "version": None if m.get("version") is None
            else str(m.get("version")), "released": plain_date(m.get("released"))}


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


