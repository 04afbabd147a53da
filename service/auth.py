"""JWT bearer authentication of CDS clients (CDS Hooks 2.0 §Trusting CDS Clients, best-practices §JWT).

Order of checks: header shape (alg allowlist, typ, kid) -> issuer allowlist -> key source (inline JWKS or an
allowlisted jku, never any other URL) -> signature, aud, exp/iat/nbf with small skew -> jti replay.
Every failure is a 401 with no detail for the caller; the reason is logged (never the token itself).
"""
from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import jwt
import requests
import yaml

from .config import ConfigError, ServiceConfig
from .metrics import metrics
from .urls import url_within

log = logging.getLogger("pacecds.auth")

MAX_JWKS_BYTES = 64 * 1024
JWKS_REFETCH_MIN_INTERVAL_S = 30  # an attacker spraying unknown kids must not turn us into a fetch loop
JWKS_FAILURE_BACKOFF_S = 10       # a JWKS host that is down is not hammered by every incoming call
MAX_TOKEN_BYTES = 16 * 1024


class AuthError(Exception):
    """Authentication failed. str(e) is for the log only, never for the response; `reason` is its class for
    the metrics (service/metrics.py TOKEN_REASONS)."""

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- trusted issuers

@dataclass
class TrustedIssuer:
    iss: str
    jwks: dict | None = None
    jkus: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    fhir_servers: tuple[str, ...] = ()  # when set, the only fhirServer base URLs this client may make us call


def load_trusted_issuers(path: str | None = None, data: list[dict] | dict | None = None,
                         production: bool = False) -> dict[str, TrustedIssuer]:
    """Parse and check the trusted issuers file: {"issuers": [{"iss", "jwks" | "jku", "tenants"?}]}."""
    where = path or "trusted issuers"
    if data is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{where}: cannot read: {e.strerror}") from None
        try:
            data = yaml.safe_load(text)  # YAML is a superset of JSON: one loader for both
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: not valid YAML/JSON: {e}") from None
    if isinstance(data, list):
        data = {"issuers": data}
    if not isinstance(data, dict) or not isinstance(data.get("issuers"), list):
        raise ConfigError(f"{where}: expected an object with an 'issuers' list")
    issuers: dict[str, TrustedIssuer] = {}
    for i, entry in enumerate(data["issuers"]):
        at = f"{where}: issuers[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("iss"), str) or not entry["iss"]:
            raise ConfigError(f"{at}: 'iss' (a non-empty string) is required")
        iss = entry["iss"]
        if iss in issuers:
            raise ConfigError(f"{at}: duplicate iss {iss!r}")
        jwks = entry.get("jwks")
        jku = entry.get("jku")
        jkus = tuple([jku] if isinstance(jku, str) else (jku or []))
        if jwks is None and not jkus:
            raise ConfigError(f"{at}: give the issuer's keys inline ('jwks') or an allowlisted 'jku'")
        if jwks is not None:
            keys = jwks.get("keys") if isinstance(jwks, dict) else None
            if not isinstance(keys, list) or not keys:
                raise ConfigError(f"{at}: 'jwks' must be a JWK Set with a non-empty 'keys' list")
            if not _usable_keys(jwks):
                raise ConfigError(f"{at}: 'jwks' holds no usable EC/RSA signature key with a 'kid'")
        for u in jkus:
            if not isinstance(u, str) or not (u.startswith("https://") or
                                              (not production and u.startswith("http://"))):
                raise ConfigError(f"{at}: jku {u!r} must be an https URL")
        tenants = entry.get("tenants") or ()
        if isinstance(tenants, str):
            tenants = (tenants,)
        servers = entry.get("fhir_servers") or ()
        if isinstance(servers, str):
            servers = (servers,)
        for u in servers:
            if not isinstance(u, str) or not u.startswith(("https://", "http://")):
                raise ConfigError(f"{at}: fhir_servers entry {u!r} must be an http(s) URL")
        issuers[iss] = TrustedIssuer(iss=iss, jwks=jwks, jkus=jkus, tenants=tuple(tenants),
                                     fhir_servers=tuple(u.rstrip("/") for u in servers))
    if not issuers:
        raise ConfigError(f"{where}: the 'issuers' list is empty")
    return issuers


