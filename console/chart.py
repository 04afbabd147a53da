"""The pacing chart: the patient's daily series (steps or active minutes, pain, sleep) as inline SVG, drawn here on
the server (no script, no external library), with the same numbers as a table for screen readers and copying.

Values come from the engine's own daily aggregation (fhir_adapter.facts), so the chart shows exactly the days the
rules read: a missing day is a gap, never a zero.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from markupsafe import Markup, escape

from fhir_adapter.facts import SERIES_DAYS, Fact, _daily_values  # the engine's per-day values (see module doc)

# Which daily series are charted, in this order, and how; other daily_series facts follow as lines.
PANELS = {
    "daily_steps": {"label": "Steps per day", "style": "bars", "colour": "#2b6cb0", "floor": 0},
    "active_minutes": {"label": "Active minutes per day", "style": "bars", "colour": "#2f855a", "floor": 0},
    "pain_daily": {"label": "Pain (0-10)", "style": "line", "colour": "#c53030", "floor": 0, "ceiling": 10},
    "sleep_hours": {"label": "Sleep (hours per night)", "style": "line", "colour": "#6b46c1", "floor": 0},
}

WIDTH, LEFT, RIGHT, PANEL_H, GAP, TOP = 760, 64, 16, 120, 34, 24


@dataclass
class Series:
    name: str
    label: str
    unit: str | None
    style: str
    colour: str
    values: dict[int, float]  # days ago -> value
    baseline: float | None = None  # the 14-day mean the rules compare against
    floor: float = 0
    ceiling: float | None = None
    targets: list[tuple[str, float]] = field(default_factory=list)  # (label, value): lines from fired rules


@dataclass
class Event:
    day: dt.date
    label: str  # e.g. "started: Pregabalin 75 mg" (patient-supplied text: escaped wherever it is shown)
    source: str  # "MedicationRequest/123"


@dataclass
class PacingChart:
    days: list[dt.date]  # oldest first
    series: list[Series] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)  # medication starts and stops
    flare_days: list[dt.date] = field(default_factory=list)  # the window a fired flare rule compared
    svg: Markup = Markup("")

    @property
    def rows(self) -> list[tuple[dt.date, list[float | None]]]:
        today = self.days[-1]
        return [(d, [s.values.get((today - d).days) for s in self.series]) for d in self.days]


def build_chart(ruleset, data, result, medications: list | None = None) -> PacingChart | None:
    """The chart of one evaluation (None when the patient has no daily series at all)."""
    now = result.now
    today = now.date()
    days = [today - dt.timedelta(days=i) for i in range(SERIES_DAYS - 1, -1, -1)]
    chart = PacingChart(days)
    definitions = ruleset.tree.facts
    names = [n for n in PANELS if n in result.facts] + sorted(
        n for n, f in result.facts.items() if n not in PANELS and definitions[n].kind == "daily_series")
    for name in names:
        definition = definitions.get(name)
        if definition is None or definition.kind != "daily_series":
            continue
        values, _ = _daily_values(definition, data, now, Fact(name))
        if not values:
            continue
        spec = PANELS.get(name, {"label": definition.title, "style": "line", "colour": "#444444", "floor": 0})
        fact = result.facts[name]
        chart.series.append(Series(name, spec["label"], definition.unit, spec["style"], spec["colour"],
                                   values, fact.values.get("mean_14d"), spec.get("floor", 0), spec.get("ceiling")))
    if not chart.series:
        return None
    fired = {f.rule_id for f in result.fired} | {f.rule_id for f in result.shadow}
    _add_targets(ruleset, chart, fired, result.facts)
    chart.events = medication_events(medications or [], days)
    chart.svg = _svg(chart)
    return chart


# Lines drawn when a pacing rule fired: (rule, series, label, fact attribute, rule parameter it is multiplied by).
TARGETS = [
    ("pacing.flare-scale-back", "daily_steps", "flare scale-back target", "mean_14d", "scale_back"),
    ("pacing.progress", "daily_steps", "next step target", "mean_7d", "increase"),
]
FLARE_RULE, FLARE_WINDOW_DAYS = "pacing.flare-scale-back", 3  # the rule compares the 3-day mean (days 1-3 ago)


def _param(rule, name: str) -> float | None:
    p = (getattr(rule, "params", None) or {}).get(name)
    v = p.get("value") if isinstance(p, dict) else p
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _add_targets(ruleset, chart: PacingChart, fired: set[str], facts: dict) -> None:
    by_name = {s.name: s for s in chart.series}
    for rule_id, series, label, attr, param in TARGETS:
        rule = ruleset.rule(rule_id)
        s = by_name.get(series)
        fact = facts.get(series)
        base = fact.values.get(attr) if fact is not None else None
        factor = _param(rule, param) if rule is not None else None
        if rule_id in fired and s is not None and isinstance(base, (int, float)) and factor is not None:
            s.targets.append((label, base * factor))
    if FLARE_RULE in fired:
        today = chart.days[-1]
        chart.flare_days = [today - dt.timedelta(days=i) for i in range(FLARE_WINDOW_DAYS, 0, -1)]


def _med_name(resource: dict) -> str:
    concept = resource.get("medicationCodeableConcept")
    concept = concept if isinstance(concept, dict) else {}
    if concept.get("text"):
        return str(concept["text"])
    codings = concept.get("coding")
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, dict) and coding.get("display"):
            return str(coding["display"])
    ref = resource.get("medicationReference")
    return str((ref.get("display") if isinstance(ref, dict) else None) or "medication")


def _day(value) -> dt.date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def medication_events(resources: list, days: list[dt.date]) -> list[Event]:
    """Medication starts and stops inside the chart's days (entered-in-error records left out)."""
    first, last = days[0], days[-1]
    out = []
    for res in resources:
        if isinstance(res, dict) and res.get("status") != "entered-in-error":
            rtype = str(res.get("resourceType"))
            name, ref = _med_name(res), f"{rtype}/{res.get('id')}"
            period = res.get("effectivePeriod")
            period = period if isinstance(period, dict) else {}
            starts = [res.get("authoredOn"), period.get("start"), res.get("effectiveDateTime")]
            for when, what in [(next((v for v in starts if v), None), "started"), (period.get("end"), "stopped")]:
                day = _day(when)
                if day is not None and first <= day <= last:
                    out.append(Event(day, f"{what}: {name}", ref))
    return sorted(out, key=lambda e: (e.day, e.label))


