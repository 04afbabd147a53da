"""The population impact report: what a rule release does to a whole population, and what changes between two.

`build_report(rows, releases, hook=..., now=...)` reads the per-patient result rows once, as they stream past
(memory grows with the number of rules and the sample sizes, never with the number of patients), and returns the
report as plain JSON data. `write_report(report, out_dir)` writes it as `impact.json` and as `impact.html`: one
self-contained page (inline CSS and SVG charts, no script, nothing fetched) with a table under every chart.
Every text that comes from patient data (patient ids, card summaries, error reasons) is escaped by Jinja2's
autoescape. docs/population-impact.md describes every key and how a committee reads the page.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from jinja2 import Environment, PackageLoader, select_autoescape

FORMAT = "pacecds-impact-report/1"
INDICATORS = ("info", "warning", "critical")
ERROR_LIST_LIMIT = 100  # errors listed by patient id (all are counted)
REASON_WIDTH = 300  # characters of an error reason kept
HISTOGRAM_CAP = 10  # cards-per-patient buckets 0..9 and "10 or more"


def _per_1000(count: int, patients: int) -> float:
    return round(1000 * count / patients, 1) if patients else 0.0


def _percent(count: int, patients: int) -> float:
    return round(100 * count / patients, 1) if patients else 0.0


def _sample_key(patient: str) -> str:
    """The order of the review samples: a hash of the patient id, so a sample is spread over the population and the
    same whatever order the rows arrive in."""
    return hashlib.sha256(patient.encode()).hexdigest()


class _Bottom:
    """The `size` items with the smallest keys seen so far (a bounded, order-independent selection)."""

    def __init__(self, size: int):
        self.size = size
        self.heap: list[tuple[_Neg, dict]] = []  # the largest kept key on top, to be replaced first

    def offer(self, key: str, item: dict) -> None:
        if self.size <= 0:
            return
        entry = (_Neg(key), item)
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, entry)
        elif key < self.heap[0][0].key:
            heapq.heapreplace(self.heap, entry)

    def items(self) -> list[dict]:
        return [item for _, item in sorted(self.heap, key=lambda e: e[0].key)]


class _Neg:
    """A string key ordered backwards, so heapq's min-heap keeps the largest of the kept keys on top."""

    __slots__ = ("key",)

    def __init__(self, key: str):
        self.key = key

    def __lt__(self, other: _Neg) -> bool:
        return self.key > other.key


