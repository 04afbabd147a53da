"""`pip install .` (not editable) gives a working `pacecds` from any directory, bundled rules and schemas included.

The wheel is built (python -m build --wheel --no-isolation) from a copy of the source tree, so the checkout gets
no build/ or egg-info, and installed with --no-deps into a fresh venv by its own pip. Its dependencies come from this test
environment's site-packages through a path entry (.pth): the interpreter's other .pth files there, such as the
editable install's finder, are not run, so pacecds, engine, server... can only come from the wheel; the test
checks that too. Commands run from a temporary directory with no PYTHONPATH, so the checkout is not on sys.path.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
                                     ".hypothesis", "var", "results")


def _run(cmd, timeout, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    pytest.importorskip("build", reason="the test extra pins `build`")
    base = tmp_path_factory.mktemp("pkg")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    built = _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(base / "dist")],
                 timeout=300, cwd=src)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [wheel] = (base / "dist").glob("pacecds-*.whl")

    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)  # its own pip, so the `pacecds` script runs its own python
    python = env_dir / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        timeout=30).stdout.strip())
    install = _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-compile", str(wheel)], timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    # the dependencies: this environment's site-packages, after the venv's own (a plain path: its .pth files,
    # among them the editable install's, are not processed)
    (purelib / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACECDS_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    cwd = base / "elsewhere"
    cwd.mkdir()
    env["PACECDS_VAR_DIR"] = str(cwd / "var")
    return {"wheel": wheel, "bin": env_dir / "bin", "python": python, "purelib": purelib, "env": env, "cwd": cwd}


def _pacecds(installed, *args, timeout=120):
    return _run([str(installed["bin"] / "pacecds"), *args], timeout=timeout, cwd=installed["cwd"],
                env=installed["env"])


def test_wheel_ships_rules_schemas_and_migrations(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for rel in (ROOT / "rules", ROOT / "schemas"):
        for f in rel.rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts:
                assert f"pacecds/{f.relative_to(ROOT).as_posix()}" in names
    assert {"audit/migrations/script.py.mako", "audit/migrations/env.py", "server.py", "service/__init__.py",
            "audit/migrations/versions/0001_decision_log.py"} <= names


def test_installed_code_comes_from_the_wheel_not_the_checkout(installed):
    probe = _run([str(installed["python"]), "-c",
                  "import json, sys, pacecds, engine, server, service, audit, governance, fhir_adapter\n"
                  "from engine.bundled import RULES_DIR, SCHEMA_DIR\n"
                  "print(json.dumps({'files': [m.__file__ for m in (pacecds, engine, server, service, audit, "
                  "governance, fhir_adapter)], 'rules': str(RULES_DIR), 'schemas': str(SCHEMA_DIR), "
                  "'path': sys.path}))"], timeout=60, cwd=installed["cwd"], env=installed["env"])
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    purelib = str(installed["purelib"])
    assert all(f.startswith(purelib) for f in seen["files"]), seen["files"]
    assert seen["rules"] == f"{purelib}/pacecds/rules" and seen["schemas"] == f"{purelib}/pacecds/schemas"
    assert not any(p and Path(p).resolve() == ROOT for p in seen["path"])


def test_validate_and_evaluate_from_another_directory(installed):
    validated = _pacecds(installed, "validate")
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.startswith("ok: ")
    evaluated = _pacecds(installed, "evaluate", "--now", "2026-11-01",
                         str(ROOT / "tests/examples/patients/anemia-woman-low-gdl.json"))
    assert evaluated.returncode == 0, evaluated.stderr
    cards = json.loads(evaluated.stdout)["cards"]
    assert [c["extension"]["pacecds.rule"]["id"] for c in cards] == ["anemia.low-hemoglobin"]


def test_test_command_without_a_checkout_says_how_to_give_cases(installed):
    ran = _pacecds(installed, "test")
    assert ran.returncode == 2
    assert "no example cases file found" in ran.stderr and "--examples" in ran.stderr
    assert "Traceback" not in ran.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_the_README_demo_request(installed):
    port = _free_port()
    proc = subprocess.Popen([str(installed["bin"] / "pacecds"), "serve", "--port", str(port), "--workers", "1"],
                            cwd=installed["cwd"], env=installed["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        today = dt.datetime.now(dt.timezone.utc).date().isoformat()
        body = (ROOT / "tests/fixtures/cds-hooks/demo-patient-view-request.json").read_text().replace("__TODAY__",
                                                                                                        today)
        request = urllib.request.Request(base + "/cds-services/pacing-review", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            response = json.loads(r.read())
        assert [c["extension"]["pacecds.rule"]["id"] for c in response["cards"]] == ["anemia.low-hemoglobin"]
        assert "anaemia" in response["cards"][0]["summary"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
    assert "Traceback" not in out, out[-3000:]


def test_wheel_ships_the_console(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    assert {"console/__init__.py", "console/views.py", "console/templates/base.html",
            "console/templates/workbench.html", "console/static/console.css"} <= names


def test_installed_generate_export_and_impact_report(installed):
    """The population package ships its report template: an installed pacecds writes an export and a report."""
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    assert {"population/__init__.py", "population/generate.py", "population/report.py",
            "population/templates/impact.html"} <= names
    made = _pacecds(installed, "generate-export", "export", "--patients", "5")
    assert made.returncode == 0, made.stderr
    assert (installed["cwd"] / "export" / "Patient.ndjson").is_file()
    report = _run([str(installed["python"]), "-c",
                   "from pathlib import Path\n"
                   "from population.report import build_report, write_report\n"
                   "r = build_report([], [{'label': 'release', 'name': 'x', 'version': '1', 'rules': []}], "
                   "hook='patient-view', now='2026-11-20T12:00:00Z')\n"
                   "print(write_report(r, Path('report'))[1])"], timeout=60, cwd=installed["cwd"],
                  env=installed["env"])
    assert report.returncode == 0, report.stderr
    assert "<svg" in (installed["cwd"] / "report" / "impact.html").read_text()
