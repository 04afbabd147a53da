"""Pacing cards link to their stored decision in the console (a CDS Hooks `absolute` link by the card's uuid),
only when the console is served, PACECDS_PUBLIC_URL is set and decisions are stored."""
import logging

import pytest

from engine.ruleset import parse_now
from server import create_app
from service.config import ServiceConfig
from service.handlers import CONSOLE_LINK_LABEL
from service.validation import is_valid
from tests.console.conftest import FLARE, FLARE_NOW, FixedNow, https_client, patient, record_flare_decision, sign_in
from tests.console.htmlcheck import dangers, text
from tests.service.conftest import ISS, PUBLIC_JWKS

BASE = "https://console.example.org"


def make(ruleset, audit, **cfg):
    return create_app(ServiceConfig(env="test", ruleset=FixedNow(ruleset, parse_now(FLARE_NOW)), audit_store=audit,
                                    **cfg))


def console_links(response: dict) -> list[tuple[dict, dict]]:
    return [(c, link) for c in response["cards"] for link in c.get("links") or []
            if link["label"] == CONSOLE_LINK_LABEL]


def test_a_pacing_card_links_to_its_decision(ruleset, audit, caplog):
    client = make(ruleset, audit, public_url=BASE).test_client()
    stored = record_flare_decision(client)
    response = stored["response"]
    assert is_valid(response, "response")
    links = console_links(response)
    assert links, response
    for card, link in links:
        rule = card["extension"]["pacecds.rule"]["id"]
        assert "pacing" in ruleset.rule(rule).facts
        assert link == {"label": CONSOLE_LINK_LABEL, "url": f"{BASE}/console/card/{card['uuid']}",
                        "type": "absolute"}
    linked = {c["uuid"] for c, _ in links}
    for card in response["cards"]:  # a card whose rule does not read the pacing fact gets no console link
        if card["uuid"] not in linked:
            assert "pacing" not in ruleset.rule(card["extension"]["pacecds.rule"]["id"]).facts
    # nothing of the patient in the address: the only variable part is the card's random uuid
    bundle = patient(FLARE)
    person = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    for _, link in links:
        assert stored["patient_id"] not in link["url"]
        for name in person.get("name") or []:
            assert all(part not in link["url"] for part in name.get("given", []) + [name.get("family", "")] if part)

    card, link = links[0]
    with caplog.at_level(logging.INFO, logger="pacecds.console"):
        page = client.get(link["url"].removeprefix(BASE))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert dangers(html) == []
    shown = text(html)
    assert card["summary"] in shown
    assert "flare, still rising" in shown  # the pacing state the card was based on
    assert "<svg" in html and "quota" in shown and "4400" in shown  # the levels chart and its table
    assert "pacing.flare-scale-back" in shown  # why it fired
    assert any(f"card={card['uuid']}" in m for m in caplog.messages)


def test_no_link_without_a_public_url_or_a_console(ruleset, audit):
    assert not console_links(record_flare_decision(make(ruleset, audit).test_client())["response"])
    off = make(ruleset, audit, public_url=BASE,
               trusted_issuers=[{"iss": ISS, "jwks": PUBLIC_JWKS}], replay_store=_NoReplay())
    assert off.extensions["pacecds"].card_link_base is None  # issuers, no users: the console is disabled


def test_an_unknown_card_is_not_found(client):
    assert client.get("/console/card/00000000-0000-4000-8000-000000000000").status_code == 404


def test_a_signed_in_clinician_opens_the_linked_card(ruleset, audit, users_file):
    from tests.console.conftest import SECRET
    app = make(ruleset, audit, public_url=BASE, console_users_file=str(users_file), console_secret_key=SECRET)
    client = https_client(app)
    stored = record_flare_decision(client)
    _, link = console_links(stored["response"])[0]
    path = link["url"].removeprefix(BASE)
    r = client.get(path)
    assert r.status_code == 302  # sign in first; then the card opens
    r = sign_in(client, "carla")
    assert r.status_code == 303 and r.headers["Location"].endswith(path)
    page = client.get(path)
    assert page.status_code == 200 and "/console/audit/decision/" not in page.get_data(as_text=True)


class _NoReplay:
    def add(self, iss, jti, expires_at):
        return True


@pytest.fixture
def client(app):
    return app.test_client()
