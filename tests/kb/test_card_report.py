"""docs/card-burden.md (cards per example patient, issue 11 alert burden) is what tools/build_card_report.py writes."""

from tests.conftest import ROOT, load_tool


def test_card_report_is_generated_from_the_rules_and_examples():
    tool = load_tool("build_card_report")
    assert (ROOT / "docs" / "card-burden.md").read_text() == tool.build(), "re-run python tools/build_card_report.py"


def test_no_example_patient_gets_more_than_one_pacing_state_card():
    tool = load_tool("build_card_report")
    state_cards = {"pacing.establish-baseline", "pacing.flare-scale-back", "pacing.flare-rebuild", "pacing.boom-bust",
                   "pacing.progress", "pacing.goal-review", "pacing.step-up-response"}
    for name, row in tool.count_cards(ROOT / "rules").items():
        assert len(state_cards.intersection(row["rules"])) <= 1, (name, row["rules"])
