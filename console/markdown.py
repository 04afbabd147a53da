"""Card detail Markdown rendered safely: everything is escaped first, then a small subset is turned into tags.

Allowed: paragraphs, `-`/`*`/`1.` lists, **bold**, *italic* / _italic_, `code`, [text](https://...) links and
headings (shown as bold paragraphs). Raw HTML in the text stays text: no tag, attribute or URL scheme other
than http(s) can come out of here, whatever the patient's record or a rule author wrote.
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


def _inline(text: str) -> str:
    """Inline markup on already-escaped text (so every < > & " ' is an entity here)."""
    codes: list[str] = []

    def keep_code(m: re.Match) -> str:
        codes.append(f"<code>{m.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = _CODE.sub(keep_code, text)
    text = _LINK.sub(lambda m: f'<a href="{m.group(2)}" rel="noopener noreferrer">{m.group(1)}</a>', text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(lambda m: f"<em>{m.group(1) or m.group(2)}</em>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], text)


def render_markdown(text: object) -> Markup:
    if text is None:
        return Markup("")
    escaped = str(escape(str(text))).replace("\x00", "")
    # markupsafe escapes ' and " as entities; an escaped URL can no longer close its attribute
    blocks: list[str] = []
    para: list[str] = []
    items: list[str] = []
    list_tag = ""

    def flush_para() -> None:
        if para:
            blocks.append("<p>" + _inline(" ".join(s.strip() for s in para)) + "</p>")
            para.clear()

    def flush_list() -> None:
        nonlocal list_tag
        if items:
            blocks.append(f"<{list_tag}>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + f"</{list_tag}>")
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
            blocks.append("<p><strong>" + _inline(heading.group(1)) + "</strong></p>")
        elif items:
            items[-1] += " " + line.strip()  # a continuation line of a list item
        else:
            para.append(line)
    flush_para()
    flush_list()
    return Markup("\n".join(blocks))