def _usable_keys(jwks: dict) -> dict[str, dict]:
    """kid -> JWK for asymmetric signature keys only (an 'oct' key would enable HMAC key confusion)."""
    out: dict[str, dict] = {}
    for k in jwks.get("keys", []) if isinstance(jwks, dict) else []:
        if not isinstance(k, dict) or k.get("kty") not in ("EC", "RSA"):
            continue
        if k.get("use", "sig") != "sig" or not isinstance(k.get("kid"), str):
            continue
        if any(p in k for p in ("d", "p", "q", "dp", "dq", "qi")):
            continue  # a private key in a trust list is a misconfiguration; never use it
        out[k["kid"]] = k
    return out


# --------------------------------------------------------------------------- JWKS fetching (jku)

class JwksCache:
    """Fetches allowlisted jku URLs, caches them, refetches at most once per interval on an unknown kid."""

    def __init__(self, ttl_s: int = 3600, timeout_s: float = 2.0,
                 fetch: Callable[[str, float], dict] | None = None):
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._fetch = fetch or _http_get_jwks
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, dict[str, dict]]] = {}
        self._last_miss_refetch: dict[str, float] = {}
        self._last_failure: dict[str, float] = {}

    def key(self, jku: str, kid: str) -> dict | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(jku)
        if cached is None or now - cached[0] >= self.ttl_s:
            with self._lock:
                if now - self._last_failure.get(jku, -1e9) < JWKS_FAILURE_BACKOFF_S:
                    return cached[1].get(kid) if cached else None  # recently failed: keep stale keys, no fetch
            keys = self._refresh(jku)
            if keys is None and cached:
                return cached[1].get(kid)  # the host is down: stale keys are better than locking every EHR out
            return keys.get(kid) if keys is not None else None
        if kid in cached[1]:
            return cached[1][kid]
        # Unknown kid: the client may have rotated its keys, so refetch once; but at most once per interval,
        # or a caller spraying random kids would turn us into a fetch loop against the EHR.
        with self._lock:
            if now - self._last_miss_refetch.get(jku, -1e9) < JWKS_REFETCH_MIN_INTERVAL_S:
                return None
            self._last_miss_refetch[jku] = now
        keys = self._refresh(jku)
        return keys.get(kid) if keys is not None else None

    def _refresh(self, jku: str) -> dict[str, dict] | None:
        try:
            keys = _usable_keys(self._fetch(jku, self.timeout_s))
        except Exception as e:  # network, TLS, JSON: all mean "no key"
            log.warning("jwks fetch failed for allowlisted jku %s: %s", jku, type(e).__name__)
            with self._lock:
                self._last_failure[jku] = time.monotonic()
            return None
        with self._lock:
            self._cache[jku] = (time.monotonic(), keys)
        return keys


def _http_get_jwks(url: str, timeout_s: float) -> dict:
    # No redirects: a redirect could send us to a host that is not on the allowlist.
    with requests.get(url, timeout=timeout_s, allow_redirects=False, stream=True,
                      headers={"Accept": "application/json"}) as r:
        if r.status_code != 200:
            raise IOError(f"HTTP {r.status_code}")
        # Read as it arrives, with a deadline for the whole body: a host dripping bytes must not hold the
        # request thread (each read waits at most timeout_s; all of them together at most timeout_s more).
        deadline = time.monotonic() + timeout_s
        body = b""
        while len(body) <= MAX_JWKS_BYTES:
            if time.monotonic() > deadline:
                raise IOError("JWKS host too slow")
            chunk = r.raw.read1(MAX_JWKS_BYTES + 1 - len(body), decode_content=True)
            if not chunk:
                break
            body += chunk
        if len(body) > MAX_JWKS_BYTES:
            raise IOError("JWKS too large")
        return json.loads(body)


