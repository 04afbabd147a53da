"""`{fact.attr:ago}`: a number of days in words, so a card never says "1 days ago"."""
import datetime as dt

import pytest

from engine.templates import MISSING, Template, TemplateError, format_value
from tests.conftest import load_example


@pytest.mark.parametrize("days, words", [(0, "today"), (0.4, "today"), (1, "1 day ago"), (1.2, "1 day ago"),
                                          (2, "2 days ago"), (70, "70 days ago"), (None, MISSING)])
def test_days_render_as_words(days, words):
    assert format_value(days, "ago") == words


def test_an_unknown_format_is_still_refused():
    with pytest.raises(TemplateError):
        Template("{hemoglobin.age_days:days}")


def test_a_hemoglobin_measured_yesterday_reads_1_day_ago(ruleset):
    bundle = load_example("anemia-woman-low-gdl")
    dates = [e["resource"].get("effectiveDateTime") for e in bundle["entry"]
             if e["resource"]["resourceType"] == "Observation"]
    latest = max(dt.datetime.fromisoformat(d.replace("Z", "+00:00")) for d in dates if d)
    result = ruleset.evaluate(bundle, now=latest + dt.timedelta(days=1, hours=1))
    card = next(c for c in result.cards if "Hemoglobin" in c["summary"])
    assert "measured 1 day ago" in card["detail"] and "1 days ago" not in card["detail"]
