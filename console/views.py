"""The console's pages (Flask blueprint): workbench, rules, releases, audit. Server-rendered, no script."""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import tempfile
from pathlib import Path

import yaml
from flask import Blueprint, Flask, abort, current_app, render_template, request
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from engine.bundled import RULES_DIR
from engine.ruleset import HOOKS
from engine.rulestree import read_fact_definitions
from governance.attributes import rule_source_attributes
from governance.diff import DiffError, diff_trees, materialise
from governance.manifest import clinical_approval_status

from . import security
from .chart import chart_number
from .markdown import render_markdown
from .workbench import WorkbenchError, evaluate, load_examples, parse_input, parse_when

log = logging.getLogger("pacecds.console")

MAX_INPUT_BYTES = 5 * 1024 * 1024
_GIT_REV = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/~^@{}-]{0,199}$")


def register_console(app: Flask, state, *, enabled: bool, disabled_reason: str = "") -> None:
    """Mount the console under /console. `state` is the service's ServiceState (ruleset, audit store)."""
    app.jinja_env.autoescape = True  # render_template autoescapes .html already; also for any other name
    app.extensions["pacecds_console"] = {"enabled": enabled}
    if not enabled:
        _register_disabled(app, disabled_reason or "The console is disabled.")
        return
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
        if not security.caller_is_local(request):
            raise security.Forbidden(403, "The console only answers callers on this machine.")
        if request.method == "POST":
            security.check_csrf()

    @bp.after_request
    def _headers(response):
        return security.finish(response)

    @bp.context_processor
    def _globals():
        return {"csrf_token": security.csrf_token, "markdown": render_markdown, "HOOKS": HOOKS,
                "ruleset_meta": getattr(state.ruleset, "meta", {}), "pretty": _pretty, "as_yaml": _as_yaml, "num": _num,
                "chart_num": chart_number, "approval": _approval(state.ruleset)}

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
        try:
            st = store.stats(since=_date(since))
        except ValueError:
            abort(400)
        return render_template("stats.html", st=st, since=since, chart=_stats_chart(st))

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
    """Horizontal bars per rule: fired, cards, accepted, overridden."""
    from markupsafe import escape
    rules = list(st.get("rules", {}).items())
    if not rules:
        return Markup("")
    metrics = [("fired", "#2b6cb0"), ("shadow_fired", "#718096"), ("accepted", "#2f855a"), ("overridden", "#c53030")]
    top = max([max(e.get(m, 0) for m, _ in metrics) for _, e in rules] + [1])
    row_h, bar_h, left, width = 16 * len(metrics) + 14, 14, 280, 760
    height = 30 + row_h * len(rules)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           'role="img" aria-label="Per-rule counts; the same numbers are in the table below">']
    for i, (m, colour) in enumerate(metrics):
        out.append(f'<rect x="{left + i * 115}" y="4" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{left + i * 115 + 16}" y="14" font-size="12">{m.replace("_", " ")}</text>')
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


def _approval(ruleset) -> dict | None:
    """The serving release's clinical sign-off status, for the header (None without a release manifest)."""
    manifest = getattr(getattr(ruleset, "tree", None), "manifest", None)
    return clinical_approval_status(manifest) if isinstance(manifest, dict) else None
