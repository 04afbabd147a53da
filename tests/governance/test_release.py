from __future__ import annotations

import argparse

import yaml

from governance.cli import register_governance_commands
from governance.manifest import check_manifest, write_manifest


def run(capsys, *argv):
    parser = argparse.ArgumentParser(prog="pacecds")
    register_governance_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_release_writes_hashes_of_every_file(tree):
    m = write_manifest(tree, approvals=[{"by": "Dr Chair", "date": "2026-11-25"}])
    assert m["name"] == "pacecds-test" and m["version"] == "1.0.0"
    assert set(m["files"]) == {"anemia/low-hemoglobin.yaml", "pacing/boom-bust.yaml", "facts/labs.yaml",
                               "valuesets/opioids.json", "valuesets/benzos.json", "valuesets/sleep-apnoea.yaml"}
    assert m["rules"]["pacing.boom-bust"] == {"version": "2.0.0", "status": "draft",
                                              "file": "pacing/boom-bust.yaml"}
    on_disk = yaml.safe_load((tree / "ruleset.yaml").read_text())
    assert on_disk["files"] == m["files"] and on_disk["approvals"] == [{"by": "Dr Chair", "date": "2026-11-25"}]
    assert check_manifest(tree) == []


def test_check_names_changed_added_and_missing_files(tree):
    write_manifest(tree, approvals=[{"by": "Dr Chair", "date": "2026-11-25"}])
    (tree / "facts" / "labs.yaml").write_text("facts: {}\n")
    (tree / "facts" / "new.yaml").write_text("facts: {}\n")
    (tree / "valuesets" / "benzos.json").unlink()
    problems = "\n".join(check_manifest(tree))
    assert "facts/labs.yaml: content differs from the release" in problems
    assert "facts/new.yaml: not in the manifest" in problems
    assert "valuesets/benzos.json: listed in the manifest but missing" in problems


def test_check_catches_a_status_edit_and_a_missing_manifest(tree, tmp_path):
    write_manifest(tree, approvals=[{"by": "Dr Chair", "date": "2026-11-25"}])
    p = tree / "pacing" / "boom-bust.yaml"
    p.write_text(p.read_text().replace("status: draft", "status: active"))
    problems = check_manifest(tree)
    assert any("pacing/boom-bust.yaml: content differs" in x for x in problems)
    assert any("rule pacing.boom-bust is 2.0.0 (active) but the manifest lists 2.0.0 (draft)" in x for x in problems)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no release manifest" in check_manifest(empty)[0]


def test_unapproved_release_is_a_problem(tree):
    write_manifest(tree)
    assert any("no approvals" in p for p in check_manifest(tree))


def test_manifest_schema_is_enforced(tree):
    write_manifest(tree, approvals=[{"by": "Dr Chair", "date": "2026-11-25"}])
    text = (tree / "ruleset.yaml").read_text().replace("version: 1.0.0", "version: one", 1)
    (tree / "ruleset.yaml").write_text(text)
    assert any("version: 'one' does not match" in p for p in check_manifest(tree))


def test_release_cli_write_then_check(tree, capsys):
    rc, out, _ = run(capsys, "release", str(tree), "--version", "1.1.0", "--approved-by", "Dr Chair",
                     "--role", "clinical governance chair")
    assert rc == 0 and "pacecds-test 1.1.0" in out
    rc, out, _ = run(capsys, "release", "--check", str(tree))
    assert rc == 0 and out.startswith("OK")
    (tree / "anemia" / "low-hemoglobin.yaml").write_text("id: x\nversion: 9.9.9\n")
    rc, out, _ = run(capsys, "release", "--check", str(tree))
    assert rc == 1 and "anemia/low-hemoglobin.yaml: content differs" in out
    # a re-release keeps the approvals already given
    rc, _, _ = run(capsys, "release", str(tree))
    assert yaml.safe_load((tree / "ruleset.yaml").read_text())["approvals"][0]["by"] == "Dr Chair"


def test_enforce_refuses_unless_development(tree):
    import logging

    import pytest

    from governance.manifest import ReleaseCheckError, enforce_manifest
    write_manifest(tree, approvals=[{"by": "Dr Chair", "date": "2026-11-25"}])
    assert enforce_manifest(tree, development=False) == []
    (tree / "facts" / "labs.yaml").write_text("facts: {}\n")
    with pytest.raises(ReleaseCheckError) as e:
        enforce_manifest(tree, development=False)
    assert "facts/labs.yaml" in str(e.value)
    problems = enforce_manifest(tree, development=True, log=logging.getLogger("t"))
    assert problems and "facts/labs.yaml" in problems[0]


def test_signed_release(tree, tmp_path, capsys, monkeypatch):
    key = tmp_path / "release.key"
    rc, out, _ = run(capsys, "release", "--keygen", str(key))
    assert rc == 0 and key.exists() and (tmp_path / "release.key.pub").exists()
    assert key.stat().st_mode & 0o077 == 0
    pub = str(tmp_path / "release.key.pub")
    rc, out, _ = run(capsys, "release", str(tree), "--approved-by", "Dr Chair", "--sign", str(key),
                     "--signer", "Dr Chair")
    assert rc == 0 and "signed with key" in out
    assert check_manifest(tree, public_keys=[pub]) == []
    monkeypatch.setenv("PACECDS_RELEASE_PUBLIC_KEYS", pub)
    assert check_manifest(tree) == []            # the service's call: keys from the environment
    # approvals are signed: adding one by hand breaks the signature
    m = tree / "ruleset.yaml"
    text = m.read_text()
    m.write_text(text.replace("- by: Dr Chair", "- by: Someone Else\n  date: '2026-11-26'\n- by: Dr Chair"))
    assert any("does not match the manifest" in p for p in check_manifest(tree))
    m.write_text(text)
    # another key is not trusted
    other = tmp_path / "other.key"
    run(capsys, "release", "--keygen", str(other))
    assert any("no signature by a trusted release key" in p
               for p in check_manifest(tree, public_keys=[str(other) + ".pub"]))
    rc, out, _ = run(capsys, "release", "--check", str(tree), "--public-key", str(other) + ".pub")
    assert rc == 1
    # re-releasing unchanged content keeps the signature; a content change drops it
    write_manifest(tree)
    assert check_manifest(tree, public_keys=[pub]) == []
    (tree / "facts" / "labs.yaml").write_text("facts: {}\n")
    write_manifest(tree)
    assert any("not signed" in p for p in check_manifest(tree, public_keys=[pub]))


def test_unsigned_release_is_refused_when_keys_are_configured(tree, tmp_path, capsys):
    key = tmp_path / "k"
    run(capsys, "release", "--keygen", str(key))
    write_manifest(tree, approvals=[{"by": "Dr Chair", "date": "2026-11-25"}])
    assert check_manifest(tree) == []
    assert any("not signed" in p for p in check_manifest(tree, public_keys=[str(key) + ".pub"]))


def test_a_trusted_release_key_that_is_not_ed25519_is_named_as_such(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from governance.manifest import _signature_problems

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key = tmp_path / "ec.pub"
    key.write_bytes(pem)
    manifest = {"signatures": [{"keyid": "x", "algorithm": "ed25519", "value": ""}]}
    assert _signature_problems(manifest, [str(key)]) == [f"trusted release key {key} is not an Ed25519 public key"]
