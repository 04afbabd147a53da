"""An older release still runs on this engine: rules written before Goal step-ups (pacecds-core 1.2.0) have no
goal_step_up_days parameter, and a population impact run compares exactly such a release with the candidate."""
import datetime as dt
import json
from pathlib import Path

from engine import load_ruleset

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "patients"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)


def _without_goal_step_up(rules: Path) -> None:
    facts = rules / "facts" / "activity.yaml"
    lines = facts.read_text().splitlines(keepends=True)
    kept = [line for line in lines if "goal_step_up_days:" not in line and "goal_step_up_min_days:" not in line]
    assert len(kept) == len(lines) - 2
    facts.write_text("".join(kept))


def test_a_release_without_goal_step_up_parameters_evaluates_and_ignores_goal_raises(rules_copy, ruleset):
    request = json.loads((EXAMPLES / "pacing-goal-step-up-pain.json").read_text())
    current = ruleset.evaluate(request, now=NOW)
    assert "pacing.step-up-response" in {f.rule_id for f in current.fired}

    _without_goal_step_up(rules_copy)
    older = load_ruleset(rules_copy).evaluate(request, now=NOW)
    assert "pacing.step-up-response" not in {f.rule_id for f in older.fired}  # no Goal step-ups before 1.3.0
    assert "step_up_source" not in older.facts["pacing"].values