class _Release:
    """Running totals of one release."""

    def __init__(self, meta: dict, hook: str):
        self.meta = meta
        self.patients = 0
        self.errors = 0
        self.error_list = _Bottom(ERROR_LIST_LIMIT)
        self.cards = 0
        self.draft_cards = 0
        self.with_cards = 0
        self.indicators: Counter[str] = Counter()
        self.per_patient: Counter[int] = Counter()
        self.rules: dict[str, dict] = {}
        for rule in meta.get("rules") or []:
            # a rule that names its hooks and not this one cannot fire here: not listed (unless it gives a card)
            if not isinstance(rule.get("hooks"), list) or hook in rule["hooks"]:
                self._rule(str(rule.get("id")), rule)

    def _rule(self, rule_id: str, meta: dict | None = None) -> dict:
        entry = self.rules.get(rule_id)
        if entry is None:
            meta = meta or {}
            entry = self.rules[rule_id] = {
                "id": rule_id, "version": meta.get("version"), "status": meta.get("status"),
                "listed": bool(meta), "patients": 0, "cards": 0, "draft": False,
                "indicators": Counter(), "versions": set(),
            }
        return entry

    def add(self, patient: str, result: dict | None) -> set[str] | None:
        """Count one patient's result; the ids of the rules that gave the patient a card (None: an error)."""
        self.patients += 1
        error = "no result for this release" if not isinstance(result, dict) else result.get("error")
        if error:
            self.errors += 1
            reason = " ".join(str(error).split())
            self.error_list.offer(patient, {"patient": patient, "reason": reason[:REASON_WIDTH]})
            return None
        assert isinstance(result, dict)
        fired: set[str] = set()
        shown = 0
        for card in result.get("cards") or []:
            rule = self._rule(str(card.get("rule_id")))
            indicator = card.get("indicator") if card.get("indicator") in INDICATORS else "info"
            rule["cards"] += 1
            rule["indicators"][indicator] += 1
            if card.get("rule_version") is not None:
                rule["versions"].add(str(card["rule_version"]))
            if card.get("draft"):
                rule["draft"] = True
                self.draft_cards += 1
            else:
                shown += 1
                self.indicators[indicator] += 1
            if rule["id"] not in fired:
                rule["patients"] += 1
                fired.add(rule["id"])
        self.cards += shown
        self.per_patient[shown] += 1
        self.with_cards += shown > 0
        return fired

    def summary(self) -> dict:
        evaluated = self.patients - self.errors
        rules = []
        for rule in sorted(self.rules.values(), key=lambda r: r["id"]):
            version = rule["version"] or (", ".join(sorted(rule["versions"])) or None)
            rules.append({
                "id": rule["id"], "version": version,
                "status": rule["status"] or ("draft" if rule["draft"] else None),
                "draft": bool(rule["draft"] or rule["status"] == "draft"),
                "in_release": rule["listed"],
                "patients": rule["patients"], "percent_patients": _percent(rule["patients"], evaluated),
                "cards": rule["cards"], "cards_per_1000": _per_1000(rule["cards"], evaluated),
                "indicators": {i: rule["indicators"][i] for i in INDICATORS},
            })
        return {
            "label": self.meta.get("label"), "name": self.meta.get("name"), "version": self.meta.get("version"),
            "sha256": self.meta.get("sha256"),
            "patients": self.patients, "patients_evaluated": evaluated,
            "errors": {"count": self.errors, "listed": self.error_list.items(),
                       "truncated": self.errors > ERROR_LIST_LIMIT},
            "burden": {
                "cards": self.cards, "cards_per_1000": _per_1000(self.cards, evaluated),
                "cards_per_patient": round(self.cards / evaluated, 2) if evaluated else 0.0,
                "patients_with_cards": self.with_cards,
                "percent_patients_with_cards": _percent(self.with_cards, evaluated),
                "indicators": {i: self.indicators[i] for i in INDICATORS},
                "indicator_percent": {i: _percent(self.indicators[i], self.cards) for i in INDICATORS},
                "draft_cards": self.draft_cards,
            },
            "cards_per_patient": _distribution(self.per_patient),
            "rules": rules,
        }


def _distribution(counts: Counter[int]) -> dict:
    """Cards per patient: a histogram (0..9 and "10+") and its mean, median, 90th centile and maximum."""
    total = sum(counts.values())
    histogram = {str(k): counts.get(k, 0) for k in range(HISTOGRAM_CAP)}
    histogram[f"{HISTOGRAM_CAP}+"] = sum(n for k, n in counts.items() if k >= HISTOGRAM_CAP)

    def centile(q: float) -> int:
        if not total:
            return 0
        rank, seen = q * total, 0
        for k in sorted(counts):
            seen += counts[k]
            if seen >= rank:
                return k
        return max(counts)

    mean = sum(k * n for k, n in counts.items()) / total if total else 0.0
    return {"histogram": histogram, "mean": round(mean, 2), "median": centile(0.5), "p90": centile(0.9),
            "max": max(counts) if counts else 0}


class _Comparison:
    """Per rule, the patients who start and stop getting its card from one release to the next."""

    def __init__(self, before: str, after: str, sample_size: int):
        self.before, self.after, self.sample_size = before, after, sample_size
        self.compared = 0
        self.not_compared = 0
        self.any_start = 0
        self.any_stop = 0
        self.rules: dict[str, dict] = {}

    def _rule(self, rule_id: str) -> dict:
        if rule_id not in self.rules:
            self.rules[rule_id] = {"start": 0, "stop": 0, "both": 0, "start_sample": _Bottom(self.sample_size),
                                   "stop_sample": _Bottom(self.sample_size)}
        return self.rules[rule_id]

    def add(self, patient: str, before: set[str] | None, after: set[str] | None, results: dict) -> None:
        if before is None or after is None:
            self.not_compared += 1
            return
        self.compared += 1
        key = _sample_key(patient)
        for rule_id in before | after:
            self._rule(rule_id)
        for rule_id in after - before:
            entry = self.rules[rule_id]
            entry["start"] += 1
            entry["start_sample"].offer(key, _sample(patient, results[self.after], rule_id))
        for rule_id in before - after:
            entry = self.rules[rule_id]
            entry["stop"] += 1
            entry["stop_sample"].offer(key, _sample(patient, results[self.before], rule_id))
        for rule_id in before & after:
            self.rules[rule_id]["both"] += 1
        self.any_start += bool(after - before)
        self.any_stop += bool(before - after)

    def summary(self, rule_ids: Iterable[str]) -> dict:
        for rule_id in rule_ids:
            self._rule(rule_id)
        rules = []
        for rule_id in sorted(self.rules):
            e = self.rules[rule_id]
            rules.append({"id": rule_id, "start": e["start"], "stop": e["stop"], "both": e["both"],
                          "net": e["start"] - e["stop"],
                          "start_sample": e["start_sample"].items(), "stop_sample": e["stop_sample"].items()})
        return {"from": self.before, "to": self.after, "patients_compared": self.compared,
                "patients_not_compared": self.not_compared, "patients_with_any_start": self.any_start,
                "patients_with_any_stop": self.any_stop, "sample_size": self.sample_size, "rules": rules}


