"""The knowledge-base example patients: reproducible, valid, and mutually exclusive pacing advice."""

import datetime as dt
import json
from pathlib import Path

import pytest

from engine import load_ruleset
from engine.loader import RulesetLoadError
from engine.templates import Template, format_value
from tests.conftest import load_tool

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = ROOT / "tests" / "examples" / "patients"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)


def _tool():
    return load_tool("build_example_patients")


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
    z = "\u200b"  # patient text shown in a card is one inline run with links broken (issue 14, item 3)
    assert text == f"Drugs:\n\n- a\\*b 0.5 MG\n- \\[link]{z}(http:{z}/{z}/x)"
    assert format_value(None, "lines") == "not recorded"


def test_lines_format_is_refused_in_a_summary(tmp_path):
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    path = rules / "meds" / "opioid-benzodiazepine.yaml"
    path.write_text(path.read_text().replace(
        'summary: "Opioid and benzodiazepine taken together: risk of fatal respiratory depression; use particular caution (CDC 2022 rec. 11, FDA)."',
        'summary: "Opioids {opioid.names:lines}"'))
    with pytest.raises(RulesetLoadError, match="summary can reach"):
        load_ruleset(rules)


CASES = None


def _cases():
    import yaml

    return yaml.safe_load((ROOT / "tests" / "examples" / "cases.yaml").read_text())["cases"]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["input"].split("/")[-1] + ":" + c["name"][:40])
def test_cards_are_conformant_and_suggestions_are_valid_fhir(ruleset, case):
    from fhir.resources.R4B import get_fhir_model_class

    from engine.ruleset import parse_now

    doc = json.loads((ROOT / "tests" / "examples" / case["input"]).read_text())
    result = ruleset.evaluate(doc, now=parse_now(case["now"]), hook=case.get("hook"))
    for card in result.cards:
        assert 0 < len(card["summary"]) <= 139, card["summary"]
        assert "not recorded" not in card["summary"], f"summary shows missing data: {card['summary']}"
        assert card["indicator"] in ("info", "warning", "critical")
        assert card["source"]["label"] and card["source"]["url"].startswith("https://")
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                resource = action["resource"]
                get_fhir_model_class(resource["resourceType"]).model_validate(resource)
                assert resource["subject"]["reference"] == f"Patient/{result.patient_id}"


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["input"].split("/")[-1] + ":" + c["name"][:40])
def test_details_never_print_a_missing_value_as_a_number(ruleset, case):
    """'not recorded' may appear in a detail only as a whole value, never glued to a unit ('not recorded g/dL')."""
    import re

    from engine.ruleset import parse_now

    doc = json.loads((ROOT / "tests" / "examples" / case["input"]).read_text())
    for card in ruleset.evaluate(doc, now=parse_now(case["now"]), hook=case.get("hook")).cards:
        assert not re.search(r"not recorded ?(steps|g/dL|ng/mL|h\b|MME|/10|mIU)", card.get("detail", "")), card["detail"]


def test_goal_prefetch_asks_for_every_goal_status_the_facts_read(ruleset):
    """A Goal created from a card suggestion is 'proposed': the prefetch must bring it back, or goal-review
    would keep firing after the clinician accepted the suggestion. Pacing also reads completed goals (the level
    agreed, a step up to a newer goal); cancelled, entered-in-error and rejected goals are never asked for."""
    from fhir_adapter.facts import GOAL_OPEN
    from service.services import build_services

    pv = next(s for s in build_services(ruleset, 400) if s.hook == "patient-view")
    goals = next(p.template for p in pv.prefetch if p.resource_type == "Goal")
    statuses = set(goals.split("lifecycle-status=")[1].split("&")[0].split(","))
    assert statuses == GOAL_OPEN | {"completed"}
    assert not statuses & {"cancelled", "entered-in-error", "rejected"}


def test_medication_statement_prefetch_matches_what_the_facts_count(ruleset):
    from fhir_adapter.facts import MED_STATEMENT_ACTIVE
    from service.services import build_services

    pv = next(s for s in build_services(ruleset, 400) if s.hook == "patient-view")
    template = next(p.template for p in pv.prefetch if p.resource_type == "MedicationStatement")
    assert set(template.split("status=")[1].split("&")[0].split(",")) == MED_STATEMENT_ACTIVE
