"""`pacecds serve`: run the CDS Hooks service under gunicorn.

Part of the composition root: it builds the app (server.create_app) and hands it to gunicorn.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from server import clinical_approval, create_app
from service.config import ConfigError, ServiceConfig, is_loopback
from service.metrics import MULTIPROC_ENV

log = logging.getLogger("pacecds.service")

def register_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="run the CDS Hooks service (gunicorn)",
        description="Serve CDS Hooks 2.0 (discovery, patient-view, order-select, order-sign, feedback). "
                    "Configuration comes from PACECDS_* environment variables; see the README.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; others need PACECDS_TRUSTED_ISSUERS)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: PACECDS_WORKERS or 2)")
    p.add_argument("--threads", type=int, default=None, help="threads per worker (default 4)")
    p.add_argument("--rules", help="rules directory (default: PACECDS_RULES or the bundled rules)")
    p.add_argument("--dev", action="store_true",
                   help="development run: serve rules without a matching release manifest and reload them "
                        "when they change")
    p.set_defaults(func=cmd_serve)


def build_config(args) -> ServiceConfig:
    overrides = {}
    if args.rules:
        overrides["rules_dir"] = args.rules
    if args.dev:
        overrides["dev"] = True
    cfg = ServiceConfig.from_env(**overrides)
    if cfg.dev and not cfg.rules_reload_s:
        cfg.rules_reload_s = 2.0
    return cfg


def cmd_serve(args) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migration chatter on every start
    try:
        cfg = build_config(args)
        if not cfg.auth_enabled and not is_loopback(args.host):
            raise ConfigError(
                f"refusing to listen on {args.host}: no trusted issuers are configured, so every caller would be "
                f"accepted. Set PACECDS_TRUSTED_ISSUERS and PACECDS_PUBLIC_URL, or bind to 127.0.0.1.")
        if args.port <= 0 or args.port > 65535:
            raise ConfigError(f"--port {args.port} is not a TCP port")
        workers = args.workers or int(os.environ.get("PACECDS_WORKERS", "2"))
        threads = args.threads or 4
        if workers < 1 or threads < 1:
            raise ConfigError("--workers and --threads must be at least 1")
        reload_s = cfg.rules_reload_s
        metrics_dir, own_dir = prepare_metrics_dir()
        # The master builds the app once (config and rules errors surface here, clearly); workers fork from it.
        app = create_app(cfg.replace(rules_reload_s=0))
    except ConfigError as e:
        print(f"pacecds serve: {e}", file=sys.stderr)
        return 2
    state = app.extensions["pacecds"]
    rs = state.ruleset
    print(f"pacecds serve: {rs.name} {rs.version} (sha256 {rs.sha256[:12]}) on http://{args.host}:{args.port}"
          f"/cds-services with {workers} worker(s) x {threads} thread(s)"
          f"{' [development run]' if cfg.development_run else ''}", file=sys.stderr)
    approval = clinical_approval(rs)
    if approval is not None and not approval["clinical"]:
        print(f"pacecds serve: WARNING: {approval['warning']}. Set PACECDS_REQUIRE_CLINICAL_APPROVAL=1 to refuse "
              f"such a release.", file=sys.stderr)
    try:
        run_gunicorn(app, f"{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}",
                     workers, threads, reload_s)
    finally:
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def prepare_metrics_dir() -> tuple[str, bool]:
    """Where the workers' Prometheus values live (prometheus_client multiprocess mode, service/metrics.py): the
    operator's PROMETHEUS_MULTIPROC_DIR emptied of an earlier run's files (a dead run's counters would be added to
    this one's), else a fresh private directory, removed at exit. Set before any metric is built, i.e. before
    the app. Returns (directory, whether it is ours to remove)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            for stale in path.glob("*.db"):
                stale.unlink()
        except OSError as e:
            raise ConfigError(f"{MULTIPROC_ENV}={given}: cannot prepare it for the metrics: {e.strerror}") from None
        return given, False
    path_s = tempfile.mkdtemp(prefix="pacecds-metrics-")  # 0700
    os.environ[MULTIPROC_ENV] = path_s
    return path_s, True


def run_gunicorn(app, bind: str, workers: int, threads: int, reload_s: float) -> None:
    from gunicorn.app.base import BaseApplication

    def post_fork(server, worker):
        # Threads do not survive fork: each worker starts its own rules watcher.
        app.extensions["pacecds"].start_watch(reload_s)
        state = app.extensions["pacecds"]
        store = state.audit_store
        if store is not None and hasattr(store, "engine"):
            store.engine.dispose(close=False)  # never share the master's DB connections with a worker

    def child_exit(server, worker):
        # A dead worker's gauges stop counting (its counters and histograms stay in the sums, as they should).
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)

    options = {
        "bind": bind,
        "workers": workers,
        "threads": threads,
        # gthread, with request heads read in the main loop: idle and slow clients hold no thread
        # (pacecds/worker.py; docs/security.md, "Slow and idle connections").
        "worker_class": "pacecds.worker.PacecdsWorker",
        "worker_connections": 1000,
        "preload_app": True,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": "-",
        # Path and status only: no query strings, no headers (the Authorization header holds the JWT).
        "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms',
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "pacecds",
        "post_fork": post_fork,
        "child_exit": child_exit,
        "limit_request_field_size": 16384,  # JWTs with large headers still fit; nothing bigger
        # gunicorn's control socket defaults to one path per user (~/.gunicorn): two services on a host would
        # fight over it, and pacecds needs no runtime control beyond signals.
        "control_socket_disable": True,
    }

    class PacecdsApplication(BaseApplication):
        def load_config(self):
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    PacecdsApplication().run()
