"""Error responses: every non-2xx body is a FHIR OperationOutcome (CDS Hooks 3.0 asks for it; 2.0 allows it).

Bad input must never produce a 500 or a traceback, so every HTTP error Flask or Werkzeug can raise,
and any unexpected exception, is mapped here to a JSON OperationOutcome.
"""
from __future__ import annotations

import json
import logging
import os
import traceback

import orjson
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

log = logging.getLogger("pacecds.service")

# FHIR issue-type codes (http://hl7.org/fhir/issue-type) per HTTP status.
_ISSUE_CODE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",
    413: "too-long",
    415: "not-supported",
    429: "throttled",
    500: "exception",
    503: "transient",
}

_DEFAULT_TEXT = {
    400: "The request is not valid",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    412: "Required data could not be obtained",
    413: "Request body too large",
    415: "Content-Type must be application/json",
    500: "Internal error",
    503: "Service unavailable",
}


class ApiError(Exception):
    """An error with an HTTP status and a message safe to show the caller."""

    def __init__(self, status: int, diagnostics: str | None = None, *, code: str | None = None,
                 expression: list[str] | None = None, headers: dict | None = None):
        super().__init__(diagnostics or _DEFAULT_TEXT.get(status, "Error"))
        self.status = status
        self.diagnostics = diagnostics or _DEFAULT_TEXT.get(status, "Error")
        self.code = code or _ISSUE_CODE.get(status, "processing")
        self.expression = [e for e in (expression or []) if e]
        self.headers = headers or {}


def operation_outcome(status: int, diagnostics: str, code: str | None = None,
                      expression: list[str] | None = None) -> dict:
    issue = {
        "severity": "error" if status < 500 else "fatal",
        "code": code or _ISSUE_CODE.get(status, "processing"),
        "diagnostics": diagnostics,
    }
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    resp = Response(_dumps(body), status=status, mimetype="application/json")
    # Responses carry PHI (cards) or security decisions: no intermediary may cache them.
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _dumps(body) -> bytes:
    """Compact UTF-8 JSON; orjson (a 10 kB card list in ~10 us, not ~100), the stdlib for what it refuses."""
    try:
        return orjson.dumps(body)
    except TypeError:  # e.g. an integer beyond 64 bits
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def error_response(err: ApiError) -> Response:
    return json_response(operation_outcome(err.status, err.diagnostics, err.code, err.expression),
                         err.status, err.headers)


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return error_response(err)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        status = err.code or 500
        headers = {}
        if status == 405 and getattr(err, "valid_methods", None):
            headers["Allow"] = ", ".join(sorted(err.valid_methods))
        text = _DEFAULT_TEXT.get(status) or (err.name or "Error")
        if status == 404:
            text = "No such endpoint; the service list is at /cds-services"
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            text = f"Request body too large (limit {limit} bytes)" if limit else text
        return error_response(ApiError(status, text, headers=headers))

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        # At error level: the type and where it happened (no message: it may hold request data, i.e. PHI);
        # the full traceback only at debug level.
        where = ""
        tb = traceback.extract_tb(err.__traceback__)
        if tb:
            where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno} in {tb[-1].name}"
        log.error("unexpected error: %s%s", type(err).__name__, where)
        log.debug("unexpected error detail", exc_info=err)
        return error_response(ApiError(500, "Internal error; the request was not processed"))
