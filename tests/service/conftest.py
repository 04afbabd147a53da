"""Shared fixtures for the CDS Hooks service tests (rows of shared/cds-hooks/CHECKLIST.md)."""
from __future__ import annotations

import functools
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest

from audit import AuditStore
from engine import load_ruleset
from server import create_app
from service.config import ServiceConfig

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "cds-hooks"
PUBLIC_URL = "https://cds.example.org"
ISS = "https://fhir-ehr.example.com/"          # the issuer of the spec's example JWT
KID = "example-kid"


def fixture(name: str):
    path = FIX / name
    return json.loads(path.read_text()) if name.endswith(".json") else path.read_text().strip()


PRIVATE_JWK = fixture("spec-jwk-private-EXAMPLE-ONLY.json")
PUBLIC_JWKS = fixture("spec-jwks-public.json")


def mint(aud: str, *, claims: dict | None = None, headers: dict | None = None, key=None, alg: str = "ES384",
         drop: tuple[str, ...] = ()) -> str:
    """A JWT as a CDS client would send it, signed with the spec's example private key by default."""
    now = int(time.time())
    payload = {"iss": ISS, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    payload.update(claims or {})
    for d in drop:
        payload.pop(d, None)
    hdr = {"kid": KID, "typ": "JWT"}
    hdr.update(headers or {})
    if key is None:
        key = jwt.PyJWK(PRIVATE_JWK).key
    return jwt.encode(payload, key, algorithm=alg, headers=hdr)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def service_aud(service_id: str) -> str:
    return f"{PUBLIC_URL}/cds-services/{service_id}"


from tests.conftest import walk  # noqa: E402,F401 - re-exported for the service tests

# --------------------------------------------------------------------------- example patients

PATIENT_ID = "pace-1"


def patient(pid: str = PATIENT_ID) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1970-03-01"}


def hb_observation(oid: str, value: float, pid: str = PATIENT_ID, date: str | None = None) -> dict:
    date = date or time.strftime("%Y-%m-%dT08:00:00Z", time.gmtime(time.time() - 86400 * 3))
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": date,
            "valueQuantity": {"value": value, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}}


def searchset(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"resource": r} for r in resources]}


def full_prefetch(observations=(), conditions=(), medications=()) -> dict:
    """Every key the patient-view discovery entry advertises, filled (empty searchsets where not given), so a
    test never depends on which resource types the knowledge base happens to read today."""
    from service.services import build_prefetch
    given = {"observations": observations, "conditions": conditions, "medications": medications}
    out = {"patient": patient()}
    for spec in build_prefetch(bundled().data_requirements("patient-view"), lookback_days=400):
        if spec.key != "patient":
            out[spec.key] = searchset(list(given.get(spec.key, ())))
    if "medications" not in out:
        out["medications"] = searchset(list(medications))
    return out


def draft_medication_request(mid: str = "draft-oxy-1", pid: str = PATIENT_ID) -> dict:
    """An R4 draft order for a sedating medication (oxycodone 5 mg tablets)."""
    return {"resourceType": "MedicationRequest", "id": mid, "status": "draft", "intent": "order",
            "medicationCodeableConcept": {"coding": [{
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1049621",
                "display": "oxycodone hydrochloride 5 MG Oral Tablet"}]},
            "subject": {"reference": f"Patient/{pid}"}, "authoredOn": "2026-11-26",
            "dosageInstruction": [{"text": "5 mg every 6 hours as needed",
                                   "timing": {"repeat": {"frequency": 1, "period": 6, "periodUnit": "h"}},
                                   "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg",
                                                                     "system": "http://unitsofmeasure.org",
                                                                     "code": "mg"}}]}]}


def order_request(hook: str, prefetch: dict | None = None) -> dict:
    """An order-select / order-sign request with R4-valid draft orders (the published examples are STU3-shaped)."""
    order = draft_medication_request()
    ctx = {"userId": "PractitionerRole/123", "patientId": PATIENT_ID,
           "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}}
    if hook == "order-select":
        ctx["selections"] = [f"MedicationRequest/{order['id']}"]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": ctx,
            "prefetch": prefetch if prefetch is not None else {"patient": patient()}}


def patient_view_request(prefetch: dict | None = None, **extra) -> dict:
    req = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
           "context": {"userId": "Practitioner/dr-1", "patientId": PATIENT_ID}}
    if prefetch is not None:
        req["prefetch"] = prefetch
    req.update(extra)
    return req


# --------------------------------------------------------------------------- the ruleset under test

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


class SpyRuleset:
    """The real bundled ruleset, with a record of what the service handed to evaluate()."""

    def __init__(self, real):
        self._real = real
        self.calls = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def evaluate(self, request, now=None, hook=None):
        self.calls.append(request)  # the adapter's PatientData the service pooled
        return self._real.evaluate(request, now=now, hook=hook)


@functools.lru_cache(maxsize=None)
def bundled():
    # Compiled once per test session: durable-rules registers rulesets by name in one host.
    return load_ruleset(RULES_DIR)


@pytest.fixture(scope="session")
def bundled_ruleset():
    return bundled()


@pytest.fixture
def ruleset(bundled_ruleset):
    return SpyRuleset(bundled_ruleset)


@pytest.fixture
def audit(tmp_path):
    """The real audit store (audit) on a throwaway SQLite file."""
    store = AuditStore.from_config(f"sqlite:///{tmp_path}/audit.db", key=b"test-audit-key-0123456789abcdef")
    yield store
    store.close()


@pytest.fixture
def make_app(ruleset, audit):
    def _make(**overrides):
        values = dict(env="test", ruleset=ruleset, audit_store=audit)
        values.update(overrides)
        return create_app(ServiceConfig(**values))
    return _make


@pytest.fixture
def client(make_app):
    """Unauthenticated (local development) app."""
    return make_app().test_client()


@pytest.fixture
def issuers():
    return [{"iss": ISS, "jwks": PUBLIC_JWKS}]


@pytest.fixture
def auth_app(make_app, issuers):
    return make_app(public_url=PUBLIC_URL, trusted_issuers=issuers)


@pytest.fixture
def auth_client(auth_app):
    return auth_app.test_client()


class FixedNowRuleset(SpyRuleset):
    """The bundled ruleset evaluated at a fixed time, so the dated example patients give their expected cards."""

    def __init__(self, real, now):
        super().__init__(real)
        self.now = now

    def evaluate(self, request, now=None, hook=None):
        return super().evaluate(request, now=self.now, hook=hook)