def _sample(patient: str, result: dict, rule_id: str) -> dict:
    card: dict = next((c for c in result.get("cards") or [] if str(c.get("rule_id")) == rule_id), {})
    return {"patient": patient, "indicator": card.get("indicator"), "summary": card.get("summary"),
            "draft": bool(card.get("draft"))}


def build_report(rows: Iterable[dict], releases: list[dict], *, hook: str, now: str, sample_size: int = 10) -> dict:
    """The impact report of the result rows (one per patient) of one release, or of two compared.

    `releases` is the release metadata list (label, name, version, sha256, rules: [{id, version, status, and
    optionally hooks}]); rules whose `hooks` leave out `hook` are not listed. With two releases, the first is the one
    serving and the second the candidate, and the report lists per rule who starts and stops getting its card,
    with a deterministic sample of `sample_size` patients of each for review.
    """
    if not releases:
        raise ValueError("build_report needs at least one release")
    labels = [str(r.get("label")) for r in releases]
    if len(set(labels)) != len(labels):
        raise ValueError(f"release labels must differ: {labels}")
    if sample_size < 0:
        raise ValueError("sample_size must be 0 or more")
    totals = {label: _Release(meta, hook) for label, meta in zip(labels, releases)}
    comparison = _Comparison(labels[0], labels[1], sample_size) if len(labels) == 2 else None
    patients = 0
    for row in rows:
        patients += 1
        patient = str(row.get("patient"))
        results = row.get("results") or {}
        fired = {label: totals[label].add(patient, results.get(label)) for label in labels}
        if comparison is not None:
            comparison.add(patient, fired[labels[0]], fired[labels[1]], results)
    summaries = [totals[label].summary() for label in labels]
    all_rules = {rule["id"] for s in summaries for rule in s["rules"]}
    report: dict[str, Any] = {"format": FORMAT, "hook": hook, "now": now, "patients": patients,
                              "releases": summaries, "comparison": None}
    if comparison is not None:
        report["comparison"] = comparison.summary(all_rules)
        before, after = summaries[0]["burden"], summaries[1]["burden"]
        report["comparison"]["burden_change"] = {
            "cards": after["cards"] - before["cards"],
            "cards_per_1000": round(after["cards_per_1000"] - before["cards_per_1000"], 1),
            "patients_with_cards": after["patients_with_cards"] - before["patients_with_cards"],
        }
    return report


# --- writing -------------------------------------------------------------------------------------------------------

_ENV = Environment(loader=PackageLoader("population", "templates"), autoescape=select_autoescape(default=True),
                   trim_blocks=True, lstrip_blocks=True)
COLOURS = {"serving": "#718096", "candidate": "#2b6cb0", "release": "#2b6cb0",
           "info": "#3182ce", "warning": "#c05621", "critical": "#c53030", "start": "#2f855a", "stop": "#9b2c2c"}
OTHER_COLOURS = ("#2b6cb0", "#718096", "#805ad5", "#b7791f")


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write `impact.json` and the self-contained `impact.html` into `out_dir`; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "impact.json", out_dir / "impact.html"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


def render_html(report: dict) -> str:
    releases = report["releases"]
    colours = {r["label"]: COLOURS.get(r["label"]) or OTHER_COLOURS[i % len(OTHER_COLOURS)]
               for i, r in enumerate(releases)}
    return _ENV.get_template("impact.html").render(
        report=report, releases=releases, comparison=report.get("comparison"), colours=colours, palette=COLOURS,
        indicators=INDICATORS, rule_rows=_rule_rows(releases), charts=_charts(report, colours))


