"""Is a URL on a given FHIR server? Compared on the URL as an HTTP client will send it.

`https://ehr.example.org/fhir/../admin` is sent as `/admin` (dot segments are removed before sending), and
`%2e%2e` or a backslash may be decoded or folded by the server, so a URL whose path holds any of them is never
taken to be under a base. Scheme and host compare case-insensitively, with default ports made explicit; a URL
with user information, a query or a fragment is not a base URL at all.
"""
from __future__ import annotations

import posixpath
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_and_path(url: str) -> tuple[tuple[str, str, int], str] | None:
    try:
        u = urlsplit(url.strip())
        port = u.port
    except ValueError:
        return None
    scheme = u.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not u.hostname or u.username is not None or u.password is not None:
        return None
    path = u.path or "/"
    lowered = path.lower()
    if "\\" in path or "%2e" in lowered or "%2f" in lowered or "%5c" in lowered:
        return None
    segments = path.split("/")
    if any(seg in (".", "..") for seg in segments) or "//" in path:
        return None
    path = posixpath.normpath(path) if path != "/" else "/"
    return (scheme, u.hostname.lower().rstrip("."), port or _DEFAULT_PORTS[scheme]), path.rstrip("/")


def url_within(url: str, base: str) -> bool:
    """True if `url` is `base` or below it (on a path-segment boundary). Query strings of `url` are allowed
    (a search); the base itself must be a plain base URL."""
    candidate = _origin_and_path(url.split("?", 1)[0].split("#", 1)[0])
    allowed = _origin_and_path(base)
    if candidate is None or allowed is None:
        return False
    (origin, path), (base_origin, base_path) = candidate, allowed
    return origin == base_origin and (path == base_path or path.startswith(base_path + "/"))
