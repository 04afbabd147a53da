"""Item 6f: `pacecds test` checks what CI checks about rules (release manifest, generated docs) and names the
command that fixes each."""

import shutil

import pytest

from pacecds.cli import main
from tests.conftest import ROOT, load_tool


@pytest.fixture
def repo(tmp_path):
    """The rules, their example cases and their generated docs, laid out as in the repository."""
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copytree(ROOT / "tests" / "examples", tmp_path / "tests" / "examples")
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / "docs" / "rules.md", tmp_path / "docs" / "rules.md")
    return tmp_path


def test_clean_tree_passes_every_check(repo, capsys):
    assert main(["test", str(repo / "rules")]) == 0
    out = capsys.readouterr().out
    assert "PASS release manifest matches the rules" in out
    assert "PASS generated rule reference is current" in out


def test_stale_manifest_fails_and_names_the_fix(repo, capsys):
    labs = repo / "rules" / "facts" / "labs.yaml"
    labs.write_text(labs.read_text() + "# edited\n")
    assert main(["test", str(repo / "rules")]) == 1
    out = capsys.readouterr().out
    assert "FAIL release manifest matches the rules" in out
    assert f"{labs}: content differs from the release" in out
    assert f"fix: run `pacecds release {repo / 'rules'}`" in out
    assert "PASS generated rule reference is current" in out
    assert main(["release", str(repo / "rules")]) == 0
    capsys.readouterr()
    assert main(["test", str(repo / "rules")]) == 0


def test_stale_docs_fail_and_name_the_fix(repo, capsys):
    rule = repo / "rules" / "thyroid" / "tsh-abnormal.yaml"
    rule.write_text(rule.read_text().replace("title: ", "title: Edited ", 1))
    assert main(["release", str(repo / "rules")]) == 0
    capsys.readouterr()
    assert main(["test", str(repo / "rules")]) == 1
    out = capsys.readouterr().out
    assert "PASS release manifest matches the rules" in out
    assert "FAIL generated rule reference is current" in out
    assert f"fix: run `python tools/build_rules_doc.py {repo / 'rules'}`" in out
    load_tool("build_rules_doc").main([str(repo / "rules")])
    capsys.readouterr()
    assert main(["test", str(repo / "rules")]) == 0


def test_bundled_rules_fix_is_the_plain_command(monkeypatch, capsys):
    import pacecds.cli as cli
    checks = dict((name, fix) for name, _, fix in cli._ci_checks(cli.DEFAULT_RULES))
    assert any(fix == "run `python tools/build_rules_doc.py`" for fix in checks.values())
    assert any(fix.startswith("run `pacecds release ") for fix in checks.values())


def test_unapproved_release_fix_asks_for_an_approver(repo, capsys):
    assert main(["release", str(repo / "rules"), "--version", "9.0.0"]) == 0
    capsys.readouterr()
    assert main(["test", str(repo / "rules")]) == 1
    out = capsys.readouterr().out
    assert "the release has no approvals" in out
    assert f"fix: run `pacecds release {repo / 'rules'} --approved-by NAME --role ROLE`" in out
