import copy
import threading

import pytest

from engine import InputError
from tests.conftest import NOW, load_example, walk

SUMMARY_LIMIT = 139


def assert_conformant(card, ruleset):
    for path, value in walk(card):
        assert value is not None, f"null at {path}"
        assert value not in ("", [], {}), f"empty value at {path}"
    assert 1 <= len(card["summary"]) <= SUMMARY_LIMIT and "\n" not in card["summary"]
    assert card["indicator"] in ("info", "warning", "critical")
    assert card["source"]["label"]
    assert len(card["uuid"]) == 36
    ext = card["extension"]
    rule = ruleset.rule(ext["pacecds.rule"]["id"])
    assert ext["pacecds.rule"]["version"] == rule.version
    assert ext["pacecds.ruleset"] == {"name": ruleset.name, "version": ruleset.version, "sha256": ruleset.sha256}
    for reason in card.get("overrideReasons", []):
        assert reason["display"] and reason["code"] and reason["system"]
    if "suggestions" in card:
        assert card["selectionBehavior"] in ("at-most-one", "any")


def ids(result):
    return [c["extension"]["pacecds.rule"]["id"] for c in result.cards]


def test_cards_are_conformant_and_traceable(ruleset):
    for name in ("anemia-woman-low-gdl", "anemia-severe", "tsh-high-lab-range", "tsh-low-no-range"):
        result = ruleset.evaluate(load_example(name), now=NOW)
        assert result.cards, name
        for card in result.cards:
            assert_conformant(card, ruleset)
        assert result.fired[0].facts, "fired rules carry the facts they matched"


def test_fired_facts_carry_provenance(ruleset):
    result = ruleset.evaluate(load_example("anemia-woman-low-gdl"), now=NOW)
    (fired,) = result.fired
    assert fired.facts["hemoglobin"]["provenance"] == ["Observation/hb-anna-1"]
    assert fired.facts["hemoglobin"]["values"]["value"] == pytest.approx(10.8)
    assert fired.card_uuid == result.cards[0]["uuid"]


def test_card_uuids_are_unique_per_evaluation(ruleset):
    patient = load_example("anemia-woman-low-gdl")
    a = ruleset.evaluate(patient, now=NOW).cards[0]["uuid"]
    b = ruleset.evaluate(patient, now=NOW).cards[0]["uuid"]
    assert a != b


def test_no_guidance_is_an_empty_card_list(ruleset):
    assert ruleset.evaluate(load_example("tsh-within-lab-range"), now=NOW).response() == {"cards": []}


def test_missing_data_is_named(ruleset):
    result = ruleset.evaluate(load_example("tsh-high-lab-range"), now=NOW)
    assert "hemoglobin" in result.missing


def test_unit_variants_compare_alike(ruleset):
    base = load_example("anemia-woman-low-gdl")
    obs = next(e["resource"] for e in base["entry"] if e["resource"]["id"] == "hb-anna-1")
    for value, code, fires in ((11.9, "g/dL", True), (119, "g/L", True), (121, "g/L", False), (7.3, "mmol/L", True),
                               (7.5, "mmol/L", False), (11900, "mg/dL", True), (12100, "mg/dL", False)):
        obs["valueQuantity"].update(value=value, code=code, unit=code)
        result = ruleset.evaluate(base, now=NOW)
        assert ("anemia.low-hemoglobin" in ids(result)) is fires, (value, code)


def test_detail_escapes_patient_text(ruleset, tmp_path):
    from engine.templates import escape_markdown

    z = "\u200b"  # a zero-width space breaks what autolinkers would take for a link (issue 14, item 3)
    assert escape_markdown("[click](https://evil.example)") == \
        rf"\[click\]{z}\(https\:{z}\/{z}\/evil\.{z}example\)"
    assert escape_markdown("<script>") == rf"\<{z}script\>"


def test_another_patients_data_is_ignored(ruleset):
    bundle = load_example("tsh-within-lab-range")
    intruder = copy.deepcopy(load_example("tsh-low-no-range"))
    stray = next(e for e in intruder["entry"] if e["resource"]["resourceType"] == "Observation")
    stray["resource"]["effectiveDateTime"] = "2026-10-30T10:00:00Z"  # newer than the patient's own TSH
    bundle["entry"].append(stray)
    request = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
               "context": {"patientId": "pt-kim", "userId": "Practitioner/1"}, "prefetch": {"b": bundle}}
    assert ruleset.evaluate(request, now=NOW).cards == []


