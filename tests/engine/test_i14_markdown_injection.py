"""Issue 14, item 3: patient text in a card is one inline run. Hostile medication names (newlines that would
start a thematic break, a heading, a list, a setext underline, a table or a code block; autolinks and bare URLs
such as http://2130706433/login; e-mail addresses; HTML) are rendered by two real renderers, CommonMark with
linkify (markdown-it-py + linkify-it-py) and GitHub Flavored Markdown with its autolink extension (cmarkgfm):
the HTML has no link, heading, hr, image, table, code or script, and has exactly the block structure a benign
name gives (the name stays inside its list item)."""
from __future__ import annotations

import copy
import datetime as dt
import re

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from linkify_it import LinkifyIt
from markdown_it import MarkdownIt

from engine.templates import Template, escape_markdown, plain_inline
from tests.conftest import load_example

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.timezone.utc)
RULE = "meds.medication-safety"  # its opioid + gabapentinoid section lists the drug names

HOSTILE = [
    "oxy\n\n***\n\nURGENT: stop all opioids now",
    "Oxycodone\n===",
    "Oxycodone\r\n---\r\nURGENT",
    "# URGENT: stop all opioids",
    "oxy\n- stop\n- all opioids",
    "oxy\n\n1. stop all opioids",
    "http://2130706433/login",
    "see https://evil.example/a?b=c now",
    "<http://evil.example>",
    "[click](https://evil.example)",
    "![x](https://evil.example/x.png)",
    "www.evil.example/login",
    "evil.com",
    "mail admin@evil.example",
    "oxy\n\n| a | b |\n|---|---|\n| c | d |",
    "oxy\n\n    indented code",
    "oxy\n```\ncode\n```",
    "<script>alert(1)</script>",
    "&#10;&#35; heading &amp; &lt;b&gt;",
    "oxy\u2028# heading\u2029> quote",
    "oxy\u202eevil\u200b",
    "javascript:alert(1)",
    "oxy\x00\x0b\x0c\x1b[31m",
]
FORBIDDEN = re.compile(r"<(a|h[1-6]|hr|img|table|pre|code|script|blockquote|ol)\b", re.I)


def _markdown_it() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"linkify": True}).enable(["linkify", "table", "strikethrough"])
    return md


def render_all(markdown: str) -> dict[str, str]:
    return {"commonmark+linkify": _markdown_it().render(markdown),
            "gfm": cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)}


def _structure(html: str) -> list[str]:
    return re.findall(r"</?[a-z0-9]+", html.lower())


def _card(ruleset, name: str) -> dict:
    bundle = copy.deepcopy(load_example("meds-opioid-gabapentinoid"))
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "MedicationRequest":  # the opioid (tramadol)
            concept = res["medicationCodeableConcept"]
            concept["text"] = name
            for coding in concept["coding"]:
                coding["display"] = name
    cards = [c for c in ruleset.evaluate(bundle, now=NOW).cards if c["extension"]["pacecds.rule"]["id"] == RULE]
    assert len(cards) == 1
    return cards[0]


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_item3_hostile_medication_name_stays_one_inline_run_in_the_card(ruleset, name):
    benign = render_all(_card(ruleset, "tramadol hydrochloride 50 MG Oral Tablet")["detail"])
    card = _card(ruleset, name)
    for renderer, html in render_all(card["detail"]).items():
        assert not FORBIDDEN.search(html), (renderer, html)
        assert _structure(html) == _structure(benign[renderer]), (renderer, html)
    assert "\n" not in card["summary"] and not LinkifyIt().test(card["summary"])


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_item3_hostile_text_anywhere_in_a_template(name):
    """Wherever a rule places patient text (start of a line, mid-sentence, a bullet, the summary)."""
    lookup = {"med.names": [name, "gabapentin"], "med.text": name}.get
    benign_lookup = {"med.names": ["x", "gabapentin"], "med.text": "x"}.get
    detail = Template("{med.text}\n\nTaking {med.text} now.\n\n{med.names:lines}\n\n> {med.text}\n\n"
                      "| drug |\n| --- |\n| {med.text} |\n")
    for renderer, html in render_all(detail.render(lookup, escape=escape_markdown)).items():
        benign = render_all(detail.render(benign_lookup, escape=escape_markdown))[renderer]
        assert not re.search(r"<(a|h[1-6]|hr|img|pre|code|script|ol)\b", html, re.I), (renderer, html)
        assert _structure(html) == _structure(benign), (renderer, html)
    summary = " ".join(Template("Taking {med.text} with {med.names}").render(lookup, escape=plain_inline).split())
    assert not LinkifyIt().test(summary), summary
    for renderer, html in render_all(summary).items():
        assert "<a " not in html, (renderer, html)


def test_item3_ordinary_names_read_the_same():
    for name in ("tramadol hydrochloride 50 MG Oral Tablet", "oxycodone 5 MG / acetaminophen 325 MG"):
        rendered = render_all(escape_markdown(name))["gfm"]
        assert re.sub(r"<[^>]+>|\u200b", "", rendered).strip() == name
    assert plain_inline("a\n\n  b\tc") == "a b c"
    assert plain_inline(plain_inline("x http://a.b/c y@z.org")) == plain_inline("x http://a.b/c y@z.org")
