"""`pacecds impact` end to end: a generated export through the command to its files."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pacecds.cli import main
from population.evaluate import CANDIDATE, SERVING, SINGLE
from tests.conftest import RULES
from tests.population.exports import NOW, build_export, candidate_rules

NOW_TEXT = NOW.isoformat()


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return build_export(tmp_path_factory.mktemp("cli"), patients=20, seed=3)


def read_rows(out):
    return [json.loads(line) for line in (out / "patients.ndjson").read_text().splitlines()]


def test_two_releases_end_to_end(export, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["impact", str(export), "--rules", str(candidate_rules(tmp_path)), "--baseline", str(RULES),
               "--now", NOW_TEXT, "--out", str(out), "--workers", "2"])
    assert rc == 0
    err = capsys.readouterr().err
    summary = err.strip().splitlines()[-1]
    # the one-line summary: patients, cards per release, errors per release, lines not used, rate
    assert summary.startswith("pacecds impact: 23 patients, cards: candidate ")
    assert "errors: candidate 2, serving 2" in summary and "4 input line(s) not used" in summary
    assert "patients/s" in summary and "per core, 2 cores" in summary
    assert "patient/s" in err  # the progress bar went to stderr

    rows = read_rows(out)
    assert [r["patient"] for r in rows] == sorted(r["patient"] for r in rows) and len(rows) == 23
    cards = pq.read_table(out / "cards.parquet").to_pylist()
    assert len(cards) == sum(len(res["cards"]) for r in rows for res in r["results"].values())
    assert set(cards[0]) == {"patient", "release", "rule_id", "rule_version", "indicator", "summary", "draft"}
    assert {c["release"] for c in cards} == {SERVING, CANDIDATE}
    assert {"patient": "pt-mme", "release": SERVING, "rule_id": "meds.medication-safety"}.items() <= next(
        c for c in cards if c["patient"] == "pt-mme" and c["rule_id"] == "meds.medication-safety").items()

    report = json.loads((out / "impact.json").read_text())
    assert report["patients"] == 23 and report["now"] == NOW_TEXT
    assert [r["label"] for r in report["releases"]] == [SERVING, CANDIDATE]
    assert all(r["errors"]["count"] == 2 for r in report["releases"])
    listed = {e["patient"] for e in report["releases"][0]["errors"]["listed"]}
    assert listed == {"pt-finn", "pt-unknown-type"}
    assert report["comparison"] is not None
    assert (out / "impact.html").read_text().lstrip().lower().startswith("<!doctype html")
    read = json.loads((out / "input.json").read_text())
    assert read["issue_count"] == 4 and read["patients"] == 23


def test_a_git_revision_as_baseline_gives_no_change(export, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["impact", str(export), "--rules", str(RULES), "--baseline", "git:HEAD", "--now", NOW_TEXT,
               "--out", str(out), "--workers", "1", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    rows = read_rows(out)
    # the bundled rules against themselves at HEAD: every patient gets the same cards from both
    assert all(r["results"][SERVING] == r["results"][CANDIDATE] for r in rows)


def test_one_release(export, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["impact", str(export), "--now", NOW_TEXT, "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert all(set(r["results"]) == {SINGLE} for r in read_rows(out))
    assert "errors: release 2" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["impact", "{missing}", "--now", NOW_TEXT], "not a directory"),
    (["impact", "{export}", "--now", "yesterday"], "--now 'yesterday' is not an ISO 8601"),
    (["impact", "{export}", "--now", NOW_TEXT, "--baseline", "{missing}"], "not a directory"),
    (["impact", "{export}", "--now", NOW_TEXT, "--workers", "0"], "--workers must be 1 or more"),
])
def test_bad_arguments_exit_2_with_one_line(export, tmp_path, capsys, argv, message):
    values = {"missing": str(tmp_path / "missing"), "export": str(export)}
    argv = [a.format(**values) for a in argv] + ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pacecds impact: ") and message in err and "\n" not in err
