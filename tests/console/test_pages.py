"""Every console page through the Flask test client, on the bundled rules and real example patients."""
import io
import json
import logging
import re
import shutil
import subprocess

import pytest

from engine import load_ruleset
from server import create_app
from service.config import ServiceConfig
from tests.conftest import EXAMPLES, RULES
from tests.console.conftest import FLARE, FLARE_NOW, csrf, expected_summary, patient, record_flare_decision
from tests.console.htmlcheck import dangers, parse, text

FLARE_RULE = "pacing.flare-scale-back"
FLARE_SUMMARY = expected_summary(FLARE, FLARE_RULE)  # "Pain flare, still rising: 7.5/10 (usually 4.0); ..."

PAGES = ["/console/", "/console/workbench", "/console/rules", "/console/rules/pacing.flare-scale-back",
         "/console/releases", "/console/audit", "/console/audit/verify", "/console/audit/stats"]


def example_key(client, filename: str) -> str:
    page = client.get("/console/workbench").get_data(as_text=True)
    return next(v for v in re.findall(r'option value="([^"]+)"', page) if filename in v)


def run_workbench(client, **form):
    form.setdefault("csrf_token", csrf(client))
    return client.post("/console/workbench", data=form, content_type="multipart/form-data")


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_safely(client, path):
    r = client.get(path)
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    html = r.get_data(as_text=True)
    assert r.mimetype == "text/html"
    assert dangers(html) == []
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Frame-Options"] == "DENY"
    # no Referer leaves for other sites, while the console's own form posts keep their real Origin (local mode
    # refuses `Origin: null`, which no-referrer would make the browser send)
    assert r.headers["Referrer-Policy"] == "same-origin"


def test_stylesheet_is_served_locally(client):
    r = client.get("/console/static/console.css")
    assert r.status_code == 200 and b".card" in r.data


def test_workbench_example_patient_cards_chart_and_explanation(client, ruleset):
    r = run_workbench(client, example=example_key(client, FLARE))
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert dangers(html) == []
    doc = parse(html)
    cards = [a for t, a in doc.tags if t == "article" and "card" in a.get("class", "")]
    assert len(cards) == 1 and cards[0]["data-indicator"] == "warning"
    assert "indicator-warning" in cards[0]["class"]
    page = text(html)
    assert FLARE_SUMMARY in page
    assert "Layla Haddad" in page
    # the detail's Markdown became markup (bold), its text stayed text; the engine's backslash escapes of
    # patient-derived text render as the characters, never as backslashes
    assert "<strong>7.5/10</strong>" in html and "<strong>2200 steps a day</strong>" in html
    assert "none recorded yet: agree lower-demand activities" in page
    assert "from 2026-11-17: peak 7.5/10 on day 3, not settled yet" in page
    assert "\\:" not in page and "\\-" not in page
    assert "Flare already assessed and a plan agreed" in page  # override reasons
    assert "Nielson et al. Activity pacing in chronic pain" in page  # source
    # the pacing chart: inline SVG bars (steps) and a pain line, and the same data as a table; its lines are the
    # pacing fact's: usual level, quota, and the flare state's target (the flare floor), usual pain
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="pacing-chart"' in html
    assert len(re.findall(r'<rect class="bar"', html)) == 14
    assert "<polyline" in html
    for line in ("usual level 5500", "quota 4400", "flare floor 2200", "usual pain 4"):
        assert f"{line}</text>" in html, line
    assert "Steps per day: usual level 5500; quota 4400; flare floor 2200" in page
    assert "Flare: 2026-11-17 to 2026-11-20 (current flare episode)" in page
    assert "<th scope=\"row\">2026-11-19</th><td>5335</td><td>7.5</td><td>flare</td>" in html
    assert "<th scope=\"row\">2026-11-16</th><td>5445</td><td>4</td><td></td>" in html
    # every rule of the hook, fired or not, with its conditions, values and thresholds
    hook_rules = [r for r in ruleset.rules if "patient-view" in r.hooks and r.status in ("active", "draft")]
    for rule in hook_rules:
        assert f">{rule.id}</a>" in html
    assert "pacing.state" in html and "saw <strong>flare_rising</strong>" in html
    assert "threshold 180.0 d" in html and "saw <strong>missing</strong>" in html
    assert "from Patient/pt-flare" in html
    # patient data stays in the form body: the form posts, and the page's address carries nothing
    assert '<form class="workbench" method="post"' in html


