import json

from pacecds.cli import main
from tests.conftest import EXAMPLES

PATIENT = str(EXAMPLES / "patients" / "anemia-woman-low-gdl.json")


def test_evaluate_prints_a_cds_hooks_response(capsys):
    assert main(["evaluate", "--now", "2026-11-01", PATIENT]) == 0
    response = json.loads(capsys.readouterr().out)
    (card,) = response["cards"]
    assert card["extension"]["pacecds.rule"] == {"id": "anemia.low-hemoglobin", "version": "1.1.1"}


def test_evaluate_bad_input_exits_2_with_one_line(tmp_path, capsys):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    bad_fhir = tmp_path / "bad-fhir.json"
    bundle = json.loads((EXAMPLES / "patients" / "anemia-woman-low-gdl.json").read_text())
    bundle["entry"][1]["resource"]["valueQuantity"]["value"] = "ten"
    bad_fhir.write_text(json.dumps(bundle))
    for args, reason in (
        ([str(bad_json)], "malformed JSON"),
        ([str(bad_fhir)], "entry[1] (Observation/hb-anna-1): invalid field 'valueQuantity"),
        ([str(tmp_path / "missing.json")], "cannot read"),
        (["--now", "yesterday", PATIENT], "--now 'yesterday'"),
    ):
        assert main(["evaluate", *args]) == 2
        err = capsys.readouterr().err
        assert reason in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_explain_shows_values_thresholds_and_provenance(capsys):
    assert main(["explain", "--now", "2026-11-01", PATIENT]) == 0
    out = capsys.readouterr().out
    assert "anemia.low-hemoglobin 1.1.1: FIRED" in out
    assert "hemoglobin.value < 12 g/dL: true (saw 10.8) [Observation/hb-anna-1]" in out
    assert "thyroid.tsh-abnormal 1.1.1: not fired" in out


def test_explain_names_data_not_clearly_about_the_patient(tmp_path, capsys):
    """The critical Hb of this chart names its subject only by MRN: not used, and explain says why."""
    bundle = json.loads((EXAMPLES / "patients" / "anemia-woman-low-gdl.json").read_text())
    obs = bundle["entry"][1]["resource"]
    obs["subject"] = {"identifier": {"system": "urn:example:mrn", "value": "12345"}}
    path = tmp_path / "identifier-only.json"
    path.write_text(json.dumps(bundle))
    assert main(["explain", "--now", "2026-11-01", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("data note: Observation/hb-anna-1 at bundle.entry[1]: not used, its subject is given only by "
            "identifier") in out
    assert "anemia.low-hemoglobin 1.1.1: not fired" in out
