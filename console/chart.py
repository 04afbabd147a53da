"""The pacing chart: the patient's daily series (steps or active minutes, pain, sleep) as inline SVG, drawn here on
the server (no script, no external library), with the same numbers as a table for screen readers and copying.

Values come from the engine's own daily aggregation (fhir_adapter.facts._daily_values: the engine exposes no
public per-day function, and this is the one the pacing fact itself reads), so the chart shows exactly the days the
rules read: a missing day is a gap, never a zero. Lines and flare shading come from the evaluation's `pacing` fact
(fhir_adapter.pacing), the one fact the pacing rules test.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from markupsafe import Markup, escape

# _daily_values: the engine's per-day values (see module doc)
from fhir_adapter.facts import SERIES_DAYS, Fact, FactDefinition, _daily_values

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
    targets: list[tuple[str, float]] = field(default_factory=list)  # (label, value): from the pacing fact
    baseline_label: str = "14-day mean"


@dataclass
class Event:
    day: dt.date
    label: str  # e.g. "started: Pregabalin 75 mg" (patient-supplied text: escaped wherever it is shown)
    source: str  # "MedicationRequest/123"


@dataclass
class Flare:
    start: dt.date  # onset
    end: dt.date  # the last flare day (today for the current episode)
    label: str

    def days(self, shown: list[dt.date]) -> list[dt.date]:
        return [d for d in shown if self.start <= d <= self.end]


@dataclass
class PacingChart:
    days: list[dt.date]  # oldest first
    series: list[Series] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)  # medication starts and stops
    flares: list[Flare] = field(default_factory=list)  # flare episodes the pacing fact names (shaded)
    flare_days: list[dt.date] = field(default_factory=list)  # the shown days inside them
    svg: Markup = Markup("")

    @property
    def rows(self) -> list[tuple[dt.date, list[float | None]]]:
        today = self.days[-1]
        return [(d, [s.values.get((today - d).days) for s in self.series]) for d in self.days]


def build_chart(ruleset, data, result, medications: list | None = None) -> PacingChart | None:
    """The chart of one evaluation (None when the patient has no daily series at all).

    The pacing rules read one `pacing` fact (fhir_adapter.pacing); its activity series (steps or active minutes,
    whichever the fact chose) and its pain series are charted from the fact's own input definitions, and its
    levels (usual level, quota, the state's next target, usual pain) and flare episodes are drawn as the fact gives
    them. Other daily series the hook reads (sleep) follow with their 14-day mean."""
    now = result.now
    today = now.date()
    days = [today - dt.timedelta(days=i) for i in range(SERIES_DAYS - 1, -1, -1)]
    chart = PacingChart(days)
    definitions = ruleset.tree.facts
    pacing = _pacing_fact(ruleset, result)
    wanted: dict[str, FactDefinition] = {}  # name -> its definition
    if pacing is not None:
        fact, definition = pacing
        roles = dict(zip(definition.roles, definition.inputs))
        activity_role = "minutes" if fact.values.get("activity") == "active minutes" else "activity"
        for role in (activity_role, "symptom"):
            if roles.get(role) is not None and roles[role].kind == "daily_series":
                wanted[roles[role].name] = roles[role]
    for name, f in result.facts.items():
        definition = definitions.get(name)
        if definition is not None and definition.kind == "daily_series":
            wanted.setdefault(name, definition)
    names = [n for n in PANELS if n in wanted] + sorted(n for n in wanted if n not in PANELS)
    for name in names:
        definition = wanted[name]
        values, _ = _daily_values(definition, data, now, Fact(name))
        if not values:
            continue
        spec: dict = PANELS.get(name) or {"label": definition.title, "style": "line", "colour": "#444444", "floor": 0}
        fact = result.facts.get(name)
        baseline = (fact.values.get("mean_14d"), "14-day mean") if fact is not None else (None, "")
        chart.series.append(Series(name, spec["label"], definition.unit, spec["style"], spec["colour"],
                                   values, baseline[0], spec.get("floor", 0), spec.get("ceiling"),
                                   baseline_label=baseline[1]))
    if not chart.series:
        return None
    if pacing is not None:
        _add_pacing(chart, pacing[0], pacing[1])
    chart.events = medication_events(medications or [], days)
    chart.svg = _svg(chart)
    return chart


PACING_FACT = "pacing"


def _pacing_fact(ruleset, result):
    """The evaluation's pacing fact and its definition (None when the hook reads none)."""
    fact = result.facts.get(PACING_FACT)
    definition = ruleset.tree.facts.get(PACING_FACT)
    if fact is None or definition is None or definition.kind != "pacing" or not fact.values.get("present"):
        return None
    return fact, definition


def _number(values: dict, name: str) -> float | None:
    v = values.get(name)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


# The next target each pacing state's card names (fhir_adapter.pacing, docs/knowledge-base.md "The pacing model"):
# (label, pacing attribute). States not listed have the step-up as their next target.
NEXT_TARGET = {
    "flare_rising": ("flare floor", "flare_floor"),
    "flare_peak": ("flare floor", "flare_floor"),
    "flare_settling": ("rebuild toward pre-flare quota", "pre_flare_quota"),
    "flare_settled": ("rebuild toward pre-flare quota", "pre_flare_quota"),
    "step_up_pain": ("back to the previous level", "back_to"),  # the previous target, or last week's level
}
STEP_UP = ("step-up target", "step_up")
CURRENT_FLARE = {"flare_rising", "flare_peak", "flare_settling"}


def _add_pacing(chart: PacingChart, fact, definition) -> None:
    """Lines and flare shading from the pacing fact: the usual level (dashed), the quota and the state's next
    target (dotted) on the activity panel, the usual pain on the pain panel, and the flare episodes it names."""
    v = fact.values
    roles = dict(zip(definition.roles, definition.inputs))
    activity_names = {roles[r].name for r in ("activity", "minutes") if roles.get(r) is not None}
    pain_name = roles["symptom"].name if roles.get("symptom") is not None else None
    state = v.get("state")
    for s in chart.series:
        if s.name in activity_names:
            s.baseline, s.baseline_label = _number(v, "typical"), "usual level"
            quota = _number(v, "quota")
            if quota is not None:
                s.targets.append(("quota", quota))
            label, attr = NEXT_TARGET.get(state, STEP_UP)
            target = _number(v, attr)
            if target is not None:
                s.targets.append((label, target))
        elif s.name == pain_name:
            s.baseline, s.baseline_label = _number(v, "pain_usual"), "usual pain"
    chart.flares = _flare_episodes(v, chart.days)
    chart.flare_days = sorted({d for f in chart.flares for d in f.days(chart.days)})


def _flare_episodes(v: dict, days: list[dt.date]) -> list[Flare]:
    """Flare episodes as the pacing fact exposes them: the current one (onset to today), the settled one a
    flare_settled state refers to (onset for flare_days days), and the last settled one when it is exactly known
    (one settled episode in 90 days: its settled day and its days to settle). Older settled episodes are only
    counted by the fact (flares_90d), so they are not shaded."""
    today = days[-1]
    state = v.get("state")
    onset, length = _number(v, "flare_onset_days_ago"), _number(v, "flare_days")
    out: list[Flare] = []
    if state in CURRENT_FLARE and onset is not None:
        out.append(Flare(today - dt.timedelta(days=int(onset)), today, "current flare episode"))
    elif state == "flare_settled" and onset is not None and length is not None:
        start = today - dt.timedelta(days=int(onset))
        out.append(Flare(start, start + dt.timedelta(days=max(int(length) - 1, 0)),
                         f"flare episode, settled after {int(length)} days"))
    settled_day, to_settle = _number(v, "last_settled_days_ago"), _number(v, "days_to_settle")
    if v.get("settled_flares_90d") == 1 and settled_day is not None and to_settle is not None:
        start = today - dt.timedelta(days=int(settled_day + to_settle))
        flare = Flare(start, start + dt.timedelta(days=max(int(to_settle) - 1, 0)),
                      f"flare episode, settled after {int(to_settle)} days")
        if all(f.start != flare.start for f in out):
            out.append(flare)
    return sorted((f for f in out if f.end >= days[0] and f.start <= today), key=lambda f: f.start)


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


def chart_number(v: float) -> str:
    """A number as the chart labels it (the page's list of lines uses the same)."""
    return _fmt(v)


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
        top_v = s.ceiling if s.ceiling is not None else _nice(
            max(list(s.values.values()) + [s.baseline or 0] + [v for _, v in s.targets]) * 1.05)
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
        for flare in chart.flares:
            inside = flare.days(chart.days)
            k = chart.days.index(inside[0])
            out.append(f'<rect class="flare" x="{LEFT + k * step:.1f}" y="{y0}" width="{len(inside) * step:.1f}" '
                       f'height="{PANEL_H}" fill="#fbd38d" fill-opacity="0.45"><title>{flare.start.isoformat()} to '
                       f'{flare.end.isoformat()}: {escape(flare.label)}</title></rect>')
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
                       f'{escape(s.baseline_label)} {_fmt(s.baseline)}</text>')
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


