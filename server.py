"""pacecds CDS Hooks 2.0 service: Flask app factory.

Thin on purpose: routes parse HTTP, `service.handlers` does the work (validate, gather FHIR data, call the
engine), `service.errors` maps every failure to an OperationOutcome, `service.auth` checks the caller's JWT.

    create_app()                          # configuration from PACECDS_* environment variables
    create_app(ServiceConfig(...))        # explicit configuration
    create_app({"cors_origins": (...)})   # environment plus overrides
"""
from __future__ import annotations

import gc
import logging

from flask import Flask, Response, request
from flask_cors import CORS

from console import register_console
from engine.cards import prune
from service import errors, handlers
from service.auth import Authenticator, AuthError
from service.config import ConfigError, ServiceConfig, is_loopback
from service.errors import ApiError, json_response
from service.metrics import metrics, token_matches
from service.validation import parse_json_body

log = logging.getLogger("pacecds.service")

JSON_TYPES = ("application/json", "application/fhir+json")


def create_app(config: ServiceConfig | dict | None = None) -> Flask:
    if isinstance(config, ServiceConfig):
        cfg = config
        cfg.check()
    else:
        cfg = ServiceConfig.from_env(**(config or {}))

    ruleset = cfg.ruleset if cfg.ruleset is not None else _load_ruleset(cfg)
    audit_store = cfg.audit_store if cfg.audit_store is not None else _load_audit_store(cfg)
    authenticator = Authenticator.from_config(cfg, audit_store)
    if authenticator is None:
        log.warning("!" * 78)
        log.warning("!! pacecds: NO TRUSTED ISSUERS CONFIGURED (PACECDS_TRUSTED_ISSUERS): every caller is accepted.")
        log.warning("!! Local development only: bind to 127.0.0.1 and never send real patient data.")
        log.warning("!" * 78)

    approval = clinical_approval(ruleset)
    if approval is not None and not approval["clinical"]:
        log.warning("pacecds: %s", approval["warning"])

    app = Flask("pacecds")
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes
    app.json.sort_keys = False
    state = handlers.ServiceState(cfg, ruleset, audit_store)
    state.start_watch(cfg.rules_reload_s)
    app.extensions["pacecds"] = state
    errors.register(app)

    if cfg.cors_origins:
        # An explicit origin allowlist (e.g. the CDS Hooks sandbox); no cookies, so no credentials.
        CORS(app, resources={r"/cds-services*": {"origins": list(cfg.cors_origins)}},
             methods=["GET", "POST", "OPTIONS"], allow_headers=["Authorization", "Content-Type"],
             supports_credentials=False, max_age=600, vary_header=True)

    if authenticator is None:
        @app.before_request
        def local_callers_only():
            # Without trusted issuers nobody is authenticated, so only this machine may call, whatever WSGI
            # server runs the app and whatever address it was bound to.
            addr = request.remote_addr
            if addr and not is_loopback(addr):  # no address at all: a unix socket, local by nature
                raise ApiError(403, "This pacecds service has no trusted issuers configured and only answers "
                                    "callers on this machine")
            refuse_cross_site()

    def refuse_cross_site() -> None:
        """Local mode and browsers: a web page the developer visits can reach 127.0.0.1 too. Refused: a
        foreign Origin (a page's fetch/XHR; only same-origin and PACECDS_CORS_ORIGINS pass), a Host that is not
        this machine at the served port (DNS rebinding: evil.example resolving to 127.0.0.1), and a POST
        whose Content-Type is not JSON (a "simple" cross-site request needs no CORS preflight)."""
        host = request.host or ""
        host_name, port = _split_host(host)
        served_port = request.environ.get("SERVER_PORT")
        if not host_name or not is_loopback(host_name) or (
                port is not None and served_port and served_port.isdigit() and port != served_port):
            raise ApiError(403, "Local-mode pacecds answers only requests addressed to this machine "
                                "(Host must be localhost or a loopback address at the served port)")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in cfg.cors_origins:
            o_name, o_port = _split_host(origin.partition("://")[2].rstrip("/")) if "://" in origin else ("", None)
            o_port = o_port or {"http": "80", "https": "443"}.get(origin.partition("://")[0].lower())
            h_port = port or {"http": "80", "https": "443"}.get(request.scheme)
            if not (o_name and is_loopback(o_name) and o_port == h_port):
                raise ApiError(403, "Cross-site requests are refused in local mode (Origin is not this service; "
                                    "allow a browser origin with PACECDS_CORS_ORIGINS)")
        # The console's forms are form-encoded: it refuses cross-site posts itself (CSRF token and Origin check,
        # console/security.py); every other POST is a CDS Hooks call and must be JSON.
        if request.method == "POST" and request.blueprint != "console" and not _is_json(request.mimetype):
            raise ApiError(415, "Content-Type must be application/json")

    def audiences(service_id: str | None, feedback: bool) -> list[str]:
        """aud must be PUBLIC_URL + the path called (CDS Hooks: "the CDS Service endpoint that is being
        called"): a token minted for a service does not open its feedback endpoint, nor the reverse."""
        base = cfg.public_url
        if service_id is None:
            return [f"{base}/cds-services", f"{base}/cds-services/"]
        if feedback:
            return [f"{base}/cds-services/{service_id}/feedback"]
        return [f"{base}/cds-services/{service_id}"]

    def authenticate(service_id: str | None = None, feedback: bool = False) -> dict | None:
        if authenticator is None:
            return None
        try:
            claims = authenticator.authenticate(request.headers.get("Authorization"),
                                                audiences(service_id, feedback))
        except AuthError as e:
            log.info("401 %s %s: %s", request.method, request.path, e)  # reason for operators, never the token
            raise ApiError(401, "Authentication required", headers={"WWW-Authenticate": "Bearer"}) from None
        log.debug("authenticated iss=%s jti=%s", claims.get("iss"), claims.get("jti"))
        return claims

    def json_body() -> dict:
        mimetype = (request.mimetype or "").lower()
        if mimetype and mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
            raise ApiError(415, f"Content-Type must be application/json, got {mimetype}")
        return parse_json_body(read_body())

    def read_body() -> bytes:
        """The body, at most PACECDS_MAX_BODY_BYTES: with Content-Length, Flask answers 413 before reading; a
        chunked body (no length; the server terminates the stream) is read here up to the limit and refused
        with 413 past it, never cut short silently."""
        if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
            return request.get_data(cache=False)
        limit = cfg.max_body_bytes
        stream = request.environ["wsgi.input"]
        chunks: list[bytes] = []
        size = 0
        try:
            while True:  # every pass reads at least one byte, and at most limit + 1 are read in all
                chunk = stream.read(min(65536, limit + 1 - size))
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"Request body too large (limit {limit} bytes)")
                chunks.append(chunk)
        except ApiError:
            raise
        except Exception:  # a malformed or unfinished chunked body (the WSGI server's own error types)
            raise ApiError(400, "The request body could not be read (incomplete or malformed chunked encoding)") \
                from None
        return b"".join(chunks)

    @app.get("/cds-services")
    @app.get("/cds-services/")
    def discovery():
        authenticate()
        return json_response(handlers.discovery(state))

    @app.post("/cds-services/<service_id>")
    def invoke(service_id: str):
        claims = authenticate(service_id)
        server_allowed = None
        if claims is not None:
            server_allowed = lambda url: authenticator.fhir_server_allowed(claims["iss"], url)  # noqa: E731
        return json_response(handlers.invoke(state, service_id, json_body(), server_allowed))

    @app.post("/cds-services/<service_id>/feedback")
    def feedback(service_id: str):
        authenticate(service_id, feedback=True)
        return json_response(handlers.feedback(state, service_id, json_body()))

    # Decision-support source attributes (ONC HTI-1) of the serving rules: read-only, no patient data, so no JWT
    # is needed; clinicians and auditors read them to judge a card's basis.
    # Built once per serving ruleset (one entry: a hot reload replaces it), not by re-reading fact files per call.
    attributes_of: dict[str, tuple[object, list[dict]]] = {}

    def source_attributes(rs) -> list[dict]:
        held = attributes_of.get("serving")
        if held is None or held[0] is not rs:
            held = attributes_of["serving"] = (rs, [prune(a) for a in _source_attributes(rs)])
        return held[1]

    @app.get("/rules")
    def rules():
        rs = state.ruleset
        return json_response({"ruleset": _ruleset_info(rs), "rules": source_attributes(rs)})

    @app.get("/rules/<rule_id>")
    def rule(rule_id: str):
        for attrs in source_attributes(state.ruleset):
            if attrs.get("id") == rule_id:
                return json_response(attrs)
        raise ApiError(404, f"No rule '{rule_id}' in the serving ruleset; the list is at /rules")

    @app.after_request
    def count_request(response):
        # The route template (bounded by the app's routes), never the path a caller sent.
        metrics().http_request(request.url_rule.rule if request.url_rule is not None else None,
                               response.status_code)
        return response

    @app.get("/metrics")
    def prometheus_metrics():
        # Local mode: loopback callers only (the guard above). With trusted issuers, behind the production
        # proxy every caller would look local, so the metrics token is required (docs/metrics.md).
        if cfg.metrics_token:
            if not token_matches(request.headers.get("Authorization"), cfg.metrics_token):
                raise ApiError(401, "Authentication required", headers={"WWW-Authenticate": "Bearer"})
        elif authenticator is not None or cfg.production:
            raise ApiError(403, "/metrics is disabled: on a service with trusted issuers set PACECDS_METRICS_TOKEN "
                                "and scrape with that bearer token")
        m = metrics()
        m.serving(state.ruleset)
        body, content_type = m.exposition()
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    @app.get("/healthz")
    def healthz():
        body = {"status": "ok"}
        info = _ruleset_info(state.ruleset)
        if info:
            body["ruleset"] = info
        approval = clinical_approval(state.ruleset)
        if approval is not None:
            body["approval"] = approval
        return json_response(body)

    # The web console (console/, /console): signed-in users with roles when PACECDS_CONSOLE_USERS is set; else
    # local use only, like the service without trusted issuers (the loopback check above covers it); else
    # (issuers or production, no users) disabled rather than open.
    if cfg.console_signin:
        from console.users import UserDirectory, UsersError
        try:
            users = UserDirectory(str(cfg.console_users_file))
        except UsersError as e:
            raise ConfigError(f"PACECDS_CONSOLE_USERS: {e}") from None
        register_console(app, state, mode="signin", users=users, secret_key=cfg.console_secret_key,
                         trust_forwarded_proto=cfg.console_trust_forwarded_proto)
    elif authenticator is None and not cfg.production:
        register_console(app, state, mode="local")
    else:
        register_console(app, state, mode="disabled",
                         disabled_reason="The console is disabled on this service: with trusted issuers or in "
                                         "production it needs signed-in users (PACECDS_CONSOLE_USERS and "
                                         "PACECDS_CONSOLE_SECRET_KEY; see docs/console.md). Without them, use it "
                                         "locally (no PACECDS_TRUSTED_ISSUERS) on this machine.")
    if app.extensions["pacecds_console"]["enabled"] and cfg.public_url and audit_store is not None:
        state.card_link_base = f"{cfg.public_url}/console/card/"  # pacing cards link to their decision

    # Latency: the ruleset, JSON Schemas and fhir.resources model classes loaded above live as long as the
    # process. Moving them out of the collector's reach means a full collection (triggered every few
    # requests by the thousands of dicts a parsed request holds) no longer re-scans them: p99 of a warm
    # in-process evaluation went from ~15 ms to ~3 ms. Objects created later are collected as usual.
    # Once per process: a worker builds one app; a test session that builds many freezes only the first.
    global _frozen
    if not _frozen:
        gc.freeze()
        # A standard request parses into ~20,000 objects, nearly all freed by reference counting when it ends;
        # at the default young-generation threshold (700) the collector ran ~30 times per request for nothing.
        # Measured in-process: ~4% fewer instructions per request (callgrind).
        gc.set_threshold(50_000, 20, 100)
        _frozen = True
    return app


