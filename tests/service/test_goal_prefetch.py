"""Pacing reads completed goals (the level agreed, a step up to a newer goal): the Goal search the service
advertises and fetches asks for them, and never for cancelled, entered-in-error or rejected goals. The FHIR server
here filters by lifecycle-status as a real one does, so a status left out of the template is a goal never seen."""
from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from server import create_app
from service.config import ServiceConfig
from tests.service.conftest import FixedNowRuleset
from tests.service.fhir_server import FhirTestServer

PATIENTS = Path(__file__).resolve().parents[1] / "examples" / "patients"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
AUTH = {"access_token": "tok-GOALS", "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read",
        "subject": "pacecds"}


def fetched_cards(name: str, bundled_ruleset, audit, extra: list[dict] = ()) -> tuple[set[str], list[dict]]:
    """The rules fired when the whole chart comes from the FHIR server (no prefetch), and the requests made."""
    resources = [e["resource"] for e in json.loads((PATIENTS / f"{name}.json").read_text())["entry"]]
    pid = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    app = create_app(ServiceConfig(env="test", ruleset=FixedNowRuleset(bundled_ruleset, NOW), audit_store=audit))
    with FhirTestServer(resources + list(extra)) as fhir:
        resp = app.test_client().post("/cds-services/pacing-review", json={
            "hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/dr-1", "patientId": pid},
            "fhirServer": fhir.base_url, "fhirAuthorization": AUTH})
        requests = list(fhir.requests)
    assert resp.status_code == 200, resp.get_json()
    return {c["extension"]["pacecds.rule"]["id"] for c in resp.get_json()["cards"]}, requests


def test_a_completed_maintenance_goal_is_fetched_and_stops_the_step_up(bundled_ruleset, audit):
    fired, requests = fetched_cards("pacing-maintenance-goal-completed", bundled_ruleset, audit)
    goal_search = next(r for r in requests if urlsplit(r["raw"]).path.endswith("/Goal"))
    statuses = set(parse_qs(urlsplit(goal_search["raw"]).query)["lifecycle-status"][0].split(","))
    assert "completed" in statuses
    assert not statuses & {"cancelled", "entered-in-error", "rejected"}
    # at maintenance (the completed goal's 6000 steps a day): no "step up" card; no open goal, so the nudge to agree
    # the next one
    assert "pacing.progress" not in fired and "pacing.goal-review" in fired


def test_a_cancelled_goal_is_not_fetched_and_does_not_count(bundled_ruleset, audit):
    """The same chart with the goal cancelled instead of completed: it is not asked for, so he is steady and gets
    the step-up card (a cancelled goal agreed nothing)."""
    chart = json.loads((PATIENTS / "pacing-maintenance-goal-completed.json").read_text())
    goal = copy.deepcopy(next(e["resource"] for e in chart["entry"] if e["resource"]["resourceType"] == "Goal"))
    goal.update(id=goal["id"] + "-cancelled", lifecycleStatus="cancelled")
    fired, _ = fetched_cards("pacing-steady", bundled_ruleset, audit,
                             extra=[dict(goal, subject={"reference": "Patient/pt-steady"})])
    assert "pacing.progress" in fired


def test_a_goal_raise_over_a_completed_goal_is_seen_through_the_fhir_server(bundled_ruleset, audit):
    """The step up is a completed goal followed by a new, higher one: both must be fetched for the card."""
    fired, _ = fetched_cards("pacing-goal-step-up-pain", bundled_ruleset, audit)
    assert "pacing.step-up-response" in fired
