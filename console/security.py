"""CSRF protection, response headers and the local-use check of the console.

Local use (no PACECDS_CONSOLE_USERS): served only where the service itself trusts nobody it cannot see; without
trusted issuers the app answers only callers on this machine (server.py), and the console checks the same again.
Signed-in use (console/signin.py): the CSRF token lives in the signed session instead of its own cookie.
"""
from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from flask import Request, Response, current_app, g, request, session

from service.config import is_loopback

CSRF_COOKIE = "pacecds_console_csrf"
CSRF_FIELD = "csrf_token"

# No script at all; styles only from our own static file; SVG charts are inline markup (presentation
# attributes, no style attributes), so nothing inline needs allowing.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")


class Forbidden(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def caller_is_local(req: Request) -> bool:
    addr = req.remote_addr
    return not addr or is_loopback(addr)  # no address: a unix socket, local by nature


def signin_mode() -> bool:
    return (current_app.extensions.get("pacecds_console") or {}).get("mode") == "signin"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_token() -> str:
    """The token of this browser. Signed in: kept in the signed session (any worker can check it, the secret
    is shared). Local: a double-submit cookie (no server-side secret at all)."""
    if signin_mode():
        token = session.get("csrf")
        if not isinstance(token, str) or len(token) < 32:
            token = session["csrf"] = new_token()
        return token
    token = getattr(g, "console_csrf", None)
    if token is None:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        token = cookie if 32 <= len(cookie) <= 128 and cookie.replace("-", "").replace("_", "").isalnum() else None
        if token is None:
            token = secrets.token_urlsafe(32)
            g.console_csrf_new = True
        g.console_csrf = token
    return token


def check_csrf() -> None:
    """Every POST: the form's token equals the cookie's, and a browser-sent Origin (or Referer) is this host."""
    cookie = session.get("csrf", "") if signin_mode() else request.cookies.get(CSRF_COOKIE, "")
    cookie = cookie if isinstance(cookie, str) else ""
    sent = request.form.get(CSRF_FIELD, "")
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise Forbidden(400, "The form's security token is missing or stale: reload the page and submit again.")
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if origin and origin != "null":
        parts = urlsplit(origin)
        # the scheme too, except behind a TLS proxy (signed-in mode), where this process sees http
        same = parts.netloc == request.host and (parts.scheme == request.scheme or signin_mode())
        if not same:
            raise Forbidden(403, "The form was sent from another site.")


def finish(response: Response) -> Response:
    if getattr(g, "console_csrf_new", False):
        response.set_cookie(CSRF_COOKIE, g.console_csrf, httponly=True, samesite="Strict", path="/console",
                            secure=request.is_secure)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    # same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` with the console's own form
    # posts, which local mode refuses as cross-site (server.py); same-origin keeps the real Origin on this
    # site's posts and still sends no Referer (and a null Origin) to any other site
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"  # pages hold patient data
    return response
