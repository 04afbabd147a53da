"""Parse a console page and list what could run or load: script elements, event-handler attributes, javascript:
URLs, external resources (the console must work offline)."""
from html.parser import HTMLParser


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    c.close()
    return c


def dangers(html: str) -> list[str]:
    out = []
    for tag, attrs in parse(html).tags:
        csp = attrs.get("http-equiv", "").lower() == "content-security-policy"  # it can only forbid more
        if tag in ("script", "iframe", "object", "embed", "base", "meta") and not (
                tag == "meta" and (set(attrs) <= {"charset", "name", "content"} or csp)):
            out.append(f"<{tag}>")
        for name, value in attrs.items():
            if name.startswith("on"):
                out.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action", "formaction", "xlink:href") and \
                    value.strip().lower().startswith(("javascript:", "data:text/html", "vbscript:")):
                out.append(f"<{tag} {name}={value}>")
            if name in ("src",) or (tag == "link" and name == "href"):
                if value.startswith(("http://", "https://", "//")):
                    out.append(f"external resource <{tag} {name}={value}>")
    return out


def text(html: str) -> str:
    return "".join(parse(html).text)
