import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
EXAMPLES = ROOT / "tests" / "examples"
NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.timezone.utc)


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
