import contextlib
import datetime as dt
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
EXAMPLES = ROOT / "tests" / "examples"
NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.timezone.utc)


PG_URL = os.environ.get("PACECDS_TEST_DATABASE_URL")


def pg_driver_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@contextlib.contextmanager
def throwaway_pg_database(prefix: str, why: str):
    """A new PostgreSQL database on the server PACECDS_TEST_DATABASE_URL names, dropped afterwards; the test
    skips (saying `why` it needs one) when none is named or it is not reachable."""
    import sqlalchemy as sa

    if not PG_URL:
        pytest.skip(f"{why} need PACECDS_TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    admin = sa.create_engine(pg_driver_url(PG_URL), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as e:
        # .ci/run names the local server by default; a machine without one reports a skip, not an error
        admin.dispose()
        pytest.skip(f"PostgreSQL at PACECDS_TEST_DATABASE_URL is not reachable: {str(e.orig).splitlines()[0]}")
    try:
        yield sa.engine.make_url(pg_driver_url(PG_URL)).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def walk(value, path="$"):
    """Yield (path, value) for every node of a JSON document."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")


def load_tool(name: str):
    """A script of tools/ as a module (the generators whose output tests compare with the repo)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_example(name: str) -> dict:
    return json.loads((EXAMPLES / "patients" / f"{name}.json").read_text())


@pytest.fixture(scope="session")
def ruleset():
    from engine import load_ruleset

    return load_ruleset(RULES)


@pytest.fixture
def rules_copy(tmp_path):
    """A private copy of the bundled rules that a test may break."""
    target = tmp_path / "rules"
    shutil.copytree(RULES, target)
    return target