def test_prefetch_keys_do_not_change_cards(ruleset):
    bundle = load_example("anemia-woman-low-gdl")
    resources = [e["resource"] for e in bundle["entry"]]
    one = {"hook": "patient-view", "hookInstance": "a", "context": {"patientId": "pt-anna"}, "prefetch": {"everything": bundle}}
    split = {"hook": "patient-view", "hookInstance": "b", "context": {"patientId": "pt-anna"},
             "prefetch": {f"k{i}": r for i, r in enumerate(resources)} | {"nothing": None}}
    assert ids(ruleset.evaluate(one, now=NOW)) == ids(ruleset.evaluate(split, now=NOW)) == ["anemia.low-hemoglobin"]


def test_operation_outcome_in_prefetch_is_not_data(ruleset):
    request = {"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "pt-anna"},
               "prefetch": {"labs": {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]},
                            "patient": load_example("anemia-woman-low-gdl")["entry"][0]["resource"]}}
    result = ruleset.evaluate(request, now=NOW)
    assert result.cards == [] and "hemoglobin" in result.missing


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b["entry"][1]["resource"].update(code="718-7"), "entry[1] (Observation/hb-anna-1): invalid field 'code'"),
    (lambda b: b["entry"][1]["resource"]["valueQuantity"].update(value="ten"), "entry[1] (Observation/hb-anna-1): invalid field 'valueQuantity"),
    (lambda b: b["entry"][0]["resource"].update(resourceType="Patientt"), "unknown FHIR R4 resourceType 'Patientt'"),
    (lambda b: b["entry"].append({"fullUrl": "x"}), "entry[3] has no resource"),
])
def test_invalid_fhir_names_entry_and_field(ruleset, mutate, message):
    bundle = load_example("anemia-woman-low-gdl")
    mutate(bundle)
    with pytest.raises(InputError) as info:
        ruleset.evaluate(bundle, now=NOW)
    assert message in str(info.value)


def test_resources_no_rule_reads_are_not_validated(ruleset):
    bundle = load_example("anemia-woman-low-gdl")
    # a broken resource of a type no fact reads costs nothing and breaks nothing
    bundle["entry"].append({"resource": {"resourceType": "Immunization", "id": "imm-1", "status": 42}})
    assert ids(ruleset.evaluate(bundle, now=NOW)) == ["anemia.low-hemoglobin"]


def test_not_json_object_and_unknown_shapes_are_input_errors(ruleset):
    for bad in ([], "x", {"resourceType": "Patient", "id": "p"}, {"hook": "patient-view", "context": []}):
        with pytest.raises(InputError):
            ruleset.evaluate(bad, now=NOW)


def test_five_thousand_sequential_evaluations(ruleset):
    """durable-rules breaks at the 1,025th live session; each evaluation must delete its own."""
    firing = load_example("anemia-woman-low-gdl")
    quiet = load_example("tsh-within-lab-range")
    for i in range(5000):
        result = ruleset.evaluate(firing if i % 2 == 0 else quiet, now=NOW)
        assert len(result.cards) == (1 if i % 2 == 0 else 0)


def test_sixteen_threads_never_mix_patients(ruleset):
    names = ["anemia-woman-low-gdl", "anemia-woman-low-gl", "anemia-man-low-mmol", "anemia-severe",
             "tsh-high-lab-range", "tsh-low-no-range", "tsh-within-lab-range", "anemia-stale"]
    patients = [load_example(n) for n in names]
    expected = {}
    for name, patient in zip(names, patients):
        result = ruleset.evaluate(patient, now=NOW)
        expected[name] = (result.patient_id, sorted(c["summary"] for c in result.cards))
    failures = []

    def worker(k):
        for i in range(200):
            name = names[(k + i) % len(names)]
            result = ruleset.evaluate(patients[(k + i) % len(names)], now=NOW)
            got = (result.patient_id, sorted(c["summary"] for c in result.cards))
            if got != expected[name]:
                failures.append((name, got))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_a_reopened_chart_gives_the_same_facts_and_never_another_patients(ruleset):
    """What facts derive from a validated chart is shared by evaluations of the same content; the patient in
    context is part of what is shared, so the same prefetch under another patient id reads none of it."""
    from bench.generate import NOW as BENCH_NOW
    from bench.generate import make_request

    request = make_request("small", patient_id="reopen-1", hemoglobin=9.1)
    first = ruleset.evaluate(copy.deepcopy(request), now=BENCH_NOW)
    again = ruleset.evaluate(copy.deepcopy(request), now=BENCH_NOW)
    assert first.facts == again.facts
    assert first.facts["hemoglobin"].values["value"] == pytest.approx(9.1)
    assert [c["summary"] for c in first.cards] == [c["summary"] for c in again.cards]

    other = copy.deepcopy(request)
    other["context"]["patientId"] = "reopen-2"  # a mis-assembled request: the data is about reopen-1
    result = ruleset.evaluate(other, now=BENCH_NOW)
    assert not result.facts["hemoglobin"].present
    assert not any(ref.startswith("Observation/") for f in result.facts.values() for ref in f.provenance)
