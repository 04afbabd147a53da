"""The console's pages (Flask blueprint): workbench, rules, releases, audit. Server-rendered, no script."""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import tempfile
from pathlib import Path

import yaml
from flask import Blueprint, Flask, abort, current_app, g, redirect, render_template, request, session, url_for
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from engine.bundled import RULES_DIR
from engine.ruleset import HOOKS
from engine.rulestree import read_fact_definitions
from governance.attributes import rule_source_attributes
from governance.diff import DiffError, diff_trees, materialise
from governance.manifest import clinical_approval_status

from . import security, signin
from .chart import chart_number, levels_svg, stored_levels
from .markdown import render_markdown
from .workbench import WorkbenchError, evaluate, load_examples, parse_input, parse_when

log = logging.getLogger("pacecds.console")

MAX_INPUT_BYTES = 5 * 1024 * 1024
_GIT_REV = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/~^@{}-]{0,199}$")


def register_console(app: Flask, state, *, mode: str, disabled_reason: str = "", users=None,
                     secret_key: str | None = None, trust_forwarded_proto: bool = False) -> None:
    """Mount the console under /console. `state` is the service's ServiceState (ruleset, audit store).

    mode "local": callers on this machine, no sign-in; "signin": signed-in users with roles (`users`, a
    UserDirectory; `secret_key` signs the session; HTTPS only); "disabled": every address answers 403."""
    if mode not in ("local", "signin", "disabled"):
        raise ValueError(f"console mode {mode!r}")
    app.jinja_env.autoescape = True  # render_template autoescapes .html already; also for any other name
    app.extensions["pacecds_console"] = {"enabled": mode != "disabled", "mode": mode}
    if mode == "disabled":
        _register_disabled(app, disabled_reason or "The console is disabled.")
        return
    if mode == "signin":
        if users is None or not secret_key:
            raise ValueError("the signed-in console needs users and a secret key")
        app.secret_key = secret_key
        app.config.update(SESSION_COOKIE_NAME="pacecds_console_session", SESSION_COOKIE_PATH="/console",
                          SESSION_COOKIE_SECURE=True, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                          PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=signin.SESSION_HOURS))
    failures = signin.FailedSignIns()
    bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
                   static_folder="static", static_url_path="/static")

    @bp.errorhandler(security.Forbidden)
    def _forbidden(err: security.Forbidden):
        return security.finish(current_app.make_response(
            (render_template("message.html", title="Not allowed", message=err.message), err.status)))

    @bp.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        return security.finish(current_app.make_response(
            (render_template("message.html", title=err.name, message=err.description), err.code or 500)))

    examples = load_examples()

    @bp.before_request
    def _guard():
        g.console_user = None
        if mode == "local":
            if not security.caller_is_local(request):
                raise security.Forbidden(403, "The console only answers callers on this machine.")
        else:
            if not signin.is_https(request, trust_forwarded_proto):
                raise security.Forbidden(403, "The console is served over HTTPS only.")
            g.console_user = user = signin.current_user(users)
            endpoint = request.endpoint or ""
            if endpoint not in signin.PUBLIC_ENDPOINTS:
                if user is None:
                    if request.method == "GET" and endpoint:
                        session["next"] = request.path  # kept in the session, never put in an address
                        return redirect(url_for("console.signin_page"))
                    raise security.Forbidden(403, "Sign in first.")
                role = signin.ENDPOINT_ROLES.get(endpoint)
                if role is None and endpoint:  # a page nobody gave a role: nobody may open it
                    raise security.Forbidden(403, "This page is not open to any role.")
                if role is not None and not user.may(role):
                    log.info("console %s refused to %s (%s): needs %s", request.path, user.username, user.role,
                             role)
                    raise security.Forbidden(403, f"Your role ({user.role}) may not open this page; it is for "
                                                  f"the {role} role.")
        if request.method == "POST":
            security.check_csrf()

    @bp.after_request
    def _headers(response):
        return security.finish(response)

    @bp.context_processor
    def _globals():
        user = g.get("console_user")
        return {"csrf_token": security.csrf_token, "markdown": render_markdown, "HOOKS": HOOKS,
                "console_mode": mode, "console_user": user,
                "may_audit": mode == "local" or (user is not None and user.may("auditor")),
                "ruleset_meta": getattr(state.ruleset, "meta", {}), "pretty": _pretty, "as_yaml": _as_yaml, "num": _num,
                "chart_num": chart_number, "approval": _approval(state.ruleset)}

    if mode == "signin":
        @bp.get("/signin")
        def signin_page():
            return render_template("signin.html", error=None, username="")

        @bp.post("/signin")
        def signin_post():
            username = request.form.get("username", "").strip()[:64]  # longer is no user name (console/users.py)
            password = request.form.get("password", "")
            address = request.remote_addr or "unix socket"
            wait = failures.blocked_for(username, address)
            if wait > 0:
                log.warning("console sign-in refused for %r from %s: too many failed sign-ins", username, address)
                minutes = int(wait // 60) + 1
                response = current_app.make_response((render_template(
                    "signin.html", username=username,
                    error=f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes > 1 else ''}."),
                    429))
                response.headers["Retry-After"] = str(int(wait) + 1)
                return response
            user = users.authenticate(username, password)
            if user is None:
                failures.failed(username, address)
                log.warning("console sign-in failed for %r from %s", username, address)
                return render_template("signin.html", username=username,
                                       error="The user name or password is wrong."), 401
            failures.succeeded(username)
            target = session.get("next")
            signin.start_session(user, security.new_token())
            log.info("console sign-in: %s (%s) from %s at %s", user.username, user.role, address, _now())
            if not (isinstance(target, str) and target.startswith("/console/") and not target.startswith("//")):
                target = url_for("console.home")
            return redirect(target, code=303)

        @bp.post("/signout")
        def signout():
            user = g.get("console_user")
            session.clear()
            log.info("console sign-out: %s at %s", user.username if user else "?", _now())
            return redirect(url_for("console.signin_page"), code=303)

    @bp.get("/")
    def home():
        return render_template("home.html", examples=examples, audit=state.audit_store is not None)

    # ---- workbench -------------------------------------------------------------------------------
    @bp.get("/workbench")
    def workbench():
        return render_template("workbench.html", examples=examples, form={}, outcome=None, error=None)

    @bp.post("/workbench")
    def workbench_run():
        form = {k: request.form.get(k, "") for k in ("example", "pasted", "hook", "now")}
        error = outcome = None
        try:
            text, default_now, default_hook = _input_text(form, examples)
            when = parse_when(form["now"] or default_now)
            hook = form["hook"] or default_hook or None
            outcome = evaluate(state.ruleset, parse_input(text), hook, when)
        except WorkbenchError as e:
            error = str(e)
        status = 200 if error is None else 400
        return render_template("workbench.html", examples=examples, form=form, outcome=outcome, error=error), status

    # ---- rules -----------------------------------------------------------------------------------
    @bp.get("/rules")
    def rules():
        rs = state.ruleset
        return render_template("rules.html", rules=sorted(rs.rules, key=lambda r: r.id),
                               attrs={a.get("id"): a for a in _attributes(rs)})

    @bp.get("/rules/<rule_id>")
    def rule(rule_id: str):
        rs = state.ruleset
        r = rs.rule(rule_id)
        if r is None:
            abort(404)
        attrs = next((a for a in _attributes(rs) if a.get("id") == rule_id), {})
        cases = [(e, _example_cards(rs, e, rule_id)) for e in examples if rule_id in e.fires]
        return render_template("rule.html", rule=r, attrs=attrs, cases=cases, fact_params=_fact_parameters(rs, r))

    @bp.get("/releases")
    def releases():
        old, new = request.args.get("old", "").strip(), request.args.get("new", "").strip()
        report = error = None
        if old and new:
            try:
                with tempfile.TemporaryDirectory(prefix="pacecds-console-diff-") as work:
                    report = diff_trees(_tree(old, Path(work)), _tree(new, Path(work)))
            except DiffError as e:
                error = str(e)
        return render_template("releases.html", old=old or "git:HEAD", new=new or str(_rules_dir(state)),
                               report=report, error=error, asked=bool(old and new))

    # ---- audit -----------------------------------------------------------------------------------
    @bp.route("/audit", methods=["GET", "POST"])
    def audit():
        store = state.audit_store
        if store is None:
            return render_template("message.html", title="Decision log",
                                   message="This service keeps no decision log (audit is off)."), 404
        f = {k: request.form.get(k, "").strip() for k in ("patient", "rule", "hook", "since", "until")}
        try:
            since = _date(f["since"])
            until = _date(f["until"])
        except ValueError:
            return render_template("audit.html", rows=[], form=f, error="Dates are YYYY-MM-DD."), 400
        rows = store.find(patient_id=f["patient"] or None, rule_id=f["rule"] or None, since=since, limit=500)
        if f["hook"]:
            rows = [r for r in rows if r.get("hook") == f["hook"]]
        if until:
            rows = [r for r in rows if str(r.get("time") or "") < until]
        log.info("console audit list viewed by %s at %s (filters: %s; %d decisions)", _who(), _now(),
                 ",".join(k for k, v in f.items() if v) or "none", len(rows))
        return render_template("audit.html", rows=rows[:200], form=f, error=None)

    @bp.get("/audit/decision/<hook_instance>")
    def decision(hook_instance: str):
        store = state.audit_store
        if store is None:
            abort(404)
        rec = store.get(hook_instance) or store.get_by_card(hook_instance)
        # every view of a stored decision is itself logged: who, when, which record
        log.info("console decision viewed by %s at %s: seq=%s hookInstance=%s found=%s", _who(), _now(),
                 rec.get("seq") if rec else None, hook_instance, rec is not None)
        if rec is None:
            abort(404)
        expl = rec.get("explanation") if isinstance(rec.get("explanation"), dict) else {}
        return render_template("decision.html", rec=rec, expl=expl)

    @bp.get("/card/<card_uuid>")
    def card(card_uuid: str):
        """Where a pacing card's link leads (service.handlers.link_to_console): the stored decision of that card,
        for the clinician who saw it: the card, the pacing levels it was based on as a chart, and why it fired."""
        store = state.audit_store
        if store is None:
            abort(404)
        rec = store.get_by_card(card_uuid)
        log.info("console card decision viewed by %s at %s: card=%s seq=%s found=%s", _who(), _now(), card_uuid,
                 rec.get("seq") if rec else None, rec is not None)
        if rec is None:
            abort(404)
        stored: dict = next((c for c in rec.get("cards") or [] if c.get("uuid") == card_uuid), {})
        rule_id = (stored.get("rule") or {}).get("id")
        fired: dict = next((f for f in rec.get("rulesFired") or [] if f.get("id") == rule_id), {})
        pacing = ((fired.get("facts") or {}).get("pacing") or {}).get("values") or {}
        levels = stored_levels(pacing)
        expl = rec.get("explanation") if isinstance(rec.get("explanation"), dict) else {}
        rules = [r for r in expl.get("rules") or [] if r.get("id") == rule_id]
        feedback = [f for f in rec.get("feedback") or [] if f.get("card") == card_uuid]
        return render_template("card.html", rec=rec, card=stored, rule_id=rule_id, pacing=pacing, levels=levels,
                               chart=levels_svg(levels, str(pacing.get("activity_unit") or "")),
                               rules=rules, feedback=feedback)

    @bp.get("/audit/verify")
    def verify():
        store = state.audit_store
        if store is None:
            abort(404)
        report = store.verify()
        log.info("console chain verification by %s at %s: ok=%s", _who(), _now(), report.ok)
        return render_template("verify.html", report=report, head=store.head(), count=store.count())

    @bp.get("/audit/stats")
    def stats():
        store = state.audit_store
        if store is None:
            abort(404)
        since = request.args.get("since", "").strip()
        release = request.args.get("release", "").strip()  # a ruleset's sha256 (or "name version"): no patient data
        try:
            st = store.stats(since=_date(since), release=release or None)
        except ValueError:
            abort(400)
        log.info("console statistics viewed by %s at %s (since=%s release=%s)", _who(), _now(), since or "-",
                 release or "all")
        return render_template("stats.html", st=st, since=since, release=release, chart=_stats_chart(st),
                               patients_chart=_histogram_chart(st["cards_per_patient"]["histogram"]))

    app.register_blueprint(bp)


def _register_disabled(app: Flask, reason: str) -> None:
    """Every /console address (static files too) answers 403 with the reason, and nothing else."""
    bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")

    @bp.route("/", defaults={"rest": ""}, methods=["GET", "POST"])
    @bp.route("/<path:rest>", methods=["GET", "POST"])
    def disabled(rest: str):
        return security.finish(current_app.make_response(
            (render_template("disabled.html", message=reason), 403)))

    app.register_blueprint(bp)


# ---- helpers -------------------------------------------------------------------------------------------

def _input_text(form: dict, examples) -> tuple[str, str | None, str | None]:
    upload = request.files.get("upload")
    if upload is not None and upload.filename:
        data = upload.read(MAX_INPUT_BYTES + 1)
        if len(data) > MAX_INPUT_BYTES:
            raise WorkbenchError("The uploaded file is larger than 5 MB.")
        try:
            return data.decode("utf-8-sig"), None, None
        except UnicodeDecodeError:
            raise WorkbenchError("The uploaded file is not UTF-8 text.") from None
    if form["pasted"].strip():
        return form["pasted"], None, None
    if form["example"]:
        ex = next((e for e in examples if e.key == form["example"]), None)
        if ex is None:
            raise WorkbenchError("No such example patient.")
        return ex.path.read_text(encoding="utf-8"), ex.now, ex.hook
    raise WorkbenchError("Choose an example patient, paste a request or Bundle, or upload a file.")


def _example_cards(rs, example, rule_id: str) -> list[dict]:
    """The cards this rule gives an example patient (a draft rule's card is previewed, marked shadow)."""
    try:
        outcome = evaluate(rs, parse_input(example.path.read_text(encoding="utf-8")), example.hook,
                           parse_when(example.now))
    except WorkbenchError:
        return []
    return [c for c in outcome.cards + outcome.shadow_cards
            if ((c.get("extension") or {}).get("pacecds.rule") or {}).get("id") == rule_id]


def _attributes(rs) -> list[dict]:
    tree = getattr(rs, "tree", None)
    facts = read_fact_definitions(tree.root) if tree is not None else {}
    return [rule_source_attributes(r, facts) for r in rs.rules]


def _fact_parameters(rs, rule) -> list[tuple[str, dict]]:
    """(fact, its parameters as written) for each fact the rule reads that has parameters (the pacing rules'
    numbers live on the `pacing` fact, not on the rules)."""
    tree = getattr(rs, "tree", None)
    written = read_fact_definitions(tree.root) if tree is not None else {}
    out = []
    for name in sorted(getattr(rule, "facts", None) or ()):
        params = (written.get(name) or {}).get("parameters")
        if isinstance(params, dict) and params:
            out.append((name, params))
    return out


def _rules_dir(state) -> Path:
    tree = getattr(state.ruleset, "tree", None)
    return Path(tree.root) if tree is not None else RULES_DIR


def _tree(spec: str, work: Path) -> Path:
    if spec.startswith("git:"):
        rev = spec[4:].split(":", 1)[0]
        if not _GIT_REV.match(rev):  # never an option (`--output=...`) or anything but a revision name
            raise DiffError(f"{spec}: not a git revision name")
    return materialise(spec, work)


def _date(text: str) -> str | None:
    if not text:
        return None
    return dt.date.fromisoformat(text).isoformat()


def _who() -> str:
    user = g.get("console_user")
    if user is not None:
        return f"user {user.username} ({user.role}) from {request.remote_addr or 'unix socket'}"
    return f"local user at {request.remote_addr or 'unix socket'} (no sign-in: local use only)"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _pretty(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _num(value):
    """A measured value for reading: floats to 4 significant digits (the stored record keeps them all)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return value


def _as_yaml(value) -> str:
    try:
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=110, default_flow_style=False)
    except yaml.YAMLError:
        return _pretty(value)


def _stats_chart(st: dict) -> Markup:
    """Horizontal bars per rule: fired, shadow-fired, cards, accepted, overridden. Only rules with any of these
    (a rule evaluated but never fired is a row of zeros, in the table only)."""
    from markupsafe import escape
    metrics = [("fired", "#2b6cb0"), ("shadow_fired", "#718096"), ("cards", "#6b46c1"), ("accepted", "#2f855a"),
               ("overridden", "#c53030")]
    rules = [(rid, e) for rid, e in st.get("rules", {}).items() if any(e.get(m, 0) for m, _ in metrics)]
    if not rules:
        return Markup("")
    top = max([max(e.get(m, 0) for m, _ in metrics) for _, e in rules] + [1])
    row_h, bar_h, left, width = 16 * len(metrics) + 14, 14, 280, 760
    height = 30 + row_h * len(rules)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           'role="img" aria-label="Per-rule counts; the same numbers are in the table below">']
    for i, (m, colour) in enumerate(metrics):
        out.append(f'<rect x="{8 + i * 110}" y="4" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{8 + i * 110 + 16}" y="14" font-size="12">{m.replace("_", " ")}</text>')
    for k, (rid, e) in enumerate(rules):
        y0 = 28 + k * row_h
        out.append(f'<text x="{left - 8}" y="{y0 + row_h / 2}" font-size="12" text-anchor="end">{escape(rid)}</text>')
        for i, (m, colour) in enumerate(metrics):
            w = (width - left - 40) * e.get(m, 0) / top
            out.append(f'<rect x="{left}" y="{y0 + i * 16}" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
                       f'<title>{escape(rid)} {m}: {e.get(m, 0)}</title></rect>'
                       f'<text x="{left + w + 4:.1f}" y="{y0 + i * 16 + 11}" font-size="11">{e.get(m, 0)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def _histogram_chart(histogram: dict) -> Markup:
    """Vertical bars: how many patients got 0, 1, 2, ... cards (in the chosen release and dates)."""
    if not any(histogram.values()):
        return Markup("")
    top = max(histogram.values())
    width, height, left, bottom, bar = 420, 190, 40, 30, 48
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           'role="img" aria-label="Patients by number of cards; the same numbers are in the table beside it">']
    plot_h = height - bottom - 20
    for i, (label, n) in enumerate(histogram.items()):
        h = plot_h * n / top
        x = left + i * (bar + 12)
        y = height - bottom - h
        out.append(f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{h:.1f}" fill="#6b46c1">'
                   f'<title>{n} patients with {label} cards</title></rect>'
                   f'<text x="{x + bar / 2}" y="{y - 4:.1f}" font-size="12" text-anchor="middle">{n}</text>'
                   f'<text x="{x + bar / 2}" y="{height - bottom + 16}" font-size="12" text-anchor="middle">'
                   f'{label}</text>')
    out.append(f'<text x="{left}" y="{height - 2}" font-size="11">cards per patient</text></svg>')
    return Markup("".join(out))
def _approval(ruleset) -> dict | None:
    """The serving release's clinical sign-off status, for the header (None without a release manifest)."""
    manifest = getattr(getattr(ruleset, "tree", None), "manifest", None)
    return clinical_approval_status(manifest) if isinstance(manifest, dict) else None
