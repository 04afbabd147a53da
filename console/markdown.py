"""Card detail Markdown rendered safely: everything is escaped first, then a small subset is turned into tags.

Allowed: paragraphs, `-`/`*`/`1.` lists, **bold**, *italic* / _italic_, `code`, [text](https://...) links and
headings (shown as bold paragraphs), and backslash escapes of ASCII punctuation (`\\-` shows `-` and is never
markup: the engine escapes patient text in card details this way). Raw HTML in the text stays text: no tag,
attribute or URL scheme other than http(s) can come out of here, whatever the patient's record or a rule author
wrote.
"""
from __future__ import annotations

import re

from markupsafe import Markup, escape

_LINK = re.compile(r"\[([^\]\n]{1,300})\]\((https?://[^\s()<>\"']{1,2000})\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])|(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_CODE = re.compile(r"`([^`\n]{1,500})`")
_BULLET = re.compile(r"^\s{0,3}[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s{0,3}\d{1,3}[.)]\s+(.*)$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*)$")
_BACKSLASH = re.compile(r"\\([!-/:-@\[-`{-~])")  # CommonMark: a backslash before ASCII punctuation
_KEPT = re.compile("\x01(\\d+)\x01")


def _protect(text: str, kept: list[str]) -> str:
    """Each backslash-escaped punctuation character becomes a placeholder no markup rule matches."""
    def keep(m: re.Match) -> str:
        kept.append(m.group(1))
        return f"\x01{len(kept) - 1}\x01"
    return _BACKSLASH.sub(keep, text)


def _restore(text: str, kept: list[str], literal: bool = False) -> str:
    """The placeholders back as the (HTML-escaped) characters; in code spans with their backslash, as written."""
    return _KEPT.sub(lambda m: ("\\" if literal else "") + str(escape(kept[int(m.group(1))])), text)


def _inline(text: str, kept: list[str]) -> str:
    """Inline markup on already-escaped text (so every < > & " ' is an entity here)."""
    codes: list[str] = []

    def keep_code(m: re.Match) -> str:
        codes.append(f"<code>{_restore(m.group(1), kept, literal=True)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = _CODE.sub(keep_code, text)
    text = _LINK.sub(lambda m: f'<a href="{m.group(2)}" rel="noopener noreferrer">{m.group(1)}</a>', text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(lambda m: f"<em>{m.group(1) or m.group(2)}</em>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], text)


def render_markdown(text: object) -> Markup:
    if text is None:
        return Markup("")
    kept: list[str] = []
    # escapes are taken out before HTML escaping (so `\<` is the character <, shown as text), placeholders after
    escaped = str(escape(_protect(str(text).replace("\x00", "").replace("\x01", ""), kept)))
    # markupsafe escapes ' and " as entities; an escaped URL can no longer close its attribute
    blocks: list[str] = []
    para: list[str] = []
    items: list[str] = []
    list_tag = ""

    def flush_para() -> None:
        if para:
            blocks.append("<p>" + _inline(" ".join(s.strip() for s in para), kept) + "</p>")
            para.clear()

    def flush_list() -> None:
        nonlocal list_tag
        if items:
            blocks.append(f"<{list_tag}>" + "".join(f"<li>{_inline(i, kept)}</li>" for i in items) + f"</{list_tag}>")
            items.clear()
        list_tag = ""

    for line in escaped.splitlines():
        if not line.strip():
            flush_para()
            flush_list()
            continue
        bullet, numbered, heading = _BULLET.match(line), _NUMBERED.match(line), _HEADING.match(line)
        if bullet or numbered:
            flush_para()
            tag = "ul" if bullet else "ol"
            if list_tag and list_tag != tag:
                flush_list()
            list_tag = tag
            items.append((bullet or numbered).group(1))  # type: ignore[union-attr]
        elif heading:
            flush_para()
            flush_list()
            blocks.append("<p><strong>" + _inline(heading.group(1), kept) + "</strong></p>")
        elif items:
            items[-1] += " " + line.strip()  # a continuation line of a list item
        else:
            para.append(line)
    flush_para()
    flush_list()
    return Markup(_restore("\n".join(blocks), kept))
