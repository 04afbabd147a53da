"""Where the bundled rules and schemas are: beside the code in a source checkout, inside the
installed package otherwise (`pip install .` ships them as package data of `pacecds`)."""
from __future__ import annotations

from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _locate(name: str) -> Path:
    here = _CHECKOUT / name
    if here.is_dir():
        return here
    installed = _CHECKOUT / "pacecds" / name  # site-packages/pacecds/{rules,schemas}
    return installed if installed.is_dir() else here


RULES_DIR = _locate("rules")
SCHEMA_DIR = _locate("schemas")
