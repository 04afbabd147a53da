"""Knowledge-base value sets and drug data: structure, provenance, required members, opioid strength table."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from fhir.resources.R4B.valueset import ValueSet

from tests.conftest import load_tool

ROOT = Path(__file__).resolve().parents[2]
VS_DIR = ROOT / "rules" / "valuesets"
DRUGS = ROOT / "rules" / "drugs"
SHARED = Path("/work/shared/valuesets")
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SOURCE_EXT = "https://pacecds.org/fhir/StructureDefinition/code-source"

CLASS_SETS = {
    "z-drugs": ("zolpidem", "zaleplon", "eszopiclone"),
    "gabapentinoids": ("gabapentin", "pregabalin"),
    "skeletal-muscle-relaxants": ("carisoprodol", "chlorzoxazone", "cyclobenzaprine", "metaxalone", "methocarbamol",
                                  "orphenadrine"),
    "sedating-antidepressants": ("amitriptyline", "nortriptyline", "doxepin", "imipramine", "trimipramine",
                                 "trazodone", "mirtazapine"),
    "sedating-antihistamines": ("diphenhydramine", "hydroxyzine", "doxylamine", "promethazine"),
}
COPIED = {
    "opioid-analgesics-with-ambulatory-misuse-potential.json": "cdc-opioid-cds",
    "benzodiazepine-medications.json": "cdc-opioid-cds",
    "cns-depressant-medications.json": "cdc-opioid-cds",
    "conditions-documenting-sleep-disordered-breathing.json": "cdc-opioid-cds",
    "buprenorphine-medications.json": "cdc-opioid-cds",
    "methadone-medications.json": "cdc-opioid-cds",
    "fentanyl-type-medications.json": "cdc-opioid-cds",
    "conditions-associated-with-chronic-pain.json": "ahrq-pain-management-summary",
    "major-depression.json": "ahrq-pain-management-summary",
    "anxiety.json": "ahrq-pain-management-summary",
    "sleep-disordered-breathing.json": "ahrq-pain-management-summary",
    "cds-pregnancy.json": "ahrq-pain-management-summary",
    # opioid guidance exclusions, naloxone and substance misuse (issue 12)
    "sickle-cell-diseases.json": "cdc-opioid-cds",
    "cdc-malignant-cancer-conditions.json": "cdc-opioid-cds",
    "conditions-likely-terminal-for-opioid-prescribing.json": "cdc-opioid-cds",
    "limited-life-expectancy-conditions.json": "cdc-opioid-cds",
    "therapies-indicating-end-of-life-care.json": "cdc-opioid-cds",
    "hospice-procedure.json": "cdc-opioid-cds",
    "hospice-finding.json": "cdc-opioid-cds",
    "naloxone-medications.json": "cdc-opioid-cds",
    "conditions-documenting-substance-misuse.json": "cdc-opioid-cds",
}


def members(doc: dict) -> list[tuple[str, str, str | None]]:
    """(system, code, display) of every compose concept and expansion entry, duplicates kept."""
    out = []
    for inc in (doc.get("compose") or {}).get("include") or []:
        for c in inc.get("concept") or []:
            out.append((inc.get("system"), c["code"], c.get("display")))
    stack = list((doc.get("expansion") or {}).get("contains") or [])
    while stack:
        item = stack.pop()
        stack.extend(item.get("contains") or [])
        if item.get("code"):
            out.append((item.get("system"), item["code"], item.get("display")))
    return out


def vs(stem: str) -> dict:
    return json.loads((VS_DIR / f"{stem}.json").read_text())


def codes_of(stem: str) -> dict[str, str | None]:
    return {code: display for _, code, display in members(vs(stem))}


ALL_JSON = sorted(VS_DIR.glob("*.json"))


def test_expected_files_present():
    names = {p.name for p in ALL_JSON}
    assert set(COPIED) <= names
    assert {f"{s}.json" for s in CLASS_SETS} <= names
    assert (VS_DIR / "SOURCES.md").is_file()


@pytest.mark.parametrize("path", ALL_JSON, ids=lambda p: p.stem)
def test_parses_as_fhir_r4b_valueset(path):
    doc = json.loads(path.read_text())
    model = ValueSet.model_validate(doc)
    assert model.url and (model.title or model.name)
    assert members(doc), "value set lists no codes"


@pytest.mark.parametrize("path", ALL_JSON, ids=lambda p: p.stem)
def test_no_duplicate_codes(path):
    doc = json.loads(path.read_text())
    # a published set may carry both compose and expansion; count each part on its own
    parts = [{"compose": doc.get("compose")}, {"expansion": doc.get("expansion")}]
    for part in parts:
        keys = [(s, c) for s, c, _ in members(part)]
        dupes = {k for k in keys if keys.count(k) > 1}
        assert not dupes, f"{path.name}: duplicate codes {sorted(dupes)[:5]}"


@pytest.mark.parametrize("name,folder", sorted(COPIED.items()))
def test_copied_files_are_unchanged(name, folder):
    original = SHARED / folder / name
    if not original.exists():
        pytest.skip("shared value sets not available on this machine")
    assert hashlib.sha256((VS_DIR / name).read_bytes()).hexdigest() == \
        hashlib.sha256(original.read_bytes()).hexdigest()


@pytest.mark.parametrize("stem", sorted(CLASS_SETS))
def test_class_set_shape_and_provenance(stem):
    doc = vs(stem)
    assert doc["status"] == "active" and doc["id"] == stem
    assert "expansion" not in doc
    includes = doc["compose"]["include"]
    assert includes
    for inc in includes:
        assert inc["system"] == RXNORM
        sources = [e["valueString"] for e in inc.get("extension", []) if e["url"] == SOURCE_EXT]
        assert len(sources) == 1 and re.search(r"VSAC|CDC", sources[0]), "every include names its source"
        for concept in inc["concept"]:
            assert re.fullmatch(r"\d{4,8}", concept["code"]), concept
            assert concept.get("display"), f"{stem}: code {concept['code']} has no display"


@pytest.mark.parametrize("stem,ingredients", sorted(CLASS_SETS.items()))
def test_every_class_member_names_a_class_ingredient(stem, ingredients):
    pattern = re.compile(r"\b(" + "|".join(ingredients) + r")\b")
    for code, display in codes_of(stem).items():
        assert pattern.search(display), f"{stem}: {code} {display!r} names none of {ingredients}"


@pytest.mark.parametrize("stem,ingredients", sorted(CLASS_SETS.items()))
def test_every_class_ingredient_has_members(stem, ingredients):
    displays = " | ".join(codes_of(stem).values())
    for ingredient in ingredients:
        assert re.search(rf"\b{ingredient}\b", displays), f"{stem} has no {ingredient} product"


REQUIRED = [
    ("gabapentinoids", "310431", "gabapentin 300 MG Oral Capsule"),
    ("gabapentinoids", "483450", "pregabalin 75 MG Oral Capsule"),
    ("skeletal-muscle-relaxants", "828348", "cyclobenzaprine hydrochloride 10 MG Oral Tablet"),
    ("skeletal-muscle-relaxants", "197446", "carisoprodol 350 MG Oral Tablet"),
    ("skeletal-muscle-relaxants", "197943", "methocarbamol 500 MG Oral Tablet"),
    ("sedating-antidepressants", "856834", "amitriptyline hydrochloride 25 MG Oral Tablet"),
    ("sedating-antidepressants", "317136", "nortriptyline 25 MG Oral Capsule"),
    ("sedating-antidepressants", "856377", "trazodone hydrochloride 50 MG Oral Tablet"),
    ("sedating-antidepressants", "311725", "mirtazapine 15 MG Oral Tablet"),
    ("sedating-antihistamines", "1049630", "diphenhydramine hydrochloride 25 MG Oral Tablet"),
    ("sedating-antihistamines", "995258", "hydroxyzine hydrochloride 25 MG Oral Tablet"),
    ("z-drugs", "854873", "zolpidem tartrate 10 MG Oral Tablet"),
    ("z-drugs", "485442", "eszopiclone 2 MG Oral Tablet"),
    ("z-drugs", "313761", "zaleplon 10 MG Oral Capsule"),
    ("benzodiazepine-medications", "308048", "alprazolam 0.5 MG Oral Tablet"),
    ("benzodiazepine-medications", "197901", "lorazepam 1 MG Oral Tablet"),
    ("opioid-analgesics-with-ambulatory-misuse-potential", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet"),
]


@pytest.mark.parametrize("stem,code,display", REQUIRED)
def test_required_member(stem, code, display):
    assert codes_of(stem).get(code) == display


def test_class_sets_agree_with_published_sets():
    """A code that also appears in a published set copied here must carry the same display there."""
    published: dict[str, str] = {}
    for name in COPIED:
        for system, code, display in members(json.loads((VS_DIR / name).read_text())):
            if system == RXNORM and display:
                published[code] = display
    checked = 0
    for stem in CLASS_SETS:
        for code, display in codes_of(stem).items():
            if code in published:
                checked += 1
                assert published[code] == display, (stem, code, display, published[code])
    assert checked >= 20  # zolpidem/zaleplon at least, plus combinations shared with the benzodiazepine set


def test_z_drugs_take_every_cdc_zolpidem_and_zaleplon_product_and_nothing_else_from_it():
    cdc = codes_of("cns-depressant-medications")
    expected = {c for c, d in cdc.items() if re.search(r"\b(zolpidem|zaleplon|eszopiclone)\b", d)}
    z = codes_of("z-drugs")
    assert expected <= set(z)
    assert not {c for c in z if c in cdc} - expected  # no anaesthetic gas, anorectic or meclizine


def test_class_set_files_are_what_the_generator_builds():
    built = load_tool("build_class_valuesets").build()
    assert set(built) == set(CLASS_SETS)
    for stem, doc in built.items():
        assert vs(stem) == doc, f"{stem}.json differs from tools/build_class_valuesets.py output; re-run it"


# --- opioid strength table and MME factors ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def table():
    return json.loads((DRUGS / "opioid-strengths.json").read_text())


@pytest.fixture(scope="module")
def rows(table):
    return {r["code"]: r for r in table["drugs"]}


def test_table_is_what_the_generator_builds(table):
    tool = load_tool("build_opioid_table")
    assert table == tool.build(), "re-run tools/build_opioid_table.py"
    assert (DRUGS / "opioid-strengths.json").read_text() == tool.dumps(tool.build())


def test_drug_data_is_json_so_the_rules_loader_does_not_read_it_as_rules():
    assert sorted(p.name for p in DRUGS.iterdir()) == ["mme-conversion-factors.json", "opioid-strengths.json"]


def test_table_covers_every_opioid_in_the_value_set(rows):
    opioid_codes = set(codes_of("opioid-analgesics-with-ambulatory-misuse-potential"))
    assert set(rows) == opioid_codes
    for code, r in rows.items():
        assert r["status"] in ("parsed", "not_parsed")
        if r["status"] == "not_parsed":
            assert r["note"]


@pytest.mark.parametrize("code,ingredient,strength,unit,form,route", [
    ("1049621", "oxycodone", 5, "MG", "Oral Tablet", "oral"),
    ("1049683", "oxycodone", 10, "MG", "Oral Tablet", "oral"),
    ("892582", "morphine", 15, "MG", "Oral Tablet", "oral"),
    ("835603", "tramadol", 50, "MG", "Oral Tablet", "oral"),
    ("245134", "fentanyl", 0.025, "MG/HR", "Transdermal System", "transdermal"),
    ("864826", "methadone", 5, "MG/ML", "Oral Solution", "oral"),
    ("856940", "hydrocodone", 0.5, "MG/ML", "Oral Solution", "oral"),
    ("1014599", "oxycodone", 10, "MG", "Oral Tablet", "oral"),
    ("1860154", "oxycodone", 15, "MG", "Extended Release Oral Tablet", "oral"),
    ("1148491", "tramadol", 300, "MG", "Extended Release Oral Capsule", "oral"),
])
def test_spot_checks(rows, code, ingredient, strength, unit, form, route):
    r = rows[code]
    assert r["status"] == "parsed"
    assert (r["ingredient"], r["strength"], r["unit"], r["dose_form"], r["route"]) == \
        (ingredient, strength, unit, form, route)


def test_combination_product_keeps_the_other_ingredient_out_of_the_strength(rows):
    r = rows["1014599"]  # acetaminophen 300 MG / oxycodone hydrochloride 10 MG Oral Tablet
    assert r["other_ingredients"] == ["acetaminophen"] and r["strength"] == 10


def test_qualifiers_are_kept(rows):
    assert rows["1860154"]["release"] == "12 HR" and rows["1860154"]["abuse_deterrent"] is True
    assert rows["245134"]["release"] == "72 HR"
    assert rows["1148491"]["brand"] == "ConZip"


def test_packs_are_not_guessed(rows):
    packs = [r for r in rows.values() if r["display"].startswith("{")]
    assert packs and all(r["status"] == "not_parsed" and "strength" not in r for r in packs)


def test_parser_rejects_what_it_does_not_understand():
    parse = load_tool("build_opioid_table").parse
    assert parse("1", "oxycodone hydrochloride 5 MG")["status"] == "not_parsed"          # no dose form
    assert parse("2", "ibuprofen 200 MG Oral Tablet")["status"] == "not_parsed"          # no opioid
    r = parse("3", "morphine sulfate 10 MG / oxycodone hydrochloride 5 MG Oral Tablet")  # two opioids
    assert r["status"] == "not_parsed" and "more than one opioid" in r["note"]


@pytest.fixture(scope="module")
def factors():
    return json.loads((DRUGS / "mme-conversion-factors.json").read_text())


def test_mme_factors_are_the_cdc_2022_table(factors):
    expected = {"codeine": 0.15, "hydrocodone": 1, "hydromorphone": 5, "methadone": 4.7, "morphine": 1,
                "oxycodone": 1.5, "oxymorphone": 3, "tapentadol": 0.4, "tramadol": 0.2, "fentanyl": 2.4}
    assert {k: v["factor"] for k, v in factors["factors"].items()} == expected
    assert factors["factors"]["fentanyl"] == {**factors["factors"]["fentanyl"], "per": "ug/h",
                                              "routes": ["transdermal"]}
    assert all(v["routes"] == ["oral"] for k, v in factors["factors"].items() if k != "fentanyl")
    assert "buprenorphine" in factors["not_converted"] and "buprenorphine" not in factors["factors"]
    assert "2022" in factors["source"]["citation"] and factors["source"]["url"].startswith("https://www.cdc.gov/")


def test_common_opioids_have_a_factor(rows, factors):
    parsed = {r["ingredient"] for r in rows.values() if r["status"] == "parsed"}
    for ingredient in ("oxycodone", "hydrocodone", "morphine", "tramadol", "hydromorphone", "tapentadol",
                       "methadone", "codeine", "oxymorphone", "fentanyl"):
        assert ingredient in parsed and ingredient in factors["factors"]
