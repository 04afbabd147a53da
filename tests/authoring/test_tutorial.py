"""Item 6e: the README's "Write your first rule", followed literally in a copy of the repository's rules tree.

Every "Save as `PATH`:" / "Add to the end of `PATH`:" is followed by a code block that is written there, and
every line of the tutorial's shell block is run (exit 0 each)."""

import re
import shutil
import subprocess
import sys

import yaml

from engine import load_ruleset
from tests.conftest import ROOT

FILE_BLOCK = re.compile(r"^(?P<indent> *)(?P<verb>Save as|Add to the end of) `(?P<path>[^`]+)`:\n\n"
                        r"(?P=indent)```\w*\n(?P<body>.*?)^(?P=indent)```$", re.M | re.S)
SHELL_BLOCK = re.compile(r"^(?P<indent> *)```sh\n(?P<body>.*?)^(?P=indent)```$", re.M | re.S)


def tutorial() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("### Write your first rule")
    return text[start:text.index("\n## ", start)]


def _unindent(body: str, indent: str) -> str:
    return "".join(line[len(indent):] if line.startswith(indent) else line for line in body.splitlines(True))


def copy_repo(tmp_path):
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copytree(ROOT / "tests" / "examples", tmp_path / "tests" / "examples")
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / "docs" / "rules.md", tmp_path / "docs" / "rules.md")
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "build_rules_doc.py", tmp_path / "tools" / "build_rules_doc.py")


def test_tutorial_creates_new_files_only_and_ships_none_of_them():
    text = tutorial()
    blocks = list(FILE_BLOCK.finditer(text))
    assert [(b["verb"], b["path"]) for b in blocks] == [
        ("Save as", "rules/facts/vitamin-d.yaml"), ("Save as", "rules/labs/vitamin-d-low.yaml"),
        ("Save as", "tests/examples/patients/vitamin-d-low.json"), ("Add to the end of", "tests/examples/cases.yaml")]
    for block in blocks:
        if block["verb"] == "Save as":
            assert not (ROOT / block["path"]).exists(), f"{block['path']} is shipped; the tutorial must create it"
    assert not re.search(r"\bdelete (those|these|the)\b", text, re.I)  # never asks to delete shipped files


def test_following_the_tutorial_literally(tmp_path):
    copy_repo(tmp_path)
    text = tutorial()
    for block in FILE_BLOCK.finditer(text):
        target = tmp_path / block["path"]
        body = _unindent(block["body"], block["indent"])
        if block["verb"] == "Save as":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
        else:
            target.write_text(target.read_text().rstrip("\n") + "\n" + body)
    rule = yaml.safe_load((tmp_path / "rules" / "labs" / "vitamin-d-low.yaml").read_text())
    assert all(p.get("note") for p in rule["parameters"].values())  # every threshold says where it comes from
    (shell,) = SHELL_BLOCK.finditer(text)
    outputs = {}
    for line in _unindent(shell["body"], shell["indent"]).splitlines():
        argv = line.split()
        command = [sys.executable, "-m", "pacecds"] if argv[0] == "pacecds" else [sys.executable]
        result = subprocess.run(command + argv[1:], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        outputs[" ".join(argv[:2])] = result.stdout
    assert outputs["pacecds validate"].startswith("ok: pacecds-core")
    bundled = load_ruleset(ROOT / "rules").rules  # the tutorial adds one draft rule to them
    active = sum(r.status == "active" for r in bundled)
    retired = sum(r.status == "retired" for r in bundled)
    counts = f"{active} active, 1 draft" + (f", {retired} retired" if retired else "")
    assert f"{len(bundled) + 1} rules ({counts})" in outputs["pacecds validate"]
    test_out = outputs["pacecds test"]
    assert "PASS vitamin D 25 nmol/L (10 ng/mL) 18 days ago -> low vitamin D (tutorial)" in test_out
    assert "PASS data-quality trap, the same result two years later is stale" in test_out
    assert "PASS release manifest matches the rules" in test_out
    assert "PASS generated rule reference is current" in test_out
    assert "labs.vitamin-d-low 0.1.0: FIRED (draft: shadow mode)" in outputs["pacecds explain"]
    assert "labs.vitamin-d-low" in (tmp_path / "docs" / "rules.md").read_text()
