"""derive_facts: every fact of a hook from the validated pool, each by the module that owns its kind."""
from __future__ import annotations

import datetime as dt

from . import facts, pacing
from .facts import Fact
from .pooling import PatientData

DERIVERS = {**facts.DERIVERS, "pacing": pacing.derive}


def derive_facts(data: PatientData, definitions, now: dt.datetime) -> dict[str, Fact]:
    return {definition.name: DERIVERS[definition.kind](definition, data, now) for definition in definitions}
