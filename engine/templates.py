"""Safe card templates: text with {placeholders}, no code execution.

A placeholder is `{operand}` or `{operand op operand ...:format}` where an operand is a
number, `fact.attribute`, `fact.unit` or `param.NAME` (a parameter with a unit renders as "30 ng/mL";
in arithmetic it is its number), op is + - * /, and format is one
of `.Nf`, `d`, `%`-free Python number specs, `ago` (a number of days as "today", "1 day ago", "5 days ago"), or
`lines` (a list as Markdown bullets, detail only). Every placeholder has a known longest
rendering, so the longest possible summary is known when the rules load.
"""

from __future__ import annotations

import datetime as dt
import re

from fhir_adapter.facts import is_number

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FORMAT = re.compile(r"^(\.\d[fg]|d|\.0%|ago|lines|)$")
_OPERAND = re.compile(r"^(?:-?\d+(?:\.\d+)?|[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*|[a-z][a-z0-9_]*)$")
NUMBER_WIDTH = 12  # longest rendering of a number, and of "not recorded"
TEXT_WIDTH = 40  # strings (a drug name) are cut to this
LIST_WIDTH = 80  # lists (several drug names) are cut to this
LINE_WIDTH = 240  # one item of a list rendered as Markdown bullet lines ({fact.attr:lines}, detail only)
LINES_WIDTH = 10_000
MISSING = "not recorded"
# references that are not facts: the patient's reference and dates ("now.date", "now.in_28_days")
SPECIAL = re.compile(r"^(patient\.(reference|id)|now\.date|now\.in_\d+_days)$")


class TemplateError(ValueError):
    pass


class Quantity:
    """A parameter that carries a unit: `{param.threshold}` renders as "30 ng/mL"; in arithmetic
    (`{param.threshold * 2}`) and in FHIR values it is its number."""

    __slots__ = ("value", "unit")

    def __init__(self, value, unit: str):
        self.value = value
        self.unit = unit

    def __eq__(self, other):
        return isinstance(other, Quantity) and (self.value, self.unit) == (other.value, other.unit)

    def __repr__(self):
        return f"Quantity({self.value!r}, {self.unit!r})"


def display_unit(unit: str | None) -> str:
    """A UCUM unit as a clinician reads it: m[IU]/L -> mIU/L, {MME}/d -> MME/d; a bare annotation
    ({score}) or 1 is no unit at all."""
    if not unit or unit == "1" or re.fullmatch(r"\{[^{}]*\}", unit):
        return ""
    return re.sub(r"[{}\[\]]", "", unit)


def _number_of(value):
    return value.value if isinstance(value, Quantity) else value


class Placeholder:
    def __init__(self, text: str):
        self.text = text
        expr, _, fmt = text.partition(":")
        self.format = fmt.strip()
        if not _FORMAT.match(self.format):
            raise TemplateError(f"placeholder {{{text}}}: format '{self.format}' is not allowed (use .0f, .1f, d)")
        tokens = re.split(r"\s*([+\-*/])\s*", expr.strip())
        self.operands = tokens[0::2]
        self.ops = tokens[1::2]
        for operand in self.operands:
            if not _OPERAND.match(operand):
                raise TemplateError(f"placeholder {{{text}}}: '{operand}' is not a number, fact.attribute or param.NAME")
        if self.ops and any(o.startswith("now.") for o in self.operands):
            raise TemplateError(f"placeholder {{{text}}}: dates take no arithmetic")
        # each operand as (number, None) or (None, reference), decided once
        self._terms = [(float(o), None) if re.match(r"^-?\d", o) else (None, o) for o in self.operands]

    @property
    def references(self) -> list[str]:
        return [o for o in self.operands if not re.match(r"^-?\d", o)]

    def width(self, kinds: dict[str, str]) -> int:
        """Longest rendering; kinds maps a reference to 'number', 'text', 'list' or 'unit:<u>'."""
        if self.format == "lines":
            return LINES_WIDTH  # unbounded in practice: a bullet list belongs in the detail, never the summary
        if self.format == "ago":
            return NUMBER_WIDTH + len(" days ago")
        if len(self.operands) == 1:
            kind = kinds.get(self.operands[0], "number")
            if kind == "text":
                return TEXT_WIDTH
            if kind == "list":
                return LIST_WIDTH
            if kind.startswith("unit:"):
                return len(kind[5:])
            if kind.startswith("quantity:"):
                unit = display_unit(kind[9:])
                return NUMBER_WIDTH + (1 + len(unit) if unit else 0)
        return NUMBER_WIDTH

    def render(self, lookup) -> object:
        if len(self._terms) == 1:  # a lone operand renders as whatever it is (number, text, list, missing)
            number, ref = self._terms[0]
            return number if ref is None else lookup(ref)
        values = [number if ref is None else _number_of(lookup(ref)) for number, ref in self._terms]
        if any(not is_number(v) for v in values):
            return None
        result = values[0]
        for op, value in zip(self.ops, values[1:]):
            if op == "+":
                result += value
            elif op == "-":
                result -= value
            elif op == "*":
                result *= value
            elif value == 0:
                return None
            else:
                result /= value
        return result