def _nice(v: float) -> float:
    """A round axis top at or above v (1 to 10 times a power of ten, in readable steps)."""
    if v <= 0:
        return 1
    power = 10 ** math.floor(math.log10(v))
    return next(m * power for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * power >= v)


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.1f}"


def _svg(chart: PacingChart) -> Markup:
    n = len(chart.days)
    plot_w = WIDTH - LEFT - RIGHT
    step = plot_w / n
    height = TOP + len(chart.series) * (PANEL_H + GAP) + 20
    today = chart.days[-1]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="pacing-chart" viewBox="0 0 {WIDTH} {height}" '
           f'width="{WIDTH}" height="{height}" role="img" aria-labelledby="chart-title chart-desc">',
           '<title id="chart-title">Pacing chart</title>',
           f'<desc id="chart-desc">Daily values over the {n} days up to {today.isoformat()}; '
           'the same data is in the table below.</desc>',
           f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>']
    for i, s in enumerate(chart.series):
        y0 = TOP + i * (PANEL_H + GAP)
        top_v = s.ceiling if s.ceiling is not None else _nice(max(list(s.values.values()) + [s.baseline or 0]) * 1.05)
        lo = s.floor

        def y(v: float, y0: float = y0, top_v: float = top_v, lo: float = lo) -> float:
            return y0 + PANEL_H - (v - lo) / (top_v - lo) * PANEL_H

        shown = (s.unit or "").replace("{steps}/d", "").replace("{score}", "").strip()
        unit = f" ({escape(shown)})" if shown else ""
        out.append(f'<text x="{LEFT}" y="{y0 - 6}" font-size="13" font-weight="bold" fill="#222">'
                   f'{escape(s.label)}{unit}</text>')
        out.append(f'<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="#f7f7f7" stroke="#ccc"/>')
        for frac in (0, 0.5, 1):
            tick = lo + (top_v - lo) * frac
            out.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end" fill="#555">'
                       f'{_fmt(tick)}</text>')
            out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                       'stroke="#e2e2e2"/>')
        for d in chart.flare_days:
            k = chart.days.index(d)
            out.append(f'<rect class="flare" x="{LEFT + k * step:.1f}" y="{y0}" width="{step:.1f}" height="{PANEL_H}" '
                       f'fill="#fbd38d" fill-opacity="0.45"><title>{d.isoformat()}: flare window</title></rect>')
        points: list[tuple[float, float] | None] = []
        for k, d in enumerate(chart.days):
            v = s.values.get((today - d).days)
            cx = LEFT + k * step + step / 2
            if v is None:
                points.append(None)
                continue
            label = f"{d.isoformat()}: {_fmt(v)}"
            if s.style == "bars":
                out.append(f'<rect class="bar" x="{LEFT + k * step + 1:.1f}" y="{y(v):.1f}" width="{step - 2:.1f}" '
                           f'height="{max(y(lo) - y(v), 0):.1f}" fill="{s.colour}"><title>{label}</title></rect>')
            else:
                points.append((cx, y(v)))
                out.append(f'<circle cx="{cx:.1f}" cy="{y(v):.1f}" r="3" fill="{s.colour}"><title>{label}</title>'
                           '</circle>')
        if s.style != "bars":
            run: list[str] = []
            for p in points + [None]:
                if p is None:
                    if len(run) > 1:
                        out.append(f'<polyline fill="none" stroke="{s.colour}" stroke-width="2" '
                                   f'points="{" ".join(run)}"/>')
                    run = []
                else:
                    run.append(f"{p[0]:.1f},{p[1]:.1f}")
        if s.baseline is not None:
            by = y(s.baseline)
            out.append(f'<line class="baseline" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{by:.1f}" y2="{by:.1f}" '
                       f'stroke="#222" stroke-dasharray="6 4" stroke-width="1.5"/>')
            out.append(f'<text x="{LEFT + plot_w - 4}" y="{by - 4:.1f}" font-size="11" text-anchor="end" fill="#222">'
                       f'14-day mean {_fmt(s.baseline)}</text>')
        for label, value in s.targets:
            ty = y(min(value, top_v))
            out.append(f'<line class="target" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" '
                       f'stroke="#2f855a" stroke-dasharray="2 3" stroke-width="2"/>')
            out.append(f'<text x="{LEFT + 4}" y="{ty - 4:.1f}" font-size="11" fill="#22543d">'
                       f'{escape(label)} {_fmt(value)}</text>')
        for number, event in enumerate(chart.events, 1):
            k = chart.days.index(event.day)
            ex = LEFT + k * step + step / 2
            out.append(f'<line class="event" x1="{ex:.1f}" x2="{ex:.1f}" y1="{y0}" y2="{y0 + PANEL_H}" stroke="#4a5568" '
                       f'stroke-width="1.5"><title>{event.day.isoformat()} {escape(event.label)}</title></line>')
            if i == 0:
                out.append(f'<text x="{ex + 3:.1f}" y="{y0 + 11}" font-size="11" fill="#2d3748">M{number}</text>')
        for k, d in enumerate(chart.days):
            if k % 7 == (n - 1) % 7:
                out.append(f'<text x="{LEFT + k * step + step / 2:.1f}" y="{y0 + PANEL_H + 14}" font-size="10" '
                           f'text-anchor="middle" fill="#555">{d.strftime("%d %b")}</text>')
    out.append("</svg>")
    return Markup("".join(out))
