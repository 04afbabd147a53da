"""Malformed rule files (the corpus in broken_rules.py, 40+ variants): `pacecds validate` answers each with
exit 1 and `file:line:col: message` lines naming the broken file, never a traceback."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pacecds import cli
from tests.conftest import RULES
from tests.hardening.broken_rules import CORPUS

# a small valid tree: two rules, the facts they read, one value set (independent of the KB's growth)
FILES = ["ruleset.yaml", "facts/labs.yaml", "facts/iron.yaml", "facts/demographics.yaml", "valuesets/cds-pregnancy.json",
         "valuesets/hemoglobin-lab-test.json", "valuesets/tsh-lab-test.json", "valuesets/crp-lab-test.json",
         "anemia/low-hemoglobin.yaml", "thyroid/tsh-abnormal.yaml"]
LINE = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<msg>\S.*)$")


def _tree(target: Path) -> Path:
    for f in FILES:
        (target / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(RULES / f, target / f)
    return target


def _break(tree: Path, file: str, old, new) -> Path:
    path = tree / file
    if old is None:
        if isinstance(new, str) and new.startswith("@"):
            new = (tree / new[1:]).read_text()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(new if isinstance(new, bytes) else new.encode("utf-8"))
    else:
        text = path.read_text()
        assert old in text, f"corpus entry no longer applies to {file}: {old!r}"
        path.write_text(text.replace(old, new, 1))
    return path


def _validate(tree: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["validate", str(tree)])
    return code, out.getvalue(), err.getvalue()


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30
    assert len({name for name, *_ in CORPUS}) == len(CORPUS)


def test_the_unbroken_tree_validates(tmp_path):
    code, out, _ = _validate(_tree(tmp_path / "rules"))
    assert code == 0 and out.startswith("ok:")


@pytest.mark.parametrize("name, file, old, new, words", CORPUS, ids=[c[0] for c in CORPUS])
def test_broken_rule_file_gives_file_line_col(tmp_path, name, file, old, new, words):
    tree = _tree(tmp_path / "rules")
    broken = _break(tree, file, old, new)
    code, out, err = _validate(tree)
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    lines = out.strip().splitlines()
    assert lines, err
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), f"not file:line:col: {lines}"
    ours = [m for m in parsed if Path(m["file"]).resolve() == broken.resolve()]
    # a duplicate id is reported at the first file, naming the broken one in the message
    assert ours or any(str(broken) in m["msg"] for m in parsed), f"no error names {file}: {lines}"
    n_lines = max(1, broken.read_bytes().count(b"\n") + 1)
    for m in ours:
        assert 1 <= int(m["line"]) <= n_lines and int(m["col"]) >= 1, m.group(0)
    assert words.lower() in out.lower(), f"expected {words!r} in: {out}"


@pytest.mark.parametrize("name", ["nul-byte", "unknown-fact", "yaml-tag-python"])
def test_cli_process_never_prints_a_traceback(tmp_path, name):
    """The real console entry point, in its own process, for a few of the corpus."""
    entry = next(c for c in CORPUS if c[0] == name)
    tree = _tree(tmp_path / "rules")
    _break(tree, *entry[1:4])
    proc = subprocess.run([sys.executable, "-m", "pacecds.cli", "validate", str(tree)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stdout + proc.stderr
    assert LINE.match(proc.stdout.splitlines()[0])
