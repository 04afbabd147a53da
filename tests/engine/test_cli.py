import json
import re
import shutil
import textwrap

from pacecds.cli import main
from tests.conftest import EXAMPLES, ROOT

PATIENT = str(EXAMPLES / "patients" / "anemia-woman-low-gdl.json")


def test_evaluate_prints_a_cds_hooks_response(capsys):
    assert main(["evaluate", "--now", "2026-11-01", PATIENT]) == 0
    response = json.loads(capsys.readouterr().out)
    (card,) = response["cards"]
    assert card["extension"]["pacecds.rule"] == {"id": "anemia.low-hemoglobin", "version": "1.0.0"}


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
    assert "anemia.low-hemoglobin 1.0.0: FIRED" in out
    assert "hemoglobin.value < 12 g/dL: true (saw 10.8) [Observation/hb-anna-1]" in out
    assert "thyroid.tsh-abnormal 1.0.0: not fired" in out


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
    assert "anemia.low-hemoglobin 1.0.0: not fired" in out


def test_readme_walkthrough_rule_validates(tmp_path, capsys):
    """The 'write your first rule' files in the README must be a working example."""
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    # the walkthrough re-creates the knowledge base's own ferritin fact and iron-deficiency rule: start without them
    (rules / "facts" / "iron.yaml").unlink(missing_ok=True)
    (rules / "anemia" / "iron-deficiency.yaml").unlink(missing_ok=True)
    blocks = [textwrap.dedent(b) for b in re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)]
    facts = next(b for b in blocks if b.lstrip().startswith("# rules/facts/"))
    rule = next(b for b in blocks if "id: anemia.iron-deficiency" in b)
    labs = rules / "facts" / "labs.yaml"
    labs.write_text(labs.read_text() + "".join(line + "\n" for line in facts.splitlines()[2:]))
    (rules / "anemia" / "readme-example.yaml").write_text(rule)
    assert main(["validate", str(rules)]) == 0, capsys.readouterr().out
