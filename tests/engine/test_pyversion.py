"""Supported Pythons: 3.11 and 3.12 (durable-rules 2.0.28 does not import on 3.13); others get a clear exit."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine import pyversion

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("version", [(3, 11, 7, "final", 0), (3, 12, 1, "final", 0)])
def test_supported_pythons_pass(monkeypatch, version):
    monkeypatch.setattr(sys, "version_info", version)
    assert pyversion.unsupported_python() is None
    pyversion.require_supported_python()


@pytest.mark.parametrize("version", [(3, 13, 0, "final", 0), (3, 10, 13, "final", 0), (4, 0, 0, "final", 0)])
def test_unsupported_python_exits_with_a_clear_message(monkeypatch, version):
    monkeypatch.setattr(sys, "version_info", version)
    with pytest.raises(SystemExit) as exc:
        pyversion.require_supported_python()
    message = str(exc.value.code)
    assert message.startswith("pacecds needs Python 3.11 or 3.12 (durable-rules 2.0.28 does not import on 3.13")
    assert f"this is Python {version[0]}.{version[1]}" in message


def test_requires_python_agrees():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.13"
    assert pyversion.SUPPORTED == ((3, 11), (3, 12))


def test_the_command_on_python_3_13_says_why_not_a_traceback(tmp_path):
    found = sorted(Path.home().glob(".pyenv/versions/3.13*/bin/python3.13"))
    python = str(found[0]) if found else shutil.which("python3.13")
    if python is None:
        pytest.skip("no python3.13 on this machine")
    probe = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
                           capture_output=True, text=True, timeout=30)
    if probe.stdout.strip() != "True":
        pytest.skip("python3.13 does not run here")
    run = subprocess.run([python, "-c", "import sys; from pacecds.cli import main; sys.exit(main(['validate']))"],
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "pacecds needs Python 3.11 or 3.12" in run.stderr
    assert "Traceback" not in run.stderr
