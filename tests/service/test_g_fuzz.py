"""Bad input never yields a 500: generated, oddly shaped prefetch content through the whole service."""
from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service.conftest import patient

LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5))
ANY = st.recursive(LEAF, lambda ch: st.one_of(st.lists(ch, max_size=3), st.dictionaries(st.text(max_size=6), ch,
                                                                                         max_size=4)),
                   max_leaves=10)
RTYPE = st.sampled_from(["Patient", "Observation", "Condition", "Bundle", "MedicationRequest", "MedicationStatement",
                         "Goal", "OperationOutcome", "Foo", ""])
INNER = st.fixed_dictionaries({"resourceType": RTYPE},
                              optional={"id": st.one_of(st.text(max_size=4), st.integers()), "subject": ANY,
                                        "status": ANY, "code": ANY, "valueQuantity": ANY,
                                        "effectiveDateTime": ANY})
LINK = st.one_of(st.integers(), st.text(max_size=3), ANY, st.lists(st.fixed_dictionaries(
    {"relation": st.sampled_from(["next", "self", 1]), "url": st.one_of(st.text(max_size=8), st.integers())}),
    max_size=2))
ENTRY = st.one_of(st.integers(), ANY, st.lists(st.one_of(ANY, st.fixed_dictionaries({"resource": INNER})),
                                               max_size=3))
RESOURCE = st.fixed_dictionaries({"resourceType": RTYPE}, optional={
    "id": st.one_of(st.text(max_size=4), st.integers()), "subject": ANY, "status": ANY, "code": ANY})
# Bundles always carry the members whose shape code walks (entry, link), each in every odd form.
BUNDLE = st.fixed_dictionaries({"resourceType": st.just("Bundle"), "entry": ENTRY, "link": LINK})

def test_G_odd_prefetch_content_never_500(make_app):
    client = make_app().test_client()
    failures = []

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(st.sampled_from(["patient", "observations", "conditions", "x"]),
                           st.one_of(st.none(), BUNDLE, RESOURCE), max_size=4), st.booleans())
    def run(prefetch, with_patient):
        if with_patient:
            prefetch.setdefault("p0", patient())
        req = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
               "context": {"userId": "Practitioner/1", "patientId": "pace-1"}, "prefetch": prefetch}
        resp = client.post("/cds-services/pacing-review", json=req)
        if resp.status_code >= 500 or resp.status_code not in (200, 400, 412):
            failures.append((resp.status_code, resp.get_json(), prefetch))

    run()
    assert failures[:1] == []