# ---- the levels a stored decision's pacing fact held (the card-link page) ---------------------------------------

@dataclass
class Level:
    group: str   # "activity" or "pain"
    label: str
    value: float


def stored_levels(values: dict) -> list[Level]:
    """The pacing fact's levels as the decision log keeps them (not the daily series, which it does not keep):
    activity (latest day, 7-day mean, usual level, quota, the state's next target) and pain (latest, usual, the
    current flare's peak). Missing values are left out, never shown as zero."""
    out: list[Level] = []
    label, attr = NEXT_TARGET.get(values.get("state"), STEP_UP)  # type: ignore[arg-type]
    for group, name, text in (("activity", "latest_activity", "latest day"), ("activity", "mean_7d", "last 7 days"),
                              ("activity", "typical", "usual level"), ("activity", "quota", "quota"),
                              ("activity", attr, label),
                              ("pain", "pain_latest", "latest pain"), ("pain", "pain_usual", "usual pain"),
                              ("pain", "flare_peak_pain", "flare peak")):
        v = _number(values, name)
        if v is not None and not (group == "pain" and name == "flare_peak_pain" and
                                  values.get("state") not in CURRENT_FLARE):
            out.append(Level(group, text, v))
    return out


def levels_svg(levels: list[Level], activity_unit: str) -> Markup:
    """Horizontal bars, one group per scale (activity, pain 0-10); every text escaped."""
    if not levels:
        return Markup("")
    groups = [(g, [lv for lv in levels if lv.group == g]) for g in ("activity", "pain")]
    groups = [(g, lv) for g, lv in groups if lv]
    row, left, width = 22, 190, WIDTH
    height = TOP + sum(26 + row * len(lv) for _, lv in groups)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="Pacing levels at the time of the card; the same numbers are '
           f'in the table below" class="levels">']
    y = TOP
    for group, items in groups:
        top = 10.0 if group == "pain" else _nice(max(lv.value for lv in items))
        title = "pain (0-10)" if group == "pain" else f"activity ({activity_unit})"
        out.append(f'<text x="4" y="{y + 4}" font-size="13" font-weight="bold">{escape(title)}</text>')
        y += 12
        for lv in items:
            w = (width - left - 70) * max(lv.value, 0) / top
            colour = "#c53030" if group == "pain" else "#2b6cb0"
            out.append(f'<text x="{left - 8}" y="{y + 14}" font-size="12" text-anchor="end">{escape(lv.label)}</text>'
                       f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="14" fill="{colour}">'
                       f'<title>{escape(lv.label)}: {_fmt(lv.value)}</title></rect>'
                       f'<text x="{left + w + 4:.1f}" y="{y + 14}" font-size="12">{_fmt(lv.value)}</text>')
            y += row
        y += 14
    out.append("</svg>")
    return Markup("".join(out))
