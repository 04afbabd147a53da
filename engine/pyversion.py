"""Which Pythons pacecds runs on, checked before durable-rules is imported.

durable-rules 2.0.28 (the rules engine) ships a C extension that does not import on Python 3.13
(it calls PyEval_CallObject, removed in 3.13), so pacecds supports 3.11 and 3.12; pyproject.toml's
requires-python says the same. Importing `engine` on another Python exits with this message instead
of an ImportError from deep inside durable-rules.
"""
from __future__ import annotations

import sys

SUPPORTED = ((3, 11), (3, 12))


def unsupported_python(version_info=None) -> str | None:
    """Why this Python cannot run pacecds, or None when it can."""
    major, minor = tuple(version_info if version_info is not None else sys.version_info)[:2]
    if (major, minor) in SUPPORTED:
        return None
    return (f"pacecds needs Python 3.11 or 3.12 (durable-rules 2.0.28 does not import on 3.13 or later); "
            f"this is Python {major}.{minor} ({sys.executable}). "
            f"Create the environment with python3.12 or python3.11, e.g. `python3.12 -m venv .venv`.")


def require_supported_python() -> None:
    problem = unsupported_python()
    if problem:
        raise SystemExit(problem)


require_supported_python()