_frozen = False


def _split_host(host: str) -> tuple[str, str | None]:
    """'localhost:8080' -> ('localhost', '8080'); '[::1]:8080' -> ('::1', '8080'); no port -> None."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, (rest[1:] if rest.startswith(":") else None)
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, port
    return host, None


def _is_json(mimetype: str | None) -> bool:
    m = (mimetype or "").lower()
    return m in JSON_TYPES or m.endswith("+json")


def clinical_approval(rs) -> dict | None:
    """Whether the serving release carries a clinical sign-off (None for a ruleset without a release manifest)."""
    from governance.manifest import clinical_approval_status

    src = rs.current if hasattr(rs, "current") else rs
    tree = getattr(src, "tree", None)
    manifest = getattr(tree, "manifest", None)
    return clinical_approval_status(manifest) if isinstance(manifest, dict) else None


def _ruleset_info(rs) -> dict:
    info = {k: getattr(rs, k, None) for k in ("name", "version", "sha256")}
    return {k: v for k, v in info.items() if v}


def _source_attributes(rs) -> list[dict]:
    from engine.rulestree import read_fact_definitions
    from governance.attributes import rule_source_attributes
    tree = getattr(rs, "tree", None)
    facts = read_fact_definitions(tree.root) if tree is not None else {}
    return sorted((rule_source_attributes(r, facts) for r in getattr(rs, "rules", [])), key=lambda a: a.get("id") or "")


def _load_ruleset(cfg: ServiceConfig):
    """A RulesetHolder over cfg.rules_dir: only a tree that loads (and, outside a development run, matches its
    release manifest) is ever served; a broken edit leaves the serving ruleset in place."""
    from engine import RulesetLoadError
    from engine.serving import RulesetHolder
    from governance.manifest import check_manifest, clinical_approval_problems, enforce_manifest

    if cfg.development_run:
        enforce_manifest(cfg.rules_dir, development=True, log=log)  # problems are logged, not fatal
    checks = ([] if cfg.development_run else [check_manifest]) + \
        ([clinical_approval_problems] if cfg.require_clinical_approval else [])
    try:
        holder = RulesetHolder(cfg.rules_dir, check=(lambda d: [p for c in checks for p in c(d)]) if checks else None)
    except RulesetLoadError as e:
        lines = "\n  ".join(getattr(e, "errors", None) or [str(e)])
        hint = "" if cfg.development_run else \
            "\n(release the rules with `pacecds release`, or start a development run with --dev)"
        if cfg.require_clinical_approval:
            hint += "\n(PACECDS_REQUIRE_CLINICAL_APPROVAL=1: the release must carry a clinical sign-off)"
        raise ConfigError(f"ruleset {cfg.rules_dir} cannot be served:\n  {lines}{hint}") from None
    return holder


def _load_audit_store(cfg: ServiceConfig):
    if not cfg.audit:
        return None
    try:
        from audit import AuditStore
    except ImportError:
        log.warning("audit store not available (engine.audit missing): decisions and feedback are not recorded")
        return None
    return AuditStore.from_config(cfg.database_url)  # PACECDS_DATABASE_URL, else SQLite under var/