def test_workbench_upload_of_a_bundle(client):
    data = (EXAMPLES / "patients" / "anemia-woman-low-gdl.json").read_bytes()
    r = run_workbench(client, upload=(io.BytesIO(data), "patient.json"), now="2026-11-01")
    assert r.status_code == 200
    assert "Hemoglobin 10.8 g/dL" in text(r.get_data(as_text=True))
    assert "no daily activity, pain or sleep data" in text(r.get_data(as_text=True))


def test_workbench_pasted_cds_hooks_request_with_suggestions(client):
    bundle = patient(FLARE)
    req = {"hook": "patient-view", "hookInstance": "c0ffee00-0000-4000-8000-000000000001",
           "context": {"userId": "Practitioner/1", "patientId": "pt-flare"}, "prefetch": {"all": bundle}}
    r = run_workbench(client, pasted=json.dumps(req), now=FLARE_NOW)
    assert r.status_code == 200
    assert "Pain flare" in text(r.get_data(as_text=True))


def test_workbench_bad_input_is_a_message_not_a_crash(client):
    r = run_workbench(client, pasted="{not json")
    assert r.status_code == 400
    assert "The input is not JSON" in text(r.get_data(as_text=True))
    r = run_workbench(client, pasted='{"resourceType": "Patient"}')
    assert r.status_code == 400 and "cannot be evaluated" in text(r.get_data(as_text=True))
    r = run_workbench(client, example=example_key(client, FLARE), now="yesterday")
    assert r.status_code == 400 and "ISO 8601" in text(r.get_data(as_text=True))
    r = run_workbench(client)
    assert r.status_code == 400 and "Choose an example patient" in text(r.get_data(as_text=True))


