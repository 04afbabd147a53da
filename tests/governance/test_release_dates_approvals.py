"""Item 6g: a new version or new content is a new release (dated today unless --released); approvals and
signatures of one version are never carried into another."""
from __future__ import annotations

import datetime as dt

import yaml

from governance.manifest import check_manifest, generate_release_key, sign_manifest, write_manifest
from pacecds.cli import main

TODAY = dt.date.today().isoformat()


def manifest(tree):
    return yaml.safe_load((tree / "ruleset.yaml").read_text())


def test_unchanged_release_keeps_its_date_and_approvals(tree):
    write_manifest(tree, released="2026-01-02", approvals=[{"by": "Dr Chair", "date": "2026-01-02"}])
    write_manifest(tree)
    m = manifest(tree)
    assert m["released"] == "2026-01-02" and m["approvals"] == [{"by": "Dr Chair", "date": "2026-01-02"}]


def test_changed_content_is_dated_today(tree):
    write_manifest(tree, released="2026-01-02", approvals=[{"by": "Dr Chair", "date": "2026-01-02"}])
    (tree / "facts" / "labs.yaml").write_text((tree / "facts" / "labs.yaml").read_text() + "# a comment\n")
    write_manifest(tree)
    assert manifest(tree)["released"] == TODAY


def test_released_option_wins(tree):
    write_manifest(tree, released="2026-01-02")
    write_manifest(tree, version="2.0.0", released="2026-03-04")
    assert manifest(tree)["released"] == "2026-03-04"


def test_new_version_drops_old_approvals_and_signatures(tree, tmp_path, capsys):
    write_manifest(tree, version="1.0.0", released="2026-01-02", approvals=[{"by": "Dr Old", "date": "2026-01-02"}])
    key, _ = generate_release_key(tmp_path / "release.key")
    sign_manifest(tree, key)
    assert manifest(tree)["signatures"]
    assert main(["release", str(tree), "--version", "1.1.0", "--approved-by", "Dr New", "--role", "chair"]) == 0
    m = manifest(tree)
    assert m["version"] == "1.1.0" and m["released"] == TODAY
    assert m["approvals"] == [{"by": "Dr New", "role": "chair", "date": TODAY, "kind": "clinical"}]  # --approved-by: a clinical sign-off
    assert "signatures" not in m
    assert check_manifest(tree, public_keys=[]) == []


def test_new_version_without_approval_is_unapproved(tree, capsys):
    write_manifest(tree, version="1.0.0", approvals=[{"by": "Dr Old", "date": "2026-01-02"}])
    assert main(["release", str(tree), "--version", "2.0.0"]) == 0
    assert "no approvals yet" in capsys.readouterr().err
    assert manifest(tree)["approvals"] == []
    assert any("no approvals" in p for p in check_manifest(tree, public_keys=[]))


def test_same_version_keeps_approvals_and_adds_new_ones(tree):
    write_manifest(tree, version="1.0.0", approvals=[{"by": "Dr Old", "date": "2026-01-02"}])
    write_manifest(tree, version="1.0.0", approvals=[{"by": "Dr Second", "date": "2026-01-03"}])
    assert [a["by"] for a in manifest(tree)["approvals"]] == ["Dr Old", "Dr Second"]
