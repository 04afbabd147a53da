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


def var_dir() -> Path:
    d = Path(os.environ.get(ENV_VAR_DIR) or "var")
    d.mkdir(parents=True, exist_ok=True)
    return d


def database_url(url: str | None = None) -> str:
    if url:
        return url
    env = os.environ.get(ENV_URL)
    if env:
        return env
    return "sqlite:///" + str((var_dir() / DB_FILE).resolve())


def load_audit_key(path: Path | None = None) -> bytes:
    """The HMAC key for patient pseudonyms.

    PACECDS_AUDIT_KEY wins; otherwise a random per-install key file under var/ is
    created once (atomically, so concurrent workers agree on one key) and reused.
    """
    env = os.environ.get(ENV_KEY)
    if env:
        if len(env) < 16:
            raise ValueError(f"{ENV_KEY} must be at least 16 characters")
        return env.encode("utf-8")
    path = path or (var_dir() / KEY_FILE)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
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