def test_post_needs_the_csrf_token_of_this_browser(client):
    key = example_key(client, FLARE)
    assert client.post("/console/workbench", data={"example": key}).status_code == 400
    assert client.post("/console/workbench", data={"example": key, "csrf_token": "x" * 43}).status_code == 400
    token = csrf(client)
    r = client.post("/console/workbench", data={"example": key, "csrf_token": token},
                    headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert client.post("/console/workbench", data={"example": key, "csrf_token": token}).status_code == 200


def test_csrf_cookie_is_httponly_and_strict(client):
    r = client.get("/console/workbench")
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie


def test_draft_rule_cards_are_shown_separately_and_marked(rules_copy):
    path = rules_copy / "pacing" / "flare-scale-back.yaml"
    path.write_text(path.read_text().replace("status: active", "status: draft", 1))
    app = create_app(ServiceConfig(env="test", ruleset=load_ruleset(rules_copy), audit_store=None))
    client = app.test_client()
    r = run_workbench(client, example=example_key(client, FLARE))
    html = r.get_data(as_text=True)
    assert "No cards: no active rule fired." in text(html)
    shadow = html[html.index('id="shadow-cards"'):]
    assert "DRAFT · shadow mode · not sent to the EHR" in shadow
    assert FLARE_SUMMARY in shadow
    assert 'class="card indicator-warning shadow"' in shadow


def test_rules_catalogue_and_rule_page(client, ruleset):
    html = client.get("/console/rules").get_data(as_text=True)
    for rule in ruleset.rules:
        assert f'href="/console/rules/{rule.id}"' in html
    page = client.get("/console/rules/pacing.flare-scale-back").get_data(as_text=True)
    body = text(page)
    for expected in ("Source attributes (ONC HTI-1)", "pacecds clinical content team", "Nielson WR",
                     "Adults with an active chronic pain", "Pain data older than two days",
                     "pain up from 4 to 7-7.5 over 3 days"):
        assert expected in body, expected
    assert "- fact: pacing.state\n    eq: flare_rising" in text(page)  # the condition as written
    # the rule has no parameters of its own: its numbers are the pacing fact's, shown as that fact's
    assert "No parameters of its own." in body
    fact_table = page[page.index('id="fact-params-pacing"'):]
    fact_table = fact_table[:fact_table.index("</table>")]
    assert '<th scope="row">flare_rise</th><td>2</td>' in fact_table
    assert '<th scope="row">quota_fraction</th><td>0.8</td>' in fact_table
    assert "No standard numeric definition of a flare" in fact_table
    # a rule with parameters of its own still lists them
    own = client.get("/console/rules/pacing.intensity-above-ceiling").get_data(as_text=True)
    assert '<th scope="row">min_days_over</th>' in own and "No parameters of its own." not in text(own)
    # the example patients that fire the rule, each with the card it gets
    assert 'class="card indicator-warning"' in page and FLARE_SUMMARY in body
    assert client.get("/console/rules/no.such-rule").status_code == 404


def test_rule_page_example_opens_in_the_workbench(client):
    page = client.get("/console/rules/pacing.flare-scale-back").get_data(as_text=True)
    key = re.search(r'name="example" value="([^"]+)"', page).group(1)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = client.post("/console/workbench", data={"example": key, "csrf_token": token})
    assert "Pain flare" in text(r.get_data(as_text=True))


# two real releases of rules/ in this repository's history: 1.0.0 and the Pacing 2.0 merge (1.1.0)
RELEASE_1_0_0, PACING_2_0 = "4cfefd2", "e967ef0"


def _have_revisions(*revs: str) -> bool:
    root = RULES.parent
    return all(subprocess.run(["git", "-C", str(root), "cat-file", "-e", f"{rev}:rules/ruleset.yaml"],
                              capture_output=True).returncode == 0 for rev in revs)


def test_release_diff_between_two_real_git_revisions(client):
    if not _have_revisions(RELEASE_1_0_0, PACING_2_0):
        pytest.skip("this checkout has no history back to release 1.0.0 (a shallow clone)")
    r = client.get("/console/releases", query_string={"old": f"git:{RELEASE_1_0_0}", "new": f"git:{PACING_2_0}"})
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    body = text(html)
    assert dangers(html) == []
    assert "pacecds-core 1.0.0 → pacecds-core 1.1.0" in body and "no versioning errors" in body
    # the flare rule moved from its own pain_daily parameters to the pacing fact: a major version
    section = html[html.index('<h3 class="changed-rule">pacing.flare-scale-back'):]
    section = section[:section.index("</table>")]
    assert "pacing.flare-scale-back <small>1.0.0 → 2.0.0</small>" in section
    threshold = re.search(r'<tr class="kind-threshold">.*?</tr>', section, re.S).group(0)
    assert "<code>parameters</code>" in threshold and "flare_rise" in threshold
    assert 'class="kind-condition"' in section and "pacing.state" in section
    card = re.search(r'<tr class="kind-card"><td><span class="kind">card</span></td><td><code>card.summary</code>'
                     r'.*?</tr>', section, re.S).group(0)
    assert "Pain flare: 3-day mean {pain_daily.mean_3d:.1f}/10" in card and "{pacing.flare_floor:d}" in card
    for rule_id, old, new in [("pacing.progress", "1.0.0", "2.0.0"), ("pacing.establish-baseline", "1.0.0", "1.1.0")]:
        assert f"{rule_id} <small>{old} → {new}</small>" in html, rule_id
    added = html[html.index("<h3>Added</h3>"):]
    added = added[:added.index("</ul>")]
    assert "pacing.flare-rebuild 1.0.0 (active)" in added and "pacing.step-up-response 1.0.0 (active)" in added
    assert "<h3>facts/activity.yaml</h3>" in html  # the pacing fact and its parameters came with it


def test_release_diff_shows_status_and_valueset_changes(client, tmp_path):
    new = tmp_path / "new"
    shutil.copytree(RULES, new)
    other = new / "pacing" / "goal-review.yaml"
    src = other.read_text()
    version = re.search(r"^version: (\S+)$", src, re.M).group(1)
    major = int(version.split(".")[0]) + 1
    other.write_text(src.replace("status: active", "status: retired", 1)
                     .replace(f"version: {version}", f"version: {major}.0.0", 1))
    vs = new / "valuesets" / "z-drugs.json"
    doc = json.loads(vs.read_text())
    vs.write_text(json.dumps(doc).replace('"code": "', '"code": "X', 1))
    r = client.get("/console/releases", query_string={"old": str(RULES), "new": str(new)})
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    body = text(html)
    assert f"pacing.goal-review {version} → {major}.0.0" in body
    status = re.search(r'<tr class="kind-status">.*?</tr>', html, re.S).group(0)
    assert "active" in status and "retired" in status
    assert re.search(r"<h3>z-drugs <small>(\d+) → \1 codes</small></h3>", html)
    assert re.search(r'<tr class="new"><td>\+</td><td>[^<|]+\|X\d+</td>', html)
    assert '<tr class="old"><td>−</td>' in html
    assert dangers(html) == []


def test_release_diff_git_revisions_and_refused_options(client, tmp_path):
    r = client.get("/console/releases", query_string={"old": "git:HEAD", "new": str(RULES)})
    assert r.status_code == 200 and 'id="diff"' in r.get_data(as_text=True)
    target = tmp_path / "written"
    r = client.get("/console/releases", query_string={"old": f"git:--output={target}", "new": str(RULES)})
    assert "not a git revision name" in text(r.get_data(as_text=True))
    assert not target.exists()
    r = client.get("/console/releases", query_string={"old": str(tmp_path / "nope"), "new": str(RULES)})
    assert "not a directory" in text(r.get_data(as_text=True))


def test_audit_list_decision_verify_and_stats(client, audit, caplog, ruleset):
    rec = record_flare_decision(client)
    card = rec["response"]["cards"][0]
    assert client.post("/cds-services/pacing-review/feedback", json={"feedback": [{
        "card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-20T12:05:00Z",
        "overrideReason": {"reason": card["overrideReasons"][0], "userComment": "seen in clinic"}}]}).status_code == 200
    html = client.get("/console/audit").get_data(as_text=True)
    assert f"{FLARE_RULE} {ruleset.rule(FLARE_RULE).version}" in html
    link = re.search(r'href="(/console/audit/decision/[^"]+)"', html).group(1)
    assert rec["patient_id"] not in link  # the address names the hookInstance, never the patient
    with caplog.at_level(logging.INFO, logger="pacecds.console"):
        page = client.get(link)
    assert page.status_code == 200
    body = text(page.get_data(as_text=True))
    assert FLARE_SUMMARY in body
    assert "pacing.state" in body and "flare_rising" in body  # the fact the rule matched
    assert "Explanation: every rule, fired or not" in body and "ferritin.age_days" in body
    assert "overridden" in body and "Flare already assessed and a plan agreed" in body and "seen in clinic" in body
    assert dangers(page.get_data(as_text=True)) == []
    viewed = [r.getMessage() for r in caplog.records if "decision viewed" in r.getMessage()]
    assert viewed and rec["body"]["hookInstance"] in viewed[0] and "127.0.0.1" in viewed[0]
    assert "Verified" in text(client.get("/console/audit/verify").get_data(as_text=True))
    stats = client.get("/console/audit/stats").get_data(as_text=True)
    assert "<svg" in stats and "pacing.flare-scale-back" in stats
    assert "Flare already assessed and a plan agreed (1)" in text(stats)
    assert client.get("/console/audit/decision/unknown-instance").status_code == 404


def test_stats_by_release_with_cards_per_patient(client, ruleset):
    record_flare_decision(client)
    page = client.get("/console/audit/stats").get_data(as_text=True)
    assert dangers(page) == []
    sha = ruleset.sha256
    assert f'<option value="{sha}"' in page  # the serving release can be chosen
    shown = text(page)
    assert "Cards per patient" in shown and "1 patients" in shown
    assert page.count("<svg") == 2  # per-rule bars and cards-per-patient histogram
    chosen = client.get(f"/console/audit/stats?release={sha}").get_data(as_text=True)
    assert f'<option value="{sha}" selected' in chosen and FLARE_RULE in chosen
    assert f"by {ruleset.name} {ruleset.version}" in text(chosen)
    other = text(client.get("/console/audit/stats?release=0000").get_data(as_text=True))
    assert "no decision by the chosen release" in other and "No decisions recorded." in other


def test_audit_filters_go_in_the_body(client):
    rec = record_flare_decision(client)
    token = csrf(client, "/console/audit")
    found = client.post("/console/audit", data={"csrf_token": token, "patient": rec["patient_id"]})
    assert "/console/audit/decision/" in found.get_data(as_text=True)
    other = client.post("/console/audit", data={"csrf_token": token, "patient": "someone-else"})
    assert "/console/audit/decision/" not in other.get_data(as_text=True)
    by_hook = client.post("/console/audit", data={"csrf_token": token, "hook": "order-sign"})
    assert "/console/audit/decision/" not in by_hook.get_data(as_text=True)
    by_rule = client.post("/console/audit", data={"csrf_token": token, "rule": "pacing.flare-scale-back",
                                                  "since": "2020-01-01"})
    assert "/console/audit/decision/" in by_rule.get_data(as_text=True)
    assert client.post("/console/audit", data={"csrf_token": token, "since": "soon"}).status_code == 400
    assert 'method="post" action="/console/audit"' in found.get_data(as_text=True)


def test_no_decision_log(ruleset):
    client = create_app(ServiceConfig(env="test", ruleset=ruleset, audit_store=None, audit=False)).test_client()
    assert client.get("/console/audit").status_code == 404
    assert "keeps no decision log" in text(client.get("/console/audit").get_data(as_text=True))


def test_chart_marks_flare_window_targets_and_medication_changes(client):
    bundle = patient(FLARE)
    bundle["entry"].append({"resource": {
        "resourceType": "MedicationStatement", "id": "med-start", "status": "active",
        "subject": {"reference": "Patient/pt-flare"},
        "medicationCodeableConcept": {"text": "Pregabalin 75 mg <b onclick=x>"},
        "effectivePeriod": {"start": "2026-11-10T09:00:00Z", "end": "2026-11-15T09:00:00Z"}}})
    bundle["entry"].append({"resource": {
        "resourceType": "MedicationStatement", "id": "med-void", "status": "entered-in-error",
        "subject": {"reference": "Patient/pt-flare"}, "medicationCodeableConcept": {"text": "Never taken"},
        "effectivePeriod": {"start": "2026-11-12T09:00:00Z"}}})
    html = run_workbench(client, pasted=json.dumps(bundle), now=FLARE_NOW).get_data(as_text=True)
    assert dangers(html) == []
    # the pacing fact's current flare episode (onset 3 days ago, to today) shaded once on each panel (steps, pain),
    # four days wide; the quota and the flare state's target (the flare floor) as lines on the steps panel
    flares = re.findall(r'<rect class="flare" x="[^"]+" y="[^"]+" width="([^"]+)"[^>]*><title>([^<]*)</title>', html)
    step = (760 - 64 - 16) / 28
    assert [(float(w), t) for w, t in flares] == [(round(4 * step, 1), "2026-11-17 to 2026-11-20: current flare episode")] * 2
    targets = re.findall(r'<line class="target"[^>]*/><text[^>]*>([^<]*)</text>', html)
    assert targets == ["quota 4400", "flare floor 2200"]
    events = html[html.index('<ol class="events">'):]
    assert "M1 2026-11-10 started: Pregabalin 75 mg &lt;b onclick=x&gt;" in events
    assert "M2 2026-11-15 stopped: Pregabalin 75 mg" in events
    assert "Never taken" not in events
    assert html.count('<line class="event"') == 4  # two events on two panels


def test_progress_target_line(client):
    html = run_workbench(client, example=example_key(client, "pacing-steady.json")).get_data(as_text=True)
    targets = re.findall(r'<line class="target"[^>]*/><text[^>]*>([^<]*)</text>', html)
    assert targets == ["quota 4800", "step-up target 6600"]
    assert "usual level 6000</text>" in html and '<rect class="flare"' not in html
    assert '<th scope="col">flare</th>' not in html  # no flare: no flare column


def test_settled_flare_episode_and_rebuild_target(client):
    """A flare that settled 6 days ago: the episode the pacing fact names (onset 12 days ago, 6 days long) is
    shaded, and the target is the pre-flare quota to rebuild toward."""
    html = run_workbench(client, example=example_key(client, "pacing-flare-settled.json")).get_data(as_text=True)
    titles = re.findall(r'<rect class="flare"[^>]*><title>([^<]*)</title>', html)
    assert titles == ["2026-11-08 to 2026-11-13: flare episode, settled after 6 days"] * 2
    targets = re.findall(r'<line class="target"[^>]*/><text[^>]*>([^<]*)</text>', html)
    assert targets == ["quota 3900", "rebuild toward pre-flare quota 4000"]
    rows = dict(re.findall(r'<tr><th scope="row">(2026-11-\d\d)</th>(?:<td>[^<]*</td>)*?<td>(flare|)</td></tr>', html))
    assert [d for d, f in sorted(rows.items()) if f] == [f"2026-11-{d:02d}" for d in range(8, 14)]


def test_active_minutes_patient_charts_minutes_with_its_targets(client):
    html = run_workbench(client, example=example_key(client, "pacing-wheelchair-minutes.json")).get_data(as_text=True)
    assert "Active minutes per day" in html and "Steps per day" not in html
    targets = re.findall(r'<line class="target"[^>]*/><text[^>]*>([^<]*)</text>', html)
    assert targets == ["quota 25", "step-up target 35"]
