"""The impact report: numbers on hand-made rows with known answers, start/stop between releases, safe HTML."""

import json
import re

import pytest

from population.report import ERROR_LIST_LIMIT, FORMAT, build_report, render_html, write_report
from tests.conftest import load_tool
from tests.console.htmlcheck import dangers, parse

NOW = "2026-11-20T12:00:00Z"


def card(rule, indicator="warning", summary=None, version="1.0.0", draft=False):
    c = {"rule_id": rule, "rule_version": version, "indicator": indicator, "summary": summary or f"{rule} card"}
    if draft:
        c["draft"] = True
    return c


def row(patient, **results):
    return {"patient": patient, "results": {label: ({"cards": [], "error": r} if isinstance(r, str)
                                                    else {"cards": r, "error": None})
                                            for label, r in results.items()}}


def release(label, version, rules):
    return {"label": label, "name": "pacecds-core", "version": version, "sha256": "ab" * 32,
            "rules": [{"id": rule_id, "version": "1.0.0", "status": status} for rule_id, status in rules]}


SINGLE = [release("release", "1.2.0", [("a.one", "active"), ("b.two", "active"), ("c.never", "active"),
                                       ("d.shadow", "draft")])]


def single_rows():
    # 5 patients: p1 two cards, p2 one, p3 none, p4 a data error, p5 one card and one draft card
    return [
        row("p1", release=[card("a.one", "warning"), card("b.two", "critical")]),
        row("p2", release=[card("a.one", "info")]),
        row("p3", release=[]),
        row("p4", release="Observation/x: invalid field 'valueQuantity.value': Input should be a valid number"),
        row("p5", release=[card("b.two", "warning"), card("d.shadow", "info", draft=True)]),
    ]


def test_single_release_numbers():
    report = build_report(iter(single_rows()), SINGLE, hook="patient-view", now=NOW)
    assert report["format"] == FORMAT and report["hook"] == "patient-view" and report["now"] == NOW
    assert report["patients"] == 5 and report["comparison"] is None
    (r,) = report["releases"]
    assert r["patients"] == 5 and r["patients_evaluated"] == 4
    assert r["errors"]["count"] == 1 and r["errors"]["truncated"] is False
    assert r["errors"]["listed"] == [{"patient": "p4", "reason": "Observation/x: invalid field "
                                      "'valueQuantity.value': Input should be a valid number"}]
    b = r["burden"]
    # 4 shown cards (the draft one is not shown) over 4 evaluated patients
    assert b["cards"] == 4 and b["cards_per_1000"] == 1000.0 and b["cards_per_patient"] == 1.0
    assert b["patients_with_cards"] == 3 and b["percent_patients_with_cards"] == 75.0
    assert b["indicators"] == {"info": 1, "warning": 2, "critical": 1}
    assert b["indicator_percent"] == {"info": 25.0, "warning": 50.0, "critical": 25.0}
    assert b["draft_cards"] == 1
    rules = {x["id"]: x for x in r["rules"]}
    assert list(rules) == ["a.one", "b.two", "c.never", "d.shadow"]
    assert rules["a.one"]["patients"] == 2 and rules["a.one"]["cards_per_1000"] == 500.0
    assert rules["a.one"]["percent_patients"] == 50.0
    assert rules["a.one"]["indicators"] == {"info": 1, "warning": 1, "critical": 0}
    assert rules["c.never"]["patients"] == 0 and rules["c.never"]["in_release"] is True
    assert rules["d.shadow"]["draft"] is True and rules["d.shadow"]["patients"] == 1
    dist = r["cards_per_patient"]
    assert dist["histogram"]["0"] == 1 and dist["histogram"]["1"] == 2 and dist["histogram"]["2"] == 1
    assert dist["histogram"]["10+"] == 0 and sum(dist["histogram"].values()) == 4
    assert dist["mean"] == 1.0 and dist["median"] == 1 and dist["p90"] == 2 and dist["max"] == 2


def test_rounding_and_large_counts():
    rows = [row(f"p{i:03d}", release=[card("a.one")] * (12 if i == 0 else 1 if i < 3 else 0)) for i in range(7)]
    r = build_report(rows, SINGLE, hook="patient-view", now=NOW)["releases"][0]
    assert r["burden"]["cards"] == 14
    assert r["burden"]["cards_per_1000"] == 2000.0
    assert r["rules"][0]["cards_per_1000"] == 2000.0 and r["rules"][0]["patients"] == 3
    assert r["rules"][0]["percent_patients"] == 42.9  # 3 of 7, rounded
    assert r["cards_per_patient"]["histogram"]["10+"] == 1 and r["cards_per_patient"]["max"] == 12
    assert r["cards_per_patient"]["mean"] == 2.0 and r["cards_per_patient"]["median"] == 0


