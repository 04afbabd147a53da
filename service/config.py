"""Service configuration, read from the environment (PACECDS_*) with explicit overrides.

Every knob an integrator may need to turn is here and nowhere else, so the rest of the
service reads typed values instead of poking at os.environ.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass
from typing import Any, Mapping

from engine.bundled import RULES_DIR

# CDS Hooks recommends ES384/RS384; ES256/RS256 only when an EHR needs them (by configuration).
RECOMMENDED_ALGORITHMS = ("ES384", "RS384")
PERMITTED_ALGORITHMS = frozenset({"ES384", "RS384", "ES256", "RS256"})
MIN_CONSOLE_SECRET_CHARS = 32  # token_urlsafe(24) and up: well past guessing
MIN_METRICS_TOKEN_CHARS = 32


class ConfigError(Exception):
    """The service cannot start with this configuration (message says why)."""


def _csv(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _number(env: Mapping[str, str], name: str, default, kind=float):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


@dataclass
class ServiceConfig:
    env: str = "development"                      # PACECDS_ENV: development | production
    public_url: str | None = None                 # PACECDS_PUBLIC_URL, base of every JWT `aud`
    trusted_issuers_file: str | None = None       # PACECDS_TRUSTED_ISSUERS (YAML or JSON)
    trusted_issuers: list[dict] | None = None     # already-parsed issuers (tests, embedding)
    jwt_algorithms: tuple[str, ...] = RECOMMENDED_ALGORITHMS  # PACECDS_JWT_ALGORITHMS
    jwt_leeway_s: int = 60                        # PACECDS_JWT_LEEWAY: clock skew allowed on exp/iat/nbf
    jwt_max_lifetime_s: int = 3600                # PACECDS_JWT_MAX_LIFETIME: bounds the jti store
    jwks_cache_s: int = 3600                      # PACECDS_JWKS_CACHE_SECONDS
    replay_db: str | None = None                  # PACECDS_REPLAY_DB: SQLite file shared by workers; None = memory
    database_url: str | None = None               # PACECDS_DATABASE_URL: the audit database; shared by hosts, it
                                                  # also holds the jti store (unless PACECDS_REPLAY_DB is set)
    replay_store: Any = None                      # an object with add(iss, jti, expires_at) (tests, embedding)
    cors_origins: tuple[str, ...] = ()            # PACECDS_CORS_ORIGINS (comma separated)
    max_body_bytes: int = 5 * 1024 * 1024         # PACECDS_MAX_BODY_BYTES -> 413 above it
    fhir_timeout_s: float = 2.0                   # PACECDS_FHIR_TIMEOUT: one outbound HTTP call
    fhir_budget_s: float = 4.0                    # PACECDS_FHIR_BUDGET: all fallback fetching of one request
    fhir_max_pages: int = 20                      # PACECDS_FHIR_MAX_PAGES: `next` links followed per search
    observation_lookback_days: int = 400          # PACECDS_OBSERVATION_LOOKBACK_DAYS: date window of templates
    rules_dir: str = str(RULES_DIR)               # PACECDS_RULES (default: the bundled rules)
    dev: bool = False                             # PACECDS_DEV=1 / serve --dev: skip the release-manifest check
    rules_reload_s: float = 0                     # PACECDS_RULES_RELOAD_SECONDS: poll rules/ and hot-reload (0=off)
    ruleset: Any = None                           # an already loaded ruleset (tests, embedding)
    audit_store: Any = None                       # an AuditStore (or None: built from config when available)
    audit: bool = True                            # PACECDS_AUDIT=0 disables the audit store (dev only)
    # PACECDS_REQUIRE_CLINICAL_APPROVAL=1: refuse to serve (at start and on reload) a release whose manifest carries
    # no clinical sign-off (approvals[].kind clinical: `pacecds release --approved-by`); without it, a warning
    require_clinical_approval: bool = False
    # PACECDS_OVERRIDE_SUPPRESS_DAYS: a card the clinician overrode for a patient is not shown again for this many
    # days unless the data behind it changed (0 = off); 7 is a pacecds choice. Needs the audit store (feedback).
    override_suppress_days: int = 7
    # The console's signed-in mode (console/users.py, docs/console.md "Who may use it"): a users file of argon2
    # hashes and roles, the key that signs the session cookie, and whether a TLS proxy's X-Forwarded-Proto counts.
    console_users_file: str | None = None         # PACECDS_CONSOLE_USERS (YAML or JSON)
    console_secret_key: str | None = dataclasses.field(default=None, repr=False)  # PACECDS_CONSOLE_SECRET_KEY
    console_trust_forwarded_proto: bool = False   # PACECDS_CONSOLE_TRUST_FORWARDED_PROTO=1: behind a TLS proxy
    # PACECDS_METRICS_TOKEN: bearer token GET /metrics needs. Required for /metrics on a service with trusted
    # issuers: behind the reverse proxy every caller looks local. Without issuers, loopback callers need none.
    metrics_token: str | None = dataclasses.field(default=None, repr=False)

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def development_run(self) -> bool:
        """Rules need not match a release manifest: asked for (--dev), or local use (no issuers, not production),
        which can only listen on loopback. Serving real EHRs (issuers configured) or production never is."""
        return self.dev or (not self.production and not self.auth_enabled)

    @property
    def console_signin(self) -> bool:
        """The console serves signed-in users (any environment) rather than local callers only."""
        return bool(self.console_users_file)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.trusted_issuers_file or self.trusted_issuers)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "ServiceConfig":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get("PACECDS_ENV"):
            values["env"] = env["PACECDS_ENV"].strip().lower()
        if env.get("PACECDS_PUBLIC_URL"):
            values["public_url"] = env["PACECDS_PUBLIC_URL"].strip()
        if env.get("PACECDS_TRUSTED_ISSUERS"):
            values["trusted_issuers_file"] = env["PACECDS_TRUSTED_ISSUERS"].strip()
        if env.get("PACECDS_JWT_ALGORITHMS"):
            values["jwt_algorithms"] = _csv(env["PACECDS_JWT_ALGORITHMS"])
        values["jwt_leeway_s"] = _number(env, "PACECDS_JWT_LEEWAY", cls.jwt_leeway_s, int)
        values["jwt_max_lifetime_s"] = _number(env, "PACECDS_JWT_MAX_LIFETIME", cls.jwt_max_lifetime_s, int)
        values["jwks_cache_s"] = _number(env, "PACECDS_JWKS_CACHE_SECONDS", cls.jwks_cache_s, int)
        if env.get("PACECDS_REPLAY_DB"):
            values["replay_db"] = env["PACECDS_REPLAY_DB"]
        if env.get("PACECDS_DATABASE_URL"):
            values["database_url"] = env["PACECDS_DATABASE_URL"].strip()
        if env.get("PACECDS_CORS_ORIGINS"):
            values["cors_origins"] = _csv(env["PACECDS_CORS_ORIGINS"])
        values["max_body_bytes"] = _number(env, "PACECDS_MAX_BODY_BYTES", cls.max_body_bytes, int)
        values["fhir_timeout_s"] = _number(env, "PACECDS_FHIR_TIMEOUT", cls.fhir_timeout_s)
        values["fhir_budget_s"] = _number(env, "PACECDS_FHIR_BUDGET", cls.fhir_budget_s)
        values["fhir_max_pages"] = _number(env, "PACECDS_FHIR_MAX_PAGES", cls.fhir_max_pages, int)
        values["observation_lookback_days"] = _number(
            env, "PACECDS_OBSERVATION_LOOKBACK_DAYS", cls.observation_lookback_days, int)
        if env.get("PACECDS_RULES"):
            values["rules_dir"] = env["PACECDS_RULES"]
        if env.get("PACECDS_DEV", "").strip().lower() in ("1", "true", "yes", "on"):
            values["dev"] = True
        if env.get("PACECDS_RULES_RELOAD_SECONDS"):
            values["rules_reload_s"] = _number(env, "PACECDS_RULES_RELOAD_SECONDS", 0.0)
        if env.get("PACECDS_OVERRIDE_SUPPRESS_DAYS", "").strip() != "":
            raw = env["PACECDS_OVERRIDE_SUPPRESS_DAYS"].strip()
            if not raw.isdigit():
                raise ConfigError(f"PACECDS_OVERRIDE_SUPPRESS_DAYS={raw!r} is not a whole number of days (0 = off)")
            values["override_suppress_days"] = int(raw)
        raw = env.get("PACECDS_REQUIRE_CLINICAL_APPROVAL", "").strip().lower()
        if raw in ("1", "true", "yes", "on"):
            values["require_clinical_approval"] = True
        elif raw not in ("", "0", "false", "no", "off"):
            raise ConfigError(f"PACECDS_REQUIRE_CLINICAL_APPROVAL={raw!r}: use 1 (refuse a release with no clinical "
                              f"approval) or 0")
        if env.get("PACECDS_METRICS_TOKEN", "").strip():
            values["metrics_token"] = env["PACECDS_METRICS_TOKEN"].strip()
        if env.get("PACECDS_AUDIT", "").strip().lower() in ("0", "false", "off", "no"):
            values["audit"] = False
        if env.get("PACECDS_CONSOLE_USERS", "").strip():
            values["console_users_file"] = env["PACECDS_CONSOLE_USERS"].strip()
        if env.get("PACECDS_CONSOLE_SECRET_KEY"):
            values["console_secret_key"] = env["PACECDS_CONSOLE_SECRET_KEY"]
        if env.get("PACECDS_CONSOLE_TRUST_FORWARDED_PROTO", "").strip().lower() in ("1", "true", "yes", "on"):
            values["console_trust_forwarded_proto"] = True
        values.update(overrides)
        if ("replay_db" not in values and not values.get("database_url") and not values.get("replay_store")
                and (values.get("trusted_issuers_file") or values.get("trusted_issuers"))):
            # Every worker process must see every jti, or a token replayed to another worker would pass. With a
            # database configured the jti store is in it (every host sees it: Authenticator.from_config).
            var = env.get("PACECDS_VAR_DIR") or "var"
            values["replay_db"] = os.path.join(var, "pacecds-jti.sqlite")
        cfg = cls(**values)
        cfg.check()
        return cfg

    def replace(self, **changes) -> "ServiceConfig":
        cfg = dataclasses.replace(self, **changes)
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.env not in ("development", "production", "test"):
            raise ConfigError(f"PACECDS_ENV must be development, test or production, got {self.env!r}")
        bad = [a for a in self.jwt_algorithms if a not in PERMITTED_ALGORITHMS]
        if bad or not self.jwt_algorithms:
            raise ConfigError(
                f"PACECDS_JWT_ALGORITHMS may only name {sorted(PERMITTED_ALGORITHMS)} "
                f"(never none or HMAC), got {list(self.jwt_algorithms)}")
        if self.public_url is not None:
            url = self.public_url.rstrip("/")
            if not (url.startswith("https://") or url.startswith("http://")):
                raise ConfigError(f"PACECDS_PUBLIC_URL must be an absolute http(s) URL, got {self.public_url!r}")
            if self.production and not url.startswith("https://"):
                raise ConfigError("PACECDS_PUBLIC_URL must be https in production (CDS Hooks requires TLS)")
            self.public_url = url
        if self.production and self.dev:
            raise ConfigError("a development run (--dev / PACECDS_DEV) is not allowed with PACECDS_ENV=production")
        if self.production and not self.auth_enabled:
            raise ConfigError(
                "PACECDS_ENV=production requires PACECDS_TRUSTED_ISSUERS: refusing to serve patient data "
                "to unauthenticated callers")
        if self.auth_enabled and not self.public_url:
            raise ConfigError(
                "PACECDS_PUBLIC_URL is required when trusted issuers are configured "
                "(it is the base of the JWT `aud` every call is checked against)")
        if self.console_users_file and len(self.console_secret_key or "") < MIN_CONSOLE_SECRET_CHARS:
            raise ConfigError(
                f"PACECDS_CONSOLE_USERS needs PACECDS_CONSOLE_SECRET_KEY, a random secret of at least "
                f"{MIN_CONSOLE_SECRET_CHARS} characters that signs the console's session cookie "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')")
        if self.metrics_token is not None and len(self.metrics_token) < MIN_METRICS_TOKEN_CHARS:
            raise ConfigError(f"PACECDS_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_CHARS} characters "
                              f"(a random secret, e.g. `openssl rand -hex 32`)")
        for origin in self.cors_origins:
            if origin == "*":
                raise ConfigError("PACECDS_CORS_ORIGINS must list origins; '*' is not allowed")


LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
