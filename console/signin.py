"""Signed-in mode: who is signed in, which role each page needs, HTTPS, and a bound on password guessing.

Used when PACECDS_CONSOLE_USERS is set (docs/console.md "Who may use it"). The session is Flask's signed cookie
(PACECDS_CONSOLE_SECRET_KEY): it holds the user name, the user's fingerprint (so a changed password or role, or a
removed user, ends every earlier session at its next request), the sign-in time and the CSRF token.
"""
from __future__ import annotations

import collections
import threading
import time

from flask import Request, session

from .users import User, UserDirectory

SESSION_HOURS = 8  # a working day; after that the user signs in again
# Pages each role may open. Every console endpoint must be listed: one that is not answers 403 for everyone
# (tests/console/test_signin.py checks the table covers the blueprint).
PUBLIC_ENDPOINTS = frozenset({"console.signin_page", "console.signin_post", "console.static"})
ENDPOINT_ROLES = {
    "console.home": "clinician",
    "console.signout": "clinician",
    "console.workbench": "clinician",
    "console.workbench_run": "clinician",
    "console.rules": "clinician",
    "console.rule": "clinician",
    "console.releases": "clinician",
    "console.card": "clinician",
    "console.audit": "auditor",
    "console.decision": "auditor",
    "console.verify": "auditor",
    "console.stats": "auditor",
}


def is_https(req: Request, trust_forwarded_proto: bool) -> bool:
    """TLS to this process, or (only when configured) a TLS proxy's `X-Forwarded-Proto: https`. The proxy must
    set the header itself (overwriting what a client sent); the last value is the one the nearest proxy added."""
    if req.is_secure:
        return True
    if not trust_forwarded_proto:
        return False
    forwarded = req.headers.get("X-Forwarded-Proto", "")
    return forwarded.split(",")[-1].strip().lower() == "https"


def current_user(users: UserDirectory) -> User | None:
    name = session.get("user")
    if not isinstance(name, str):
        return None
    user = users.get(name)
    if user is None or session.get("fp") != user.fingerprint:
        return None
    started = session.get("at")
    if not isinstance(started, (int, float)) or time.time() - started > SESSION_HOURS * 3600:
        return None
    return user


def start_session(user: User, csrf: str) -> None:
    session.clear()  # nothing of the signed-out session carries over
    session.update({"user": user.username, "fp": user.fingerprint, "at": int(time.time()), "csrf": csrf})
    session.permanent = True


class FailedSignIns:
    """Failed sign-ins per user name and per caller address in a sliding window; past the limit, sign-in for
    that name or address is refused without checking the password until the window has passed. Memory is
    bounded (the least recently failed keys are forgotten first). Per process: with N gunicorn workers a guesser
    gets at most N times the limit per window, still a handful of guesses an hour against a 12-character
    password hashed with argon2id."""

    def __init__(self, per_user: int = 5, per_address: int = 20, window_s: float = 15 * 60,
                 max_keys: int = 10_000):
        self.per_user, self.per_address, self.window_s, self.max_keys = per_user, per_address, window_s, max_keys
        self._fails: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._fails.get(key, ()) if now - t < self.window_s]
        if times:
            self._fails[key] = times
        else:
            self._fails.pop(key, None)
        return times

    def blocked_for(self, username: str, address: str) -> float:
        """Seconds until this name and address may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            wait = 0.0
            for key, limit in ((_user_key(username), self.per_user), (f"a:{address}", self.per_address)):
                times = self._recent(key, now)
                if len(times) >= limit:
                    wait = max(wait, self.window_s - (now - times[-limit]))
            return wait

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (_user_key(username), f"a:{address}"):
                times = self._recent(key, now)
                times.append(now)
                self._fails[key] = times[-self.per_address:]
                self._fails.move_to_end(key)
            while len(self._fails) > self.max_keys:
                self._fails.popitem(last=False)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._fails.pop(_user_key(username), None)


def _user_key(username: str) -> str:
    # at most a user name's length (64): a posted megabyte "name" must not become a megabyte key
    return f"u:{username[:64].lower()}"