TWO = [release("serving", "1.2.0", [("a.one", "active"), ("b.two", "active")]),
       release("candidate", "1.3.0", [("a.one", "active"), ("b.two", "active"), ("c.new", "active")])]


def two_rows():
    return [
        row("p1", serving=[card("a.one")], candidate=[card("a.one"), card("c.new", "info", "new for p1")]),
        row("p2", serving=[card("a.one", summary="old for p2"), card("b.two")], candidate=[card("b.two")]),
        row("p3", serving=[], candidate=[card("c.new", "info", "new for p3")]),
        row("p4", serving=[card("b.two")], candidate="bad data"),  # not compared
        row("p5", serving=[card("a.one", summary="old for p5")], candidate=[]),
        row("p6", serving=[], candidate=[]),
    ]


def test_start_and_stop_between_two_releases():
    report = build_report(two_rows(), TWO, hook="patient-view", now=NOW, sample_size=10)
    cmp = report["comparison"]
    assert cmp["from"] == "serving" and cmp["to"] == "candidate"
    assert cmp["patients_compared"] == 5 and cmp["patients_not_compared"] == 1
    rules = {r["id"]: r for r in cmp["rules"]}
    assert (rules["a.one"]["start"], rules["a.one"]["stop"], rules["a.one"]["both"]) == (0, 2, 1)
    assert (rules["b.two"]["start"], rules["b.two"]["stop"], rules["b.two"]["both"]) == (0, 0, 1)
    assert (rules["c.new"]["start"], rules["c.new"]["stop"], rules["c.new"]["net"]) == (2, 0, 2)
    assert cmp["patients_with_any_start"] == 2 and cmp["patients_with_any_stop"] == 2
    # the samples carry the card each patient gets (start: the candidate's) or loses (stop: the serving one's)
    assert {s["patient"]: s["summary"] for s in rules["c.new"]["start_sample"]} == {"p1": "new for p1",
                                                                                    "p3": "new for p3"}
    assert {s["patient"]: s["summary"] for s in rules["a.one"]["stop_sample"]} == {"p2": "old for p2",
                                                                                   "p5": "old for p5"}
    serving, candidate = report["releases"]
    assert serving["burden"]["cards"] == 5 and candidate["burden"]["cards"] == 4
    assert serving["patients_evaluated"] == 6 and candidate["patients_evaluated"] == 5
    assert {r["id"]: r["in_release"] for r in serving["rules"]} == {"a.one": True, "b.two": True}
    assert cmp["burden_change"]["cards"] == -1
    assert cmp["burden_change"]["cards_per_1000"] == round(800.0 - 833.3, 1)


def test_samples_are_bounded_and_do_not_depend_on_row_order():
    rows = [row(f"p{i:04d}", serving=[], candidate=[card("c.new")]) for i in range(500)]
    a = build_report(rows, TWO, hook="patient-view", now=NOW, sample_size=7)
    b = build_report(reversed(rows), TWO, hook="patient-view", now=NOW, sample_size=7)
    sample_a = a["comparison"]["rules"][2]["start_sample"]
    assert len(sample_a) == 7 and sample_a == b["comparison"]["rules"][2]["start_sample"]
    assert a["comparison"]["rules"][2]["start"] == 500
    # spread over the population, not the first 7 ids
    assert [s["patient"] for s in sample_a] != [f"p{i:04d}" for i in range(7)]


def test_error_list_is_bounded_but_every_error_counted():
    rows = [row(f"p{i:04d}", release="bad\ndata  here") for i in range(ERROR_LIST_LIMIT + 25)]
    r = build_report(reversed(rows), SINGLE, hook="patient-view", now=NOW)["releases"][0]
    assert r["errors"]["count"] == ERROR_LIST_LIMIT + 25 and r["errors"]["truncated"] is True
    assert len(r["errors"]["listed"]) == ERROR_LIST_LIMIT
    assert r["errors"]["listed"][0] == {"patient": "p0000", "reason": "bad data here"}  # one line
    assert r["patients_evaluated"] == 0 and r["burden"]["cards_per_1000"] == 0.0


def test_a_missing_release_result_is_an_error():
    r = build_report([{"patient": "p1", "results": {}}], SINGLE, hook="patient-view", now=NOW)["releases"][0]
    assert r["errors"]["listed"] == [{"patient": "p1", "reason": "no result for this release"}]


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one release"):
        build_report([], [], hook="patient-view", now=NOW)
    with pytest.raises(ValueError, match="labels must differ"):
        build_report([], [SINGLE[0], SINGLE[0]], hook="patient-view", now=NOW)


def test_empty_population():
    report = build_report([], TWO, hook="patient-view", now=NOW)
    assert report["patients"] == 0 and report["releases"][0]["burden"]["cards_per_1000"] == 0.0
    assert "0 patients" in render_html(report)


HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)>"&\''


def test_html_escapes_patient_text_and_stays_self_contained(tmp_path):
    rows = [
        row(HOSTILE, serving=[], candidate=[card("c.new", summary=HOSTILE)]),
        row("p2" + HOSTILE, serving=[card("a.one", summary=HOSTILE)], candidate=[]),
        row("p3", serving="reason " + HOSTILE, candidate=[]),
    ]
    report = build_report(rows, TWO, hook="patient-view", now=NOW)
    json_path, html_path = write_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text()) == report
    html = html_path.read_text()
    assert dangers(html) == []
    parsed = parse(html)
    assert "img" not in [tag for tag, _ in parsed.tags]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert sum(HOSTILE in t for t in parsed.text) >= 3  # shown as written: patient id, summaries, reason
    # nothing fetched: no external URL in any attribute, a CSP that forbids loading anything
    attrs = [(k, v) for _, a in parsed.tags for k, v in a.items()]
    assert not [v for k, v in attrs if k != "xmlns" and re.match(r"(https?:)?//", v)]
    assert "url(" not in html and "@import" not in html
    assert "default-src 'none'" in html
    assert "<svg" in html and "<table" in html


def test_report_json_has_the_documented_keys(tmp_path):
    report = build_report(two_rows(), TWO, hook="patient-view", now=NOW)
    assert set(report) == {"format", "hook", "now", "patients", "releases", "comparison"}
    r = report["releases"][0]
    assert set(r) == {"label", "name", "version", "sha256", "patients", "patients_evaluated", "errors", "burden",
                      "cards_per_patient", "rules"}
    assert set(r["errors"]) == {"count", "listed", "truncated"}
    assert set(r["burden"]) == {"cards", "cards_per_1000", "cards_per_patient", "patients_with_cards",
                                "percent_patients_with_cards", "indicators", "indicator_percent", "draft_cards"}
    assert set(r["cards_per_patient"]) == {"histogram", "mean", "median", "p90", "max"}
    assert set(r["rules"][0]) == {"id", "version", "status", "draft", "in_release", "patients", "percent_patients",
                                  "cards", "cards_per_1000", "indicators"}
    assert set(report["comparison"]) == {"from", "to", "patients_compared", "patients_not_compared",
                                         "patients_with_any_start", "patients_with_any_stop", "sample_size",
                                         "rules", "burden_change"}
    assert set(report["comparison"]["rules"][0]) == {"id", "start", "stop", "both", "net", "start_sample",
                                                     "stop_sample"}
    json.dumps(report)  # plain JSON data


def test_rules_of_other_hooks_are_not_listed():
    meta = release("release", "1.2.0", [("a.one", "active")])
    meta["rules"].append({"id": "o.order", "version": "1.0.0", "status": "active", "hooks": ["order-sign"]})
    meta["rules"].append({"id": "v.view", "version": "1.0.0", "status": "active", "hooks": ["patient-view"]})
    r = build_report([row("p1", release=[])], [meta], hook="patient-view", now=NOW)["releases"][0]
    assert [x["id"] for x in r["rules"]] == ["a.one", "v.view"]


def test_html_lists_only_the_rules_that_change():
    html = render_html(build_report(two_rows(), TWO, hook="patient-view", now=NOW))
    assert "No change in who gets the card of 1 rule: <code>b.two</code>." in html
    assert '<th scope="row"><code>c.new</code></th><td class="n start">2</td>' in html


def test_the_page_renders_offline_in_a_browser(tmp_path):
    """Headless chromium opens impact.html from disk: charts drawn, nothing loaded, no script (skips without it)."""
    tool = load_tool("screenshot_report")
    if tool.find_browser() is None:
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium.webdriver.common.by import By

    rows = two_rows() + [row(HOSTILE, serving=[], candidate=[card("c.new", summary=HOSTILE)])]
    _, html_path = write_report(build_report(rows, TWO, hook="patient-view", now=NOW), tmp_path)
    with tool.browser() as driver:
        driver.get(html_path.as_uri())
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        assert driver.find_elements(By.TAG_NAME, "script") == []
        svgs = driver.find_elements(By.TAG_NAME, "svg")
        assert len(svgs) == 4 and all(s.size["width"] > 100 and s.size["height"] > 30 for s in svgs)
        bars = driver.find_elements(By.CSS_SELECTOR, "svg rect")
        assert any(b.size["width"] > 50 for b in bars)
        # shown as text in the review sample (inside a closed <details>, so read textContent)
        assert HOSTILE in driver.execute_script("return document.body.textContent")
    tool.screenshot(html_path, tmp_path / "shot.png")
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
