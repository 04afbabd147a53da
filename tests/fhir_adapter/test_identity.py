"""Patient identity, decided in one place (fhir_adapter.identity) for the service, the CLI and every fact."""
import pytest

from fhir_adapter.identity import OTHER, SHARED, THIS, UNCLEAR, PatientIdentity, patient_key

SERVER = "https://ehr.example.org/fhir"


def obs(subject=None, member="subject"):
    r = {"resourceType": "Observation", "id": "o1"}
    if subject is not None:
        r[member] = subject
    return r


@pytest.mark.parametrize("subject, expected", [
    ({"reference": "Patient/anna"}, THIS),
    ({"reference": "Patient/anna/_history/2"}, THIS),             # a version of Anna is still Anna
    ({"reference": f"{SERVER}/Patient/anna"}, THIS),               # the server the request named
    ({"reference": f"{SERVER}/Patient/anna/_history/7"}, THIS),
    ({"reference": "Patient/bob"}, OTHER),
    ({"reference": "Patient/bob/_history/1"}, OTHER),
    ({"reference": f"{SERVER}/Patient/bob"}, OTHER),
    ({"reference": "https://elsewhere.example/fhir/Patient/anna"}, UNCLEAR),  # same id, another server
    ({"identifier": {"system": "urn:mrn", "value": "1"}}, UNCLEAR),
    ({"display": "Anna"}, UNCLEAR),
    ({"reference": "#contained-patient"}, UNCLEAR),
    ({"reference": "urn:uuid:0b5c1f9e-63a0-4a5a-8bdf-5b7a0b6e0f10"}, UNCLEAR),
    ({"reference": "Group/anna"}, UNCLEAR),
    ({"reference": "Patient/anna/extra"}, UNCLEAR),
    ("Patient/anna", UNCLEAR),                                     # not a Reference object
    (None, UNCLEAR),                                               # no subject at all
])
def test_observation_subjects(subject, expected):
    verdict, reason = PatientIdentity("anna", SERVER).verdict(obs(subject))
    assert verdict == expected
    assert bool(reason) == (expected != THIS)


def test_patient_member_and_patient_resource():
    ident = PatientIdentity("anna")
    allergy = {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/anna"}}
    assert ident.verdict(allergy)[0] == THIS
    assert ident.verdict({"resourceType": "Patient", "id": "anna"})[0] == THIS
    assert ident.verdict({"resourceType": "Patient", "id": "bob"})[0] == OTHER


def test_absolute_reference_without_a_named_server_is_unclear():
    verdict, reason = PatientIdentity("anna").verdict(obs({"reference": f"{SERVER}/Patient/anna"}))
    assert verdict == UNCLEAR and "another server" in reason


def test_reference_data_is_shared_and_no_patient_means_unclear():
    assert PatientIdentity("anna").verdict({"resourceType": "Medication", "id": "m"})[0] == SHARED
    assert PatientIdentity(None).verdict(obs({"reference": "Patient/anna"})) == (
        UNCLEAR, "the evaluation names no patient")


@pytest.mark.parametrize("resource, key", [
    ({"resourceType": "Patient", "id": "p1"}, "p1"),
    ({"resourceType": "Observation", "subject": {"reference": "Patient/p1"}}, "p1"),
    ({"resourceType": "Observation", "subject": {"reference": "https://ehr.example/fhir/Patient/p1/_history/2"}}, "p1"),
    ({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"}}, "p1"),
    ({"resourceType": "Coverage", "beneficiary": {"reference": "Patient/p1"}}, "p1"),
    ({"resourceType": "Observation", "subject": {"reference": "Group/g1"}}, None),
    ({"resourceType": "Observation", "subject": {"identifier": {"value": "123"}}}, None),
    ({"resourceType": "Observation"}, None),
    ({"resourceType": "Patient"}, None),
    ({"resourceType": "Medication", "id": "m1"}, None),
])
def test_patient_key_routes_a_resource_to_the_patient_it_names(resource, key):
    # routing only (population exports): what Pool then keeps is still PatientIdentity.verdict's decision
    assert patient_key(resource) == key

