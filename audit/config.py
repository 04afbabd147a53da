"""Where the audit log lives and which key pseudonymises patients."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

ENV_URL = "PACECDS_DATABASE_URL"
ENV_KEY = "PACECDS_AUDIT_KEY"
ENV_VAR_DIR = "PACECDS_VAR_DIR"
DB_FILE = "pacecds-audit.db"
KEY_FILE = "pacecds-audit.key"
ENV_SQLITE_SYNC = "PACECDS_AUDIT_SQLITE_SYNCHRONOUS"
SQLITE_SYNC = ("FULL", "NORMAL")


def sqlite_synchronous() -> str:
    """SQLite's `synchronous` for the decision log (WAL mode): FULL (the default) makes every commit durable
    through a power loss before the card leaves; NORMAL survives a crash of pacecds or the database but may
    lose the last commits on a power loss or OS crash (docs/audit-and-governance.md)."""
    value = (os.environ.get(ENV_SQLITE_SYNC) or "FULL").strip().upper()
    if value not in SQLITE_SYNC:
        raise ValueError(f"{ENV_SQLITE_SYNC} must be FULL or NORMAL, not {value!r}")
    return value


class MissingAuditKey(FileNotFoundError):
    """A reader asked for the audit key and there is none (readers never create one)."""


def var_dir(create: bool = True) -> Path:
    """PACECDS_VAR_DIR, else var/; created unless `create` is false (readers never create it)."""
    d = Path(os.environ.get(ENV_VAR_DIR) or "var")
    if create:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)  # the log, its key, the jti store: owner only
    return d


def database_url(url: str | None = None, *, create: bool = True) -> str:
    """The store's URL: `url`, else PACECDS_DATABASE_URL, else SQLite under var/ (which is
    created unless `create` is false)."""
    if url:
        return url
    env = os.environ.get(ENV_URL)
    if env:
        return env
    return "sqlite:///" + str((var_dir(create) / DB_FILE).resolve())


def url_source(url: str | None = None) -> str:
    """Where database_url(url) came from, in words, for messages."""
    if url:
        return "from --database-url"
    if os.environ.get(ENV_URL):
        return f"from {ENV_URL}"
    return f"{ENV_URL} is not set"


def describe_url(url: str) -> str:
    """A store URL for people: a SQLite file's path, else the URL with any password masked."""
    import sqlalchemy as sa
    try:
        u = sa.engine.make_url(url)
    except Exception:  # noqa: BLE001 - unparsable: say only that much, it may hold a secret
        return "(an unparsable database URL)"
    if u.get_backend_name() == "sqlite":
        return u.database or ":memory:"
    if any(k.lower() == "password" for k in u.query):
        u = u.update_query_dict({k: "***" for k in u.query if k.lower() == "password"})
    return u.render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")


def load_audit_key(path: Path | None = None, *, create: bool = True) -> bytes:
    """The HMAC key for patient pseudonyms.

    PACECDS_AUDIT_KEY wins; otherwise a random per-install key file under var/ is
    created once (atomically, so concurrent workers agree on one key) and reused.
    With `create` false (readers) a missing key file raises MissingAuditKey instead.
    """
    env = os.environ.get(ENV_KEY)
    if env:
        if len(env) < 16:
            raise ValueError(f"{ENV_KEY} must be at least 16 characters")
        return env.encode("utf-8")
    path = path or (var_dir(create) / KEY_FILE)
    try:
        return _read_key(path)
    except FileNotFoundError:
        if not create:
            raise MissingAuditKey(f"no audit key at {path} ({ENV_KEY} is not set)") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process won the race: then use its key
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    text = path.read_text().strip()
    if len(text) < 32:
        raise ValueError(f"audit key file {path} is too short")
    return text.encode("utf-8")