# --------------------------------------------------------------------------- jti replay store

class MemoryReplayStore:
    """jti store for a single process (tests, --dev, one worker)."""

    def __init__(self):
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def add(self, iss: str, jti: str, expires_at: float) -> bool:
        """Record the jti; False if it was already seen and not yet expired."""
        now = time.time()
        with self._lock:
            if len(self._seen) > 1000:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            exp = self._seen.get((iss, jti))
            if exp is not None and exp > now:
                return False
            self._seen[(iss, jti)] = expires_at
            return True


class SqliteReplayStore:
    """jti store shared by every worker process on a host (gunicorn forks several)."""

    def __init__(self, path: str):
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # owner only (SQLite's -wal/-shm follow)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS jti (iss TEXT NOT NULL, jti TEXT NOT NULL, "
                       "expires_at REAL NOT NULL, PRIMARY KEY (iss, jti))")

    def _connect(self):
        return sqlite3.connect(self.path, timeout=5, isolation_level=None)

    def add(self, iss: str, jti: str, expires_at: float) -> bool:
        now = time.time()
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM jti WHERE expires_at <= ?", (now,))
            try:
                db.execute("INSERT INTO jti (iss, jti, expires_at) VALUES (?, ?, ?)", (iss, jti, expires_at))
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK")
                return False
            db.execute("COMMIT")
            return True
        finally:
            db.close()


def replay_store_for(cfg: ServiceConfig, audit_store=None):
    """Where accepted jtis are kept, so that a replayed token is refused by every worker that could receive it:
    an explicit store; else PACECDS_REPLAY_DB (a SQLite file shared by one host's workers); else, with
    PACECDS_DATABASE_URL set, a table in that database (shared by every host on it: the audit store's own
    database when the service has one, which is then the same database); else memory (one process)."""
    if cfg.replay_store is not None:
        return cfg.replay_store
    if cfg.replay_db:
        return SqliteReplayStore(cfg.replay_db)
    if cfg.database_url:
        from audit import AuditStore, DatabaseReplayStore
        if audit_store is None or not hasattr(audit_store, "engine"):
            audit_store = AuditStore.from_config(cfg.database_url)  # creates (migrates) the table if needed
        return DatabaseReplayStore(audit_store.engine)
    return MemoryReplayStore()


# --------------------------------------------------------------------------- the authenticator

