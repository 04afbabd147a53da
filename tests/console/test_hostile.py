"""Patient-supplied text (names, conditions, prefetch keys) and card Markdown cannot put markup or script into a
console page: checked on the parsed HTML, not on substrings."""
import json
import re

import pytest

from console.markdown import render_markdown
from engine.templates import escape_markdown
from tests.console.conftest import FLARE, FLARE_NOW, csrf, patient
from tests.console.htmlcheck import dangers, parse, text

HOSTILE = [
    '<script>alert("x")</script>',
    '"><img src=x onerror=alert(1)>',
    "<svg onload=alert(1)>",
    "[click](javascript:alert(1))",
    "**<b onmouseover=alert(1)>bold</b>**",
    "</textarea><script>alert(2)</script>",
    "{{ 7*7 }} {% raw %}",
]


def hostile_bundle() -> dict:
    bundle = patient(FLARE)
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Patient":
            res["name"] = [{"text": " ".join(HOSTILE), "family": HOSTILE[1], "given": [HOSTILE[0]]}]
        if res["resourceType"] == "Condition":
            res["code"]["text"] = HOSTILE[2]
            for c in res["code"].get("coding", []):
                c["display"] = HOSTILE[0]
    return bundle


def post(client, **form):
    form.setdefault("csrf_token", csrf(client))
    return client.post("/console/workbench", data=form)


def test_hostile_patient_names_stay_text(client):
    bundle = hostile_bundle()
    r = post(client, pasted=json.dumps(bundle), now=FLARE_NOW)
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert dangers(html) == []
    shown = text(html)
    assert " ".join(HOSTILE) in shown  # shown literally, as text
    assert "Pain flare" in shown  # and the page still works
    assert "49" not in re.findall(r"\b49\b", shown)  # no template evaluation of patient text
    # the pasted document is echoed into the textarea escaped: it cannot close the textarea
    textareas = [a for t, a in parse(html).tags if t == "textarea"]
    assert len(textareas) == 1


def test_hostile_prefetch_keys_in_data_notes_stay_text(client):
    other = patient("anemia-woman-low-gdl.json")  # another patient's data: dropped, and the note names the key
    req = {"hook": "patient-view", "hookInstance": "c0ffee00-0000-4000-8000-000000000002",
           "context": {"userId": "Practitioner/1", "patientId": "pt-flare"},
           "prefetch": {"bundle": patient(FLARE), HOSTILE[1]: other}}
    html = post(client, pasted=json.dumps(req), now=FLARE_NOW).get_data(as_text=True)
    assert dangers(html) == []
    assert "another patient" in text(html)


@pytest.mark.parametrize("source", HOSTILE)
def test_markdown_never_emits_markup_from_input(source):
    html = str(render_markdown(source))
    assert dangers(html) == []
    tags = {t for t, _ in parse(html).tags}
    assert tags <= {"p", "strong", "em", "code", "ul", "ol", "li", "a"}
    for tag, attrs in parse(html).tags:
        if tag == "a":
            assert attrs["href"].startswith(("https://", "http://"))
            assert set(attrs) == {"href", "rel"}


def test_markdown_subset():
    html = str(render_markdown("Aim for **2750 steps/day**, *gently*.\n\n- one\n- two [NICE](https://www.nice.org.uk/a?b=1&c=2)\n\n`x<y`"))
    assert "<strong>2750 steps/day</strong>" in html and "<em>gently</em>" in html
    assert "<ul><li>one</li><li>two <a href=\"https://www.nice.org.uk/a?b=1&amp;c=2\"" in html
    assert "<code>x&lt;y</code>" in html


@pytest.mark.parametrize("source", HOSTILE)
def test_engine_escaped_patient_text_renders_as_written_and_never_as_markup(source):
    """Card details carry patient text backslash-escaped by the engine (engine.templates.escape_markdown): the
    console shows the characters as written, never the backslashes, and no escaped character becomes markup."""
    html = str(render_markdown(f"Patient text: {escape_markdown(source)}"))
    assert dangers(html) == []
    assert {t for t, _ in parse(html).tags} == {"p"}
    # (the engine also puts a zero-width space after "<", so that no renderer sees a tag)
    assert text(html).replace("\u200b", "") == f"Patient text: {source}"


def test_markdown_backslash_escapes():
    html = str(render_markdown("\\*not italic\\* \\*\\*not bold\\*\\* 2026\\-11\\-17\\: 7\\.5\\/10 \\<b\\> \\\\ "
                               "`a\\*b`\n\n\\- not a list\n\n\\[x](https://example.org)"))
    assert "*not italic* **not bold** 2026-11-17: 7.5/10 &lt;b&gt; \\ <code>a\\*b</code>" in html
    assert "<p>- not a list</p>" in html and "<ul>" not in html
    assert "[x](https://example.org)" in html and "<a " not in html
    assert "\\" not in html.replace("\\ <code>a\\*b", "")  # only the escaped backslash and the code span keep one
