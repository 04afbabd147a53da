"""The example patients of tests/examples/cases.yaml, one pytest case each (as `pacecds test` runs them)."""

import pytest

from engine.examples import load_cases, run_examples
from tests.conftest import EXAMPLES

CASES = load_cases(EXAMPLES / "cases.yaml")


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c["name"] for c in CASES])
def test_example_case(ruleset, index, tmp_path):
    single = tmp_path / "cases.yaml"
    import yaml

    case = dict(CASES[index], input=str(EXAMPLES / CASES[index]["input"]))
    single.write_text(yaml.safe_dump({"cases": [case]}))
    (outcome,) = run_examples(ruleset, single)
    assert outcome.ok, outcome.problems


def test_every_rule_has_a_firing_and_a_non_firing_example(ruleset):
    fires = {r for c in CASES for r in c.get("fires", [])}
    quiet = {r for c in CASES for r in c.get("does_not_fire", [])}
    for rule in ruleset.rules:
        if rule.status == "active":
            assert rule.id in fires, f"{rule.id} has no example where it fires"
            assert rule.id in quiet, f"{rule.id} has no example where it must not fire"


def test_pacecds_test_command_fails_on_a_wrong_expectation(tmp_path, capsys):
    import yaml

    from pacecds.cli import main

    wrong = [dict(CASES[0], input=str(EXAMPLES / CASES[0]["input"]), fires=[], does_not_fire=CASES[0]["fires"])]
    cases = tmp_path / "cases.yaml"
    cases.write_text(yaml.safe_dump({"cases": wrong}))
    assert main(["test", "--examples", str(cases)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "expected anemia.low-hemoglobin not to fire; it fired" in out
    assert main(["test"]) == 0