def _numeric_date(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Authenticator:
    issuers: dict[str, TrustedIssuer]
    algorithms: tuple[str, ...]
    leeway_s: int = 60
    max_lifetime_s: int = 3600
    jwks: JwksCache = field(default_factory=JwksCache)
    replay: object = field(default_factory=MemoryReplayStore)
    clock: Callable[[], float] = time.time

    @classmethod
    def from_config(cls, cfg: ServiceConfig, audit_store=None) -> "Authenticator | None":
        if not cfg.auth_enabled:
            return None
        issuers = load_trusted_issuers(cfg.trusted_issuers_file, cfg.trusted_issuers, cfg.production)
        replay = replay_store_for(cfg, audit_store)
        return cls(issuers=issuers, algorithms=tuple(cfg.jwt_algorithms), leeway_s=cfg.jwt_leeway_s,
                   max_lifetime_s=cfg.jwt_max_lifetime_s,
                   jwks=JwksCache(ttl_s=cfg.jwks_cache_s, timeout_s=cfg.fhir_timeout_s), replay=replay)

    def authenticate(self, authorization: str | None, audiences: Iterable[str]) -> dict:
        """Return the verified claims, or raise AuthError (the reason is for the log only)."""
        try:
            return self._authenticate(authorization, audiences)
        except AuthError as e:
            metrics().token_rejected(e.reason)
            raise

    def _authenticate(self, authorization: str | None, audiences: Iterable[str]) -> dict:
        if not authorization:
            raise AuthError("no Authorization header", "missing")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("Authorization is not a Bearer token", "malformed")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("token too large", "malformed")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except Exception:
            raise AuthError("token is not a JWT", "malformed") from None
        alg = header.get("alg")
        if alg not in self.algorithms:  # never `none`, never HS*: only the configured asymmetric algorithms
            raise AuthError(f"alg {alg!r} not accepted", "algorithm")
        if header.get("typ") != "JWT":
            raise AuthError("typ is not JWT", "malformed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("no kid", "malformed")
        iss = unverified.get("iss") if isinstance(unverified, dict) else None
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError("iss not trusted", "issuer")
        jwk = self._key_for(issuer, header, kid)
        if jwk.get("alg") not in (None, alg):
            raise AuthError("token alg does not match the key's alg", "key")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except Exception:
            raise AuthError("key unusable for alg", "key") from None
        audiences = list(audiences)
        try:
            claims = jwt.decode(
                token, key=key, algorithms=[alg], audience=audiences, issuer=iss, leeway=self.leeway_s,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_signature": True,
                         "verify_exp": True, "verify_iat": True, "verify_nbf": True, "verify_aud": True,
                         "verify_iss": True})
        except jwt.InvalidAudienceError:
            raise AuthError("aud does not match this endpoint", "audience") from None
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired", "expired") from None
        except jwt.PyJWTError as e:
            raise AuthError(f"token invalid: {type(e).__name__}", "invalid") from None
        except Exception as e:  # key/alg mismatch inside the crypto layer
            raise AuthError(f"token could not be verified: {type(e).__name__}", "invalid") from None
        now = self.clock()
        iat, exp, jti = claims.get("iat"), claims.get("exp"), claims.get("jti")
        # PyJWT takes int(exp) (a string of digits passes it): RFC 7519 NumericDate is a JSON number.
        if not _numeric_date(iat) or not _numeric_date(exp):
            raise AuthError("exp or iat is not a number", "claims")
        if iat > now + self.leeway_s:
            raise AuthError("iat in the future", "lifetime")
        # The lifetime is measured from iat: a token minted long ago stays refused whatever its exp says.
        longest = self.max_lifetime_s + self.leeway_s
        if exp - iat > longest or now - iat > longest or exp - now > longest:
            raise AuthError("token lifetime too long", "lifetime")
        if not isinstance(jti, str) or not jti:
            raise AuthError("jti missing", "claims")
        if issuer.tenants and claims.get("tenant") not in issuer.tenants:
            raise AuthError("tenant not allowed", "issuer")
        if not self.replay.add(iss, jti, float(exp) + self.leeway_s):
            raise AuthError("jti replayed", "replayed")
        return claims

    def fhir_server_allowed(self, iss: str, fhir_server: str) -> bool:
        """An issuer with a fhir_servers list may only make us call those servers (no SSRF through us)."""
        allowed = self.issuers[iss].fhir_servers if iss in self.issuers else ()
        if not allowed:
            return True
        if "?" in fhir_server or "#" in fhir_server:
            return False  # a base URL has neither
        return any(url_within(fhir_server, a) for a in allowed)

    def _key_for(self, issuer: TrustedIssuer, header: dict, kid: str) -> dict:
        jku = header.get("jku")
        # Only ever fetch a jku on this issuer's allowlist (forged-key and SSRF risk otherwise).
        if jku is not None and jku not in issuer.jkus:
            raise AuthError("jku not allowlisted for this iss", "key")
        inline = _usable_keys(issuer.jwks) if issuer.jwks else {}
        if kid in inline:
            return inline[kid]
        for u in ([jku] if jku is not None else issuer.jkus):
            key = self.jwks.key(u, kid)
            if key is not None:
                return key
        raise AuthError("kid unknown for this iss", "key")