class Template:
    def __init__(self, text: str):
        self.text = text
        self.parts: list[str | Placeholder] = []
        pos = 0
        for match in PLACEHOLDER.finditer(text):
            self.parts.append(text[pos:match.start()])
            self.parts.append(Placeholder(match.group(1)))
            pos = match.end()
        self.parts.append(text[pos:])
        literal = "".join(p for p in self.parts if isinstance(p, str))
        if "{" in literal or "}" in literal:
            raise TemplateError("unbalanced '{' or '}' in template")

    @property
    def placeholders(self) -> list[Placeholder]:
        return [p for p in self.parts if isinstance(p, Placeholder)]

    def max_length(self, kinds: dict[str, str]) -> int:
        return sum(len(p) if isinstance(p, str) else p.width(kinds) for p in self.parts)

    def render(self, lookup, escape=None) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(format_value(part.render(lookup), part.format, escape))
        return "".join(out)

    def render_value(self, lookup):
        """A template that is exactly one numeric placeholder renders as a number (FHIR values)."""
        if len(self.parts) == 3 and self.parts[0] == "" and self.parts[2] == "":
            value = _number_of(self.parts[1].render(lookup))
            if is_number(value):
                text = format_value(value, self.parts[1].format)
                return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
        return self.render(lookup)


def format_value(value, fmt: str = "", escape=None) -> str:
    if value is None:
        return MISSING
    if isinstance(value, Quantity):
        unit = display_unit(value.unit)
        text = format_value(value.value, fmt)
        return f"{text} {escape(unit) if escape else unit}" if unit and value.value is not None else text
    if fmt == "lines":  # a list as Markdown bullets, one item per line, each item cut on its own
        items = value if isinstance(value, list) else [value]
        return "\n".join("- " + (escape(_cut(plain_inline(str(v)), LINE_WIDTH)) if escape else _cut(str(v), LINE_WIDTH))
                         for v in items)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if is_number(value) and fmt == "ago":  # days as words: never "1 days ago"
        days = round(value)
        return "today" if days == 0 else "1 day ago" if days == 1 else f"{format_value(days, 'd')} days ago"
    if is_number(value):
        if fmt == "d":
            text = f"{round(value):d}"
        elif fmt:
            text = format(value, fmt)
        else:
            text = f"{value:.4g}" if not float(value).is_integer() else f"{int(value)}"
        if len(text) > NUMBER_WIDTH:
            text = f"{value:.3g}"
        return text
    # Text shown to people (escape given: a card's summary, detail, labels) is one inline run, defanged before
    # it is cut, so the cut bounds what is shown; text for FHIR values (no escape) is kept as it is.
    show = plain_inline if escape else (lambda t: t.replace("\n", " "))
    if isinstance(value, list):
        text = _cut(", ".join(show(str(v)) for v in value), LIST_WIDTH)
    elif isinstance(value, (dt.date, dt.datetime)):
        text = value.isoformat()
    else:
        text = _cut(show(str(value)), TEXT_WIDTH)
    return escape(text) if escape else text


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


# Every ASCII punctuation character (CommonMark lets each be backslash-escaped, and escaped it is only text).
_MD_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")
# C0/C1 controls, zero-width and bidirectional formatting characters: invisible, or they reorder what is shown.
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
# A zero-width space after these (when more text follows) stops every autolinker: scheme URLs (http://,
# javascript:), www. and bare domains (evil.com, 2130706433/login after http:), e-mail addresses (a@b.c).
_LINK_JOINT = re.compile(r"([:@]|/(?=/)|\.(?=[^\W\d_]))(?=[^\s\u200b\u2026])")  # a decimal point stays as it is
ZWSP = "\u200b"
_WWW = re.compile(r"(?i)(ww)(w)")


def plain_inline(text: str) -> str:
    """Patient text as one inline run of plain text: every line break and whitespace run folded to one space
    (no Markdown block can start: heading, list, thematic break, setext underline, table, code block),
    invisible characters dropped, and link-shaped text broken with zero-width spaces so that no renderer or
    EHR turns it into a clickable link. Idempotent."""
    text = " ".join(_INVISIBLE.sub("", text).split())
    text = _LINK_JOINT.sub(r"\1" + ZWSP, text)
    # and, should an EHR render the (plain-text) summary as Markdown: no <autolink>, no [text](url), no www.
    return _WWW.sub(r"\1" + ZWSP + r"\2", text.replace("<", "<" + ZWSP).replace("](", "]" + ZWSP + "("))


def escape_markdown(text: str) -> str:
    """Patient data shown in Markdown (a card's detail) must not become markup: plain_inline, then every ASCII
    punctuation character escaped (no emphasis, link, image, HTML, entity, code span or table cell)."""
    return _MD_SPECIAL.sub(r"\\\1", plain_inline(text))
