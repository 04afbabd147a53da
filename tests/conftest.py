import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
EXAMPLES = ROOT / "tests" / "examples"
NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.timezone.utc)


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
