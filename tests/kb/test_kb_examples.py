"""The knowledge-base example patients: reproducible, valid, and mutually exclusive pacing advice."""

import datetime as dt
import importlib.util
import json
from pathlib import Path

import pytest

from engine import load_ruleset
from engine.templates import Template, format_value
from engine.loader import RulesetLoadError

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = ROOT / "tests" / "examples" / "patients"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)


def _tool():
    spec = importlib.util.spec_from_file_location("build_example_patients", ROOT / "tools" / "build_example_patients.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset(ROOT / "rules")


def test_example_patients_are_what_the_generator_writes():
    tool = _tool()
    for chart in tool.patients():
        assert json.loads((PATIENTS / f"{chart.name}.json").read_text()) == chart.bundle(), chart.name
    for name, request in tool.order_requests().items():
        assert json.loads((PATIENTS / f"{name}.json").read_text()) == request, name


KB_PATIENTS = sorted(p.name for p in PATIENTS.glob("*.json")
                     if not p.name.startswith(("anemia-", "tsh-")))


@pytest.mark.parametrize("name", KB_PATIENTS)
def test_progress_and_flare_never_fire_together(ruleset, name):
    doc = json.loads((PATIENTS / name).read_text())
    fired = {c["extension"]["pacecds.rule"]["id"] for c in ruleset.evaluate(doc, now=NOW).cards}
    assert not {"pacing.progress", "pacing.flare-scale-back"} <= fired


@pytest.mark.parametrize("days_ago", range(0, 3))
def test_progress_and_flare_exclusive_on_a_shifting_window(ruleset, days_ago):
    """The same flare patient seen on later days: whichever fires, never both."""
    doc = json.loads((PATIENTS / "pacing-flare.json").read_text())
    fired = {c["extension"]["pacecds.rule"]["id"]
             for c in ruleset.evaluate(doc, now=NOW + dt.timedelta(days=days_ago)).cards}
    assert not {"pacing.progress", "pacing.flare-scale-back"} <= fired


def test_lines_format_renders_markdown_bullets_each_escaped():
    text = Template("Drugs:\n\n{x.names:lines}").render(lambda ref: ["a*b 0.5 MG", "[link](http://x)"],
                                                        escape=lambda s: s.replace("*", "\\*").replace("[", "\\["))
    assert text == "Drugs:\n\n- a\\*b 0.5 MG\n- \\[link](http://x)"
    assert format_value(None, "lines") == "not recorded"


def test_lines_format_is_refused_in_a_summary(tmp_path):
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    path = rules / "meds" / "opioid-benzodiazepine.yaml"
    path.write_text(path.read_text().replace(
        'summary: "Opioid and benzodiazepine taken together: risk of fatal respiratory depression (CDC 2022 rec. 11, FDA boxed warning)."',
        'summary: "Opioids {opioid.names:lines}"'))
    with pytest.raises(RulesetLoadError, match="summary can reach"):
        load_ruleset(rules)