def _rule_rows(releases: list[dict]) -> list[dict]:
    """One row per rule id over every release: {id, per: {label: rule summary or None}}."""
    ids = sorted({rule["id"] for r in releases for rule in r["rules"]})
    by_label = {r["label"]: {rule["id"]: rule for rule in r["rules"]} for r in releases}
    return [{"id": rule_id, "per": {label: rules.get(rule_id) for label, rules in by_label.items()}} for rule_id in ids]


# Chart geometry is computed here as numbers; the template draws it (and escapes every label it writes).
LABEL_W, BAR_AREA, BAR_H, GAP = 260, 420, 12, 10


def _charts(report: dict, colours: dict) -> dict:
    releases = report["releases"]
    rows = _rule_rows(releases)
    # 1. cards per 1,000 patients per rule, the releases' bars side by side
    top = max([rule["cards_per_1000"] for r in releases for rule in r["rules"]] + [1])
    group_h = len(releases) * BAR_H + GAP
    rate_rows = []
    for i, row in enumerate(rows):
        bars = []
        for k, r in enumerate(releases):
            rule = row["per"][r["label"]]
            value = rule["cards_per_1000"] if rule else 0
            bars.append({"y": 20 + i * group_h + k * BAR_H, "w": round(BAR_AREA * value / top, 1), "value": value,
                         "colour": colours[r["label"]], "label": r["label"]})
        rate_rows.append({"id": row["id"], "y": 20 + i * group_h, "bars": bars})
    rates = {"rows": rate_rows, "height": 30 + len(rows) * group_h, "label_w": LABEL_W, "bar_h": BAR_H - 2,
             "width": LABEL_W + BAR_AREA + 70}
    # 2. indicator mix: one stacked bar per release, widths in percent of its shown cards
    mix = []
    for k, r in enumerate(releases):
        x, parts = 0.0, []
        for ind in INDICATORS:
            w = BAR_AREA * r["burden"]["indicators"][ind] / r["burden"]["cards"] if r["burden"]["cards"] else 0
            parts.append({"x": round(LABEL_W + x, 1), "w": round(w, 1), "indicator": ind,
                          "count": r["burden"]["indicators"][ind], "percent": r["burden"]["indicator_percent"][ind]})
            x += w
        mix.append({"label": r["label"], "y": 20 + k * 34, "parts": parts})
    mix_chart = {"rows": mix, "label_x": LABEL_W - 8, "height": 40 + len(releases) * 34, "width": LABEL_W + BAR_AREA + 20}
    # 3. cards per patient: a histogram, releases side by side in each bucket
    buckets = list(releases[0]["cards_per_patient"]["histogram"])
    hist_top = max([n for r in releases for n in r["cards_per_patient"]["histogram"].values()] + [1])
    slot, plot_h = 56, 180
    bw = (slot - 8) / len(releases)
    hist_bars = []
    for b, bucket in enumerate(buckets):
        for k, r in enumerate(releases):
            n = r["cards_per_patient"]["histogram"][bucket]
            h = round(plot_h * n / hist_top, 1)
            hist_bars.append({"x": round(50 + b * slot + 4 + k * bw, 1), "y": round(20 + plot_h - h, 1), "w": round(bw - 1, 1),
                              "h": h, "n": n, "bucket": bucket, "label": r["label"], "colour": colours[r["label"]]})
    hist = {"bars": hist_bars, "buckets": [{"x": 50 + b * slot + slot / 2, "bucket": bucket}
                                            for b, bucket in enumerate(buckets)],
            "base": 20 + plot_h, "width": 60 + len(buckets) * slot, "height": plot_h + 60}
    charts: dict[str, Any] = {"rates": rates, "mix": mix_chart, "hist": hist, "startstop": None}
    # 4. start and stop per rule: stops to the left of the middle line, starts to the right
    comparison = report.get("comparison")
    if comparison:
        changed = [r for r in comparison["rules"] if r["start"] or r["stop"]]
        ss_top = max([max(r["start"], r["stop"]) for r in changed] + [1])
        half = BAR_AREA / 2
        mid = LABEL_W + half
        ss_rows = [{"id": r["id"], "y": 20 + i * 22, "start": r["start"], "stop": r["stop"],
                    "start_w": round(half * r["start"] / ss_top, 1), "stop_w": round(half * r["stop"] / ss_top, 1)}
                   for i, r in enumerate(changed)]
        charts["startstop"] = {"rows": ss_rows, "mid": mid, "label_x": LABEL_W - 8, "height": 40 + len(changed) * 22,
                               "width": LABEL_W + BAR_AREA + 60}
    return charts
