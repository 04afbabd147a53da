"""Release manifests: write and check `rules/ruleset.yaml`, sign and verify releases.

The manifest records the sha256 of every file of the rules tree and the ruleset sha256 over them
(engine.rulestree owns both), so `pacecds release --check`, the service at start, cards and audit
records all name a release by the same hash.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from engine.bundled import SCHEMA_DIR
from engine.rulestree import MANIFEST, content_digest, file_hashes, read_rules, read_yaml

SCHEMA = SCHEMA_DIR / "ruleset-manifest.schema.json"


def plain_date(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    return str(v)


def write_manifest(rules_dir: str | Path, *, name: str | None = None, version: str | None = None,
                   released: str | None = None, approvals: Iterable[dict] = ()) -> dict:
    """Write rules/ruleset.yaml: keep the release's name, version, description and approvals,
    add the given ones, and record the sha256 of every file and the rules it releases.

    A new version, or changed content, is a new release: it is dated today (unless `released` is given).
    Approvals and signatures belong to the version they approved: a new version starts without them."""
    root = Path(rules_dir)
    path = root / MANIFEST
    old = read_yaml(path) if path.exists() else {}
    old = old if isinstance(old, dict) else {}
    hashes = file_hashes(root)
    rules = read_rules(root)
    new_version = str(version or old.get("version") or "0.1.0")
    same_version = old.get("version") is not None and str(old["version"]) == new_version
    same_content = old.get("content_sha256") == content_digest(hashes)
    if released is None and same_version and same_content and old.get("released"):
        released = old["released"]
    manifest: dict[str, Any] = {
        "name": name or old.get("name") or root.resolve().name,
        "version": new_version,
        "released": plain_date(released or dt.date.today().isoformat()),
    }
    for k in ("description", "publisher", "contact"):
        if old.get(k) is not None:
            manifest[k] = old[k]
    approvals_list = [dict(a) for a in old.get("approvals") or []] if same_version else []
    for a in approvals:
        if a not in approvals_list:
            approvals_list.append(dict(a))
    for a in approvals_list:
        if "date" in a:
            a["date"] = plain_date(a["date"])
    manifest["approvals"] = approvals_list
    manifest["rules"] = {rid: {"version": str(r["version"]), "status": r.get("status", "draft"), "file": rel}
                         for rid, (rel, r) in sorted(rules.items())}
    manifest["content_sha256"] = content_digest(hashes)
    manifest["files"] = hashes
    # A signature stays only while what it signed is unchanged (re-sign after any change).
    kept = [s for s in old.get("signatures") or [] if isinstance(s, dict)
            and same_version and signed_payload(old) == signed_payload(manifest)]
    if kept:
        manifest["signatures"] = kept
    header = ("# Ruleset release manifest, written by `pacecds release` (edit name, version, description and\n"
              "# approvals by hand or with its options; the hashes are checked when the service starts).\n")
    path.write_text(header + yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=110),
                    encoding="utf-8")
    return manifest


CLINICAL = "clinical"  # approvals[].kind of a clinical sign-off; anything else (or no kind) is not one


def clinical_approvals(manifest: dict | None) -> list[dict]:
    """The approvals of a release manifest that are clinical sign-offs (kind: clinical)."""
    approvals = (manifest or {}).get("approvals") or []
    return [a for a in approvals if isinstance(a, dict) and a.get("kind") == CLINICAL]


def clinical_approval_status(manifest: dict | None) -> dict:
    """Whether a release carries a clinical sign-off, as /healthz, `pacecds serve` and the console say it."""
    manifest = manifest or {}
    signed = clinical_approvals(manifest)
    if signed:
        return {"clinical": True, "approvedBy": [{k: a[k] for k in ("by", "role", "date") if a.get(k)} for a in signed]}
    return {"clinical": False,
            "warning": f"release {manifest.get('name', '?')} {manifest.get('version', '?')} has no clinical approval: "
                       f"its rules have not been signed off by a clinician for use here (record one with "
                       f"`pacecds release RULES_DIR --approved-by NAME --role ROLE`)"}


def clinical_approval_problems(rules_dir: str | Path) -> list[str]:
    """[] when the tree's release manifest carries a clinical sign-off; else the problem (PACECDS_REQUIRE_CLINICAL_APPROVAL)."""
    path = Path(rules_dir) / MANIFEST
    try:
        manifest = read_yaml(path) if path.exists() else {}
    except yaml.YAMLError:
        manifest = {}
    status = clinical_approval_status(manifest if isinstance(manifest, dict) else {})
    return [] if status["clinical"] else [f"{path}: {status['warning']}"]


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
        manifest = read_yaml(path)
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
    elif manifest.get("content_sha256") != content_digest(actual):
        problems.append(f"{path}: the tree's ruleset sha256 is {content_digest(actual)}, the manifest's "
                        f"content_sha256 is {manifest.get('content_sha256')} (run `pacecds release {root}`)")
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
    data = {k: jsonable(manifest.get(k)) for k in keys}
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
    manifest = read_yaml(path)
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
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    trusted: dict[str, Ed25519PublicKey] = {}
    for k in public_keys:
        try:
            pub = serialization.load_pem_public_key(Path(str(k).strip()).read_bytes())
        except (OSError, ValueError) as e:
            return [f"cannot read trusted release key {k}: {e}"]
        if not isinstance(pub, Ed25519PublicKey):  # releases are signed with Ed25519 only
            return [f"trusted release key {k} is not an Ed25519 public key"]
        trusted[_key_id(pub)] = pub
    sigs = [s for s in manifest.get("signatures") or [] if isinstance(s, dict)]
    if not sigs:
        return ["the release is not signed (trusted release keys are configured)"]
    payload = signed_payload(manifest)
    untrusted: list[str] = []
    for s in sigs:
        found = trusted.get(str(s.get("keyid")))
        if found is None:
            untrusted.append(str(s.get("keyid")))
            continue
        try:
            found.verify(base64.b64decode(s.get("value", "")), payload)
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
    data = json.loads(json.dumps(manifest, default=plain_date))
    return [f"{'.'.join(map(str, e.absolute_path)) or '(manifest)'}: {e.message}"
            for e in sorted(v.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))]



def jsonable(v: Any) -> Any:
    """YAML data as JSON data (dates as ISO text)."""
    return json.loads(json.dumps(v, default=plain_date))
