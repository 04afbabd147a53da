"""The console's users: a file of user names, roles and argon2id password hashes (argon2-cffi).

Local users rather than OpenID Connect because no identity provider is reachable where pacecds is built and
tested, so OIDC could not be tested against a real one (docs/console.md). The file holds no password, only
argon2 hashes, and is read again when it changes, so `pacecds console-user` takes effect without a restart.

    users:
      - {username: alice, role: clinician, hash: "$argon2id$v=19$m=65536,t=3,p=4$..."}
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ROLES = ("clinician", "auditor")  # an auditor may do everything a clinician may, and read the decision log
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024  # hashing is costly: a megabyte "password" is refused before it is hashed

_hasher = PasswordHasher()  # argon2id with the library's defaults (RFC 9106's second recommended option)


class UsersError(Exception):
    """The users file or a user's entry is not usable (message says what and where)."""


@dataclass(frozen=True)
class User:
    username: str
    role: str
    hash: str

    @property
    def fingerprint(self) -> str:
        """Changes when the password (hash) or role changes: a session signed in before is then void."""
        return hashlib.sha256(f"{self.role}\0{self.hash}".encode()).hexdigest()[:32]

    def may(self, role: str) -> bool:
        return self.role == role or self.role == "auditor"


def hash_password(password: str) -> str:
    check_password(password)
    return _hasher.hash(password)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise UsersError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise UsersError(f"the password must have at most {MAX_PASSWORD_CHARS} characters")


def read_users(path: str | Path) -> dict[str, User]:
    """Parse and check a users file; a missing file is an error (the setting names it on purpose)."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsersError(f"{where}: cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text) if text.strip() else {"users": []}  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise UsersError(f"{where}: not valid YAML/JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("users"), list):
        raise UsersError(f"{where}: expected an object with a 'users' list")
    users: dict[str, User] = {}
    for i, entry in enumerate(data["users"]):
        at = f"{where}: users[{i}]"
        if not isinstance(entry, dict):
            raise UsersError(f"{at}: expected an object with username, role and hash")
        name, role, hashed = entry.get("username"), entry.get("role"), entry.get("hash")
        if not isinstance(name, str) or not USERNAME.match(name):
            raise UsersError(f"{at}: 'username' must be 1-64 letters, digits or . _ @ - (got {name!r})")
        if name in users:
            raise UsersError(f"{at}: duplicate username {name!r}")
        if role not in ROLES:
            raise UsersError(f"{at}: 'role' must be one of {', '.join(ROLES)} (got {role!r})")
        if not isinstance(hashed, str) or not hashed.startswith("$argon2"):
            raise UsersError(f"{at}: 'hash' must be an argon2 hash (made by `pacecds console-user`)")
        users[name] = User(name, role, hashed)
    return users


def write_users(path: str | Path, users: dict[str, User]) -> None:
    """Replace the file atomically (a reader sees the old or the new list, never half of one), mode 0600."""
    path = Path(path)
    body = {"users": [{"username": u.username, "role": u.role, "hash": u.hash} for u in users.values()]}
    text = "# pacecds console users (argon2id hashes; edit with `pacecds console-user`)\n" + \
        yaml.safe_dump(body, sort_keys=False, width=200)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".users-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def set_user(path: str | Path, username: str, password: str, role: str | None = None, *,
             create: bool) -> User:
    """Add a user (create=True; refused if present) or set an existing user's password (and role if given)."""
    if not USERNAME.match(username):
        raise UsersError(f"user name {username!r}: 1-64 letters, digits or . _ @ -")
    if role is not None and role not in ROLES:
        raise UsersError(f"role must be one of {', '.join(ROLES)}")
    users = read_users(path) if Path(path).exists() else {}
    old = users.get(username)
    if create and old is not None:
        raise UsersError(f"user {username!r} exists already (set a new password with `console-user passwd`)")
    if not create and old is None:
        raise UsersError(f"no user {username!r} in {path}")
    new_role = role or (old.role if old else None)
    if new_role is None:
        raise UsersError("a new user needs --role")
    user = User(username, new_role, hash_password(password))
    users[username] = user
    write_users(path, users)
    return user


def remove_user(path: str | Path, username: str) -> None:
    users = read_users(path)
    if users.pop(username, None) is None:
        raise UsersError(f"no user {username!r} in {path}")
    write_users(path, users)


class UserDirectory:
    """The users file as the console reads it: re-read when its modification time or size changes."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users = read_users(path)  # a broken file stops the start, not the first sign-in
        self._stamp = self._stat()
        # verified against when the name is unknown, so a wrong name costs the same time as a wrong password
        self._dummy = _hasher.hash(os.urandom(16).hex())

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def users(self) -> dict[str, User]:
        stamp = self._stat()
        if stamp != self._stamp:
            with self._lock:
                try:
                    self._users = read_users(self.path)
                except UsersError:
                    self._users = {}  # unreadable now: nobody signs in (fail closed) until it is fixed
                self._stamp = stamp
        return self._users

    def get(self, username: str) -> User | None:
        return self.users().get(username)

    def authenticate(self, username: str, password: str) -> User | None:
        user = self.get(username)
        if len(password) > MAX_PASSWORD_CHARS:
            return None
        try:
            _hasher.verify(user.hash if user else self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return user

