from __future__ import annotations

import argparse
import json

import pytest

from audit import AuditStore
from audit.cli import register_audit_commands

from .conftest import AUDIT_KEY, raw_exec
from .test_store import decision


def run(capsys, *argv) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="pacecds")
    register_audit_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def log(tmp_path, monkeypatch):
    monkeypatch.setenv("PACECDS_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PACECDS_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("PACECDS_AUDIT_KEY", AUDIT_KEY.decode())  # the CLI pseudonymises with the same key
    s = AuditStore.from_config(key=AUDIT_KEY)
    recs = [decision(f"cli-{i}") for i in range(3)]
    for r in recs:
        s.record_evaluation(r)
    s.record_feedback("svc", {"card": recs[0]["cards"][0]["uuid"], "outcome": "overridden",
                              "overrideReason": {"reason": {"code": "x", "display": "Patient declined"},
                                                 "userComment": "busy week"}})
    yield s
    s.close()


def test_verify_ok_then_tampered(log, capsys):
    rc, out, _ = run(capsys, "audit", "verify")
    assert rc == 0 and out.startswith("OK: 4 records")
    head = log.head()[1]
    raw_exec(log, "UPDATE audit_record SET body = replace(body, 'Consider', 'Ignore') WHERE seq = 2")
    rc, out, _ = run(capsys, "audit", "verify")
    assert rc == 1 and "first bad record: record 2: changed" in out
    rc, out, _ = run(capsys, "audit", "verify", "--json")
    rep = json.loads(out)
    assert rc == 1 and rep["first_bad"]["seq"] == 2 and rep["first_bad"]["kind"] == "changed"
    # an auditor's noted head hash: still in the chain after an edit that left hashes alone
    rc, _, _ = run(capsys, "audit", "verify", "--expect-head", head)
    assert rc == 1


def test_expect_head_catches_a_rewritten_tail(log, capsys):
    head = log.head()[1]
    raw_exec(log, "DELETE FROM audit_record WHERE seq = 4")
    raw_exec(log, "UPDATE audit_chain_head SET seq = 3, hash = (SELECT hash FROM audit_record WHERE seq = 3)")
    rc, out, _ = run(capsys, "audit", "verify")
    assert rc == 0  # the chain alone cannot see a truncated tail with a rewound head...
    rc, out, _ = run(capsys, "audit", "verify", "--expect-head", head)
    assert rc == 1 and "no longer in the chain" in out  # ...an externally kept head can


def test_show_explains_the_decision(log, capsys):
    rc, out, _ = run(capsys, "audit", "show", "cli-0")
    assert rc == 0
    assert "pacing.boom-bust 1.0.0" in out
    assert "daily_steps_cv = 0.62" in out and "Observation/steps-1" in out
    assert "comorbidity.anaemia 2.1.0" in out          # evaluated, not fired
    assert "pacing.new-draft 0.1.0" in out             # shadow
    assert "[info] Consider pacing" in out
    assert "overridden, reason Patient declined" in out
    rc, out, _ = run(capsys, "audit", "show", "cli-0", "--json")
    assert json.loads(out)["hookInstance"] == "cli-0"
    rc, _, err = run(capsys, "audit", "show", "nope")
    assert rc == 1 and "no decision recorded" in err


def test_stats(log, capsys):
    rc, out, _ = run(capsys, "audit", "stats")
    assert rc == 0 and "3 evaluations and 1 feedback items" in out
    assert "override reason: Patient declined (1)" in out
    rc, out, _ = run(capsys, "audit", "stats", "--since", "2999-01-01", "--json")
    assert json.loads(out)["evaluations"] == 0
    with pytest.raises(SystemExit):
        run(capsys, "audit", "stats", "--since", "last tuesday")


def test_unopenable_store_is_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PACECDS_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    rc, _, err = run(capsys, "audit", "verify")
    assert rc == 2 and "cannot open the decision log" in err


def test_pacecds_evaluate_audit_then_show_and_verify(tmp_path, monkeypatch, capsys):
    """Through the real `pacecds` entry point: evaluate --audit, then audit show / verify."""
    engine_cli = pytest.importorskip("pacecds.cli")
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    patient = root / "tests" / "examples" / "patients" / "anemia-woman-low-gdl.json"
    if not patient.exists():
        pytest.skip("example patients are not in this tree")
    monkeypatch.setenv("PACECDS_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PACECDS_DATABASE_URL", f"sqlite:///{tmp_path}/cli-eval.db")
    rc = engine_cli.main(["evaluate", "--audit", "--rules", str(root / "rules"), "--now", "2026-11-01",
                          str(patient)])
    out, err = capsys.readouterr()
    assert rc == 0 and json.loads(out)["cards"]
    hook_instance = err.split("hookInstance ")[1].split(")")[0]
    assert engine_cli.main(["audit", "show", hook_instance]) == 0
    shown = capsys.readouterr().out
    assert "anemia.low-hemoglobin" in shown and "(saw 10.8)" in shown and "service pacecds-cli" in shown
    assert engine_cli.main(["audit", "verify"]) == 0
    # without --audit nothing is recorded
    engine_cli.main(["evaluate", "--rules", str(root / "rules"), "--now", "2026-11-01", str(patient)])
    capsys.readouterr()
    s = AuditStore.from_config()
    assert s.count() == 1
    s.close()


def test_export_verifies_offline_and_catches_edits(log, capsys, tmp_path):
    out = tmp_path / "log.jsonl"
    rc, _, err = run(capsys, "audit", "export", "-o", str(out))
    assert rc == 0 and "exported 4 records" in err
    head = log.head()[1]
    rc, text, _ = run(capsys, "audit", "verify", "--file", str(out), "--expect-head", head)
    assert rc == 0 and text.startswith("OK: 4 exported records")
    lines = out.read_text().splitlines()
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join([lines[0], lines[1].replace("Consider pacing", "Nothing"), *lines[2:]]) + "\n")
    rc, text, _ = run(capsys, "audit", "verify", "--file", str(tampered))
    assert rc == 1 and "first bad record: record 2: changed" in text
    dropped = tmp_path / "dropped.jsonl"
    dropped.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    rc, text, _ = run(capsys, "audit", "verify", "--file", str(dropped))
    assert rc == 1 and "record 3: deleted" in text
    # --since: the tail from a time on, still a continuous chain
    rc, _, _ = run(capsys, "audit", "export", "--since", "2999-01-01", "-o", str(tmp_path / "none.jsonl"))
    assert rc == 0 and (tmp_path / "none.jsonl").read_text() == ""


def test_show_by_card_and_list_by_patient_and_rule(log, capsys):
    other = decision("cli-other", patient="pat-2")
    other["rulesFired"] = []
    log.record_evaluation(other)
    card = log.get("cli-1")["cards"][0]["uuid"]
    rc, out, _ = run(capsys, "audit", "show", "--card", card)
    assert rc == 0 and "hookInstance cli-1" in out
    rc, _, err = run(capsys, "audit", "show", "--card", "no-such-card")
    assert rc == 1 and "no decision recorded for card no-such-card" in err
    rc, _, err = run(capsys, "audit", "show")
    assert rc == 2
    rc, out, _ = run(capsys, "audit", "list", "--patient", "pat-2", "--json")
    assert [d["hookInstance"] for d in json.loads(out)] == ["cli-other"]
    rc, out, _ = run(capsys, "audit", "list", "--rule", "pacing.boom-bust", "--json")
    assert [d["hookInstance"] for d in json.loads(out)] == ["cli-2", "cli-1", "cli-0"]   # newest first
    rc, out, _ = run(capsys, "audit", "list", "--patient", "pat-1", "--limit", "1")
    assert rc == 0 and "cli-2" in out and "pacing.boom-bust 1.0.0" in out and "cli-1" not in out
