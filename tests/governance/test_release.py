from __future__ import annotations

import argparse

import yaml

from engine.governance import check_manifest, register_governance_commands, write_manifest


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

    from engine.governance import ReleaseCheckError, enforce_manifest
    write_manifest(tree, approvals=[{"by": "Dr Chair", "date": "2026-11-25"}])
    assert enforce_manifest(tree, development=False) == []
    (tree / "facts" / "labs.yaml").write_text("facts: {}\n")
    with pytest.raises(ReleaseCheckError) as e:
        enforce_manifest(tree, development=False)
    assert "facts/labs.yaml" in str(e.value)
    problems = enforce_manifest(tree, development=True, log=logging.getLogger("t"))
    assert problems and "facts/labs.yaml" in problems[0]
