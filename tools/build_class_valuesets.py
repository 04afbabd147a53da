#!/usr/bin/env python3
"""Build the sedating-medication class value sets in rules/valuesets/ as FHIR R4 ValueSet JSON.

No RxCUI here is invented. Every code comes from a published value set, and each compose.include block names its
source in an extension (SOURCE_EXT) so a reviewer can check it:

* CDC opioid CDS value sets (cqframework/opioid-cds-r4, commit b29bdcbf6db6f3de26486dbc3820572ee9a78b89, CC0-1.0),
  present in this repository under rules/valuesets/ and read directly from there (z-drugs).
* VSAC value sets as published with expansions (code + display, RxNorm 2024-01) in the eCQM content IG
  repository cqframework/ecqm-content-qicore-2025, input/vocabulary/valueset/external/, transcribed below
  (only the members of the class; code and display exactly as published):
    - 2.16.840.1.113762.1.4.1248.134  Central Nervous System Depressants          (commit 8476c37ac051b96ae79c9f1201610d556171c3d6)
    - 2.16.840.1.113883.3.464.1003.1062 Potentially Harmful Skeletal Muscle Relaxants for Older Adults (same commit)
    - 2.16.840.1.113883.3.464.1003.1043 Potentially Harmful Antihistamines for Older Adults            (same commit)
    - 2.16.840.1.113883.3.464.1003.196.12.1213 Antidepressant Medication (commit 5aa7c92a309fecaeb6984d87e8a514456c8f75c5)

Run: python tools/build_class_valuesets.py   (rewrites the five files; tests/kb/test_valuesets.py checks them)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VS_DIR = ROOT / "rules" / "valuesets"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SOURCE_EXT = "https://pacecds.org/fhir/StructureDefinition/code-source"
URL_BASE = "https://pacecds.org/fhir/ValueSet/"
DATE = "2026-11-26"

ECQM_REPO = "https://github.com/cqframework/ecqm-content-qicore-2025"
ECQM_COMMIT = "8476c37ac051b96ae79c9f1201610d556171c3d6"
ECQM_COMMIT_1213 = "5aa7c92a309fecaeb6984d87e8a514456c8f75c5"


def vsac(oid: str, title: str, commit: str = ECQM_COMMIT) -> str:
    return (
        f"VSAC value set {oid} '{title}' (expansion 2024-05, RxNorm 2024-01), as published in {ECQM_REPO} "
        f"at commit {commit}, file input/vocabulary/valueset/external/valueset-{oid}.json"
    )


SRC_CNS = vsac("2.16.840.1.113762.1.4.1248.134", "Central Nervous System Depressants")
SRC_SMR = vsac("2.16.840.1.113883.3.464.1003.1062", "Potentially Harmful Skeletal Muscle Relaxants for Older Adults")
SRC_AH = vsac("2.16.840.1.113883.3.464.1003.1043", "Potentially Harmful Antihistamines for Older Adults")
SRC_AD = vsac("2.16.840.1.113883.3.464.1003.196.12.1213", "Antidepressant Medication", ECQM_COMMIT_1213)
SRC_CDC_CNS = (
    "CDC opioid CDS value set cns-depressant-medications (http://fhir.org/guides/cdc/opioid-cds/ValueSet/"
    "cns-depressant-medications, expansion 2025-02-24), cqframework/opioid-cds-r4 commit "
    "b29bdcbf6db6f3de26486dbc3820572ee9a78b89, copied unchanged to rules/valuesets/cns-depressant-medications.json; "
    "members selected by ingredient name"
)

# --- transcribed members (code, display) -------------------------------------------------------------------------

GABAPENTINOIDS_CNS = [
    ("310430", "gabapentin 100 MG Oral Capsule"),
    ("310431", "gabapentin 300 MG Oral Capsule"),
    ("310432", "gabapentin 400 MG Oral Capsule"),
    ("310433", "gabapentin 600 MG Oral Tablet"),
    ("310434", "gabapentin 800 MG Oral Tablet"),
    ("283523", "gabapentin 50 MG/ML Oral Solution"),
    ("1806380", "Once-Daily gabapentin 300 MG Oral Tablet"),
    ("1806382", "Once-Daily gabapentin 600 MG Oral Tablet"),
    ("2634743", "Once-Daily gabapentin 900 MG Oral Tablet"),
    ("2634747", "Once-Daily gabapentin 450 MG Oral Tablet"),
    ("2634751", "Once-Daily gabapentin 750 MG Oral Tablet"),
    ("2398511", "{9 (Once-Daily gabapentin 300 MG Oral Tablet) / 24 (Once-Daily gabapentin 600 MG Oral Tablet) } Pack"),
    ("1482820", "gabapentin enacarbil 300 MG Extended Release Oral Tablet"),
    ("1101338", "gabapentin enacarbil 600 MG Extended Release Oral Tablet"),
    ("483442", "pregabalin 25 MG Oral Capsule"),
    ("483448", "pregabalin 50 MG Oral Capsule"),
    ("483450", "pregabalin 75 MG Oral Capsule"),
    ("483438", "pregabalin 100 MG Oral Capsule"),
    ("483440", "pregabalin 150 MG Oral Capsule"),
    ("483446", "pregabalin 200 MG Oral Capsule"),
    ("577127", "pregabalin 225 MG Oral Capsule"),
    ("483444", "pregabalin 300 MG Oral Capsule"),
    ("898715", "pregabalin 20 MG/ML Oral Solution"),
    ("1988980", "24 HR pregabalin 82.5 MG Extended Release Oral Tablet"),
    ("1988974", "24 HR pregabalin 165 MG Extended Release Oral Tablet"),
    ("1988977", "24 HR pregabalin 330 MG Extended Release Oral Tablet"),
]

ESZOPICLONE_CNS = [
    ("485440", "eszopiclone 1 MG Oral Tablet"),
    ("485442", "eszopiclone 2 MG Oral Tablet"),
    ("485465", "eszopiclone 3 MG Oral Tablet"),
]

# The whole VSAC set (22 members): carisoprodol, chlorzoxazone, cyclobenzaprine, metaxalone, methocarbamol,
# orphenadrine, alone or in the combinations listed there.
MUSCLE_RELAXANTS_SMR = [
    ("1088934", "chlorzoxazone 375 MG Oral Tablet"),
    ("1088936", "chlorzoxazone 750 MG Oral Tablet"),
    ("197446", "carisoprodol 350 MG Oral Tablet"),
    ("197447", "aspirin 325 MG / carisoprodol 200 MG Oral Tablet"),
    ("197501", "chlorzoxazone 250 MG Oral Tablet"),
    ("197502", "chlorzoxazone 500 MG Oral Tablet"),
    ("197935", "metaxalone 400 MG Oral Tablet"),
    ("197943", "methocarbamol 500 MG Oral Tablet"),
    ("197944", "methocarbamol 750 MG Oral Tablet"),
    ("2611794", "methocarbamol 1000 MG Oral Tablet"),
    ("2627781", "metaxalone 640 MG Oral Tablet"),
    ("351254", "metaxalone 800 MG Oral Tablet"),
    ("730794", "carisoprodol 250 MG Oral Tablet"),
    ("828299", "cyclobenzaprine hydrochloride 7.5 MG Oral Tablet"),
    ("828320", "cyclobenzaprine hydrochloride 5 MG Oral Tablet"),
    ("828348", "cyclobenzaprine hydrochloride 10 MG Oral Tablet"),
    ("828353", "24 HR cyclobenzaprine hydrochloride 30 MG Extended Release Oral Capsule"),
    ("828358", "24 HR cyclobenzaprine hydrochloride 15 MG Extended Release Oral Capsule"),
    ("994226", "aspirin 325 MG / carisoprodol 200 MG / codeine phosphate 16 MG Oral Tablet"),
    ("994521", "12 HR orphenadrine citrate 100 MG Extended Release Oral Tablet"),
    ("994528", "aspirin 385 MG / caffeine 30 MG / orphenadrine citrate 25 MG Oral Tablet"),
    ("994535", "aspirin 770 MG / caffeine 60 MG / orphenadrine citrate 50 MG Oral Tablet"),
]

# Sedating antidepressants: tertiary/secondary tricyclics used at night (amitriptyline, nortriptyline, doxepin,
# imipramine, trimipramine), trazodone and mirtazapine. Oral generic products from VSAC 196.12.1213.
SEDATING_ANTIDEPRESSANTS_AD = [
    ("856783", "amitriptyline hydrochloride 10 MG Oral Tablet"),
    ("856834", "amitriptyline hydrochloride 25 MG Oral Tablet"),
    ("856845", "amitriptyline hydrochloride 50 MG Oral Tablet"),
    ("856853", "amitriptyline hydrochloride 75 MG Oral Tablet"),
    ("856762", "amitriptyline hydrochloride 100 MG Oral Tablet"),
    ("856773", "amitriptyline hydrochloride 150 MG Oral Tablet"),
    ("856706", "amitriptyline hydrochloride 10 MG / perphenazine 2 MG Oral Tablet"),
    ("856720", "amitriptyline hydrochloride 10 MG / perphenazine 4 MG Oral Tablet"),
    ("856797", "amitriptyline hydrochloride 25 MG / perphenazine 2 MG Oral Tablet"),
    ("856825", "amitriptyline hydrochloride 25 MG / perphenazine 4 MG Oral Tablet"),
    ("856840", "amitriptyline hydrochloride 50 MG / perphenazine 4 MG Oral Tablet"),
    ("856769", "amitriptyline hydrochloride 12.5 MG / chlordiazepoxide 5 MG Oral Tablet"),
    ("856792", "amitriptyline hydrochloride 25 MG / chlordiazepoxide 10 MG Oral Tablet"),
    ("198045", "nortriptyline 10 MG Oral Capsule"),
    ("317136", "nortriptyline 25 MG Oral Capsule"),
    ("198046", "nortriptyline 50 MG Oral Capsule"),
    ("198047", "nortriptyline 75 MG Oral Capsule"),
    ("312036", "nortriptyline 2 MG/ML Oral Solution"),
    ("1000048", "doxepin 10 MG Oral Capsule"),
    ("1000070", "doxepin 25 MG Oral Capsule"),
    ("1000076", "doxepin 50 MG Oral Capsule"),
    ("1000097", "doxepin 75 MG Oral Capsule"),
    ("1000058", "doxepin 100 MG Oral Capsule"),
    ("1000064", "doxepin 150 MG Oral Capsule"),
    ("1000054", "doxepin 10 MG/ML Oral Solution"),
    ("835593", "imipramine hydrochloride 10 MG Oral Tablet"),
    ("835564", "imipramine hydrochloride 25 MG Oral Tablet"),
    ("835568", "imipramine hydrochloride 50 MG Oral Tablet"),
    ("835572", "imipramine pamoate 75 MG Oral Capsule"),
    ("835591", "imipramine pamoate 100 MG Oral Capsule"),
    ("835589", "imipramine pamoate 125 MG Oral Capsule"),
    ("835577", "imipramine pamoate 150 MG Oral Capsule"),
    ("313498", "trimipramine 25 MG Oral Capsule"),
    ("313499", "trimipramine 50 MG Oral Capsule"),
    ("313496", "trimipramine 100 MG Oral Capsule"),
    ("856377", "trazodone hydrochloride 50 MG Oral Tablet"),
    ("856373", "trazodone hydrochloride 100 MG Oral Tablet"),
    ("856364", "trazodone hydrochloride 150 MG Oral Tablet"),
    ("856369", "trazodone hydrochloride 300 MG Oral Tablet"),
    ("898697", "24 HR trazodone hydrochloride 150 MG Extended Release Oral Tablet"),
    ("898704", "24 HR trazodone hydrochloride 300 MG Extended Release Oral Tablet"),
    ("476809", "mirtazapine 7.5 MG Oral Tablet"),
    ("311725", "mirtazapine 15 MG Oral Tablet"),
    ("314111", "mirtazapine 30 MG Oral Tablet"),
    ("311726", "mirtazapine 45 MG Oral Tablet"),
    ("283406", "mirtazapine 15 MG Disintegrating Oral Tablet"),
    ("283407", "mirtazapine 30 MG Disintegrating Oral Tablet"),
    ("283485", "mirtazapine 45 MG Disintegrating Oral Tablet"),
]

# Low-dose doxepin tablets (insomnia products) are not in 196.12.1213 but are in the CNS depressant set.
SEDATING_ANTIDEPRESSANTS_CNS = [
    ("966787", "doxepin 3 MG Oral Tablet"),
    ("966793", "doxepin 6 MG Oral Tablet"),
]

# Sedating (first-generation) antihistamines taken by mouth: diphenhydramine, hydroxyzine, doxylamine,
# promethazine alone, and the analgesic "PM" combinations with diphenhydramine that patients with chronic pain
# commonly take at night. Cough/cold combinations of the VSAC set are deliberately left out.
SEDATING_ANTIHISTAMINES_AH = [
    ("1049900", "diphenhydramine hydrochloride 12.5 MG Chewable Tablet"),
    ("2046528", "diphenhydramine hydrochloride 25 MG Chewable Tablet"),
    ("882504", "diphenhydramine hydrochloride 12.5 MG Disintegrating Oral Tablet"),
    ("1093098", "diphenhydramine hydrochloride 25 MG Disintegrating Oral Tablet"),
    ("1049630", "diphenhydramine hydrochloride 25 MG Oral Tablet"),
    ("1085945", "diphenhydramine hydrochloride 50 MG Oral Tablet"),
    ("1049909", "diphenhydramine hydrochloride 25 MG Oral Capsule"),
    ("1020477", "diphenhydramine hydrochloride 50 MG Oral Capsule"),
    ("1248354", "diphenhydramine hydrochloride 1.67 MG/ML Oral Solution"),
    ("1049906", "diphenhydramine hydrochloride 2.5 MG/ML Oral Solution"),
    ("1789740", "diphenhydramine hydrochloride 6.25 MG/ML Oral Solution"),
    ("995218", "hydroxyzine hydrochloride 10 MG Oral Tablet"),
    ("995258", "hydroxyzine hydrochloride 25 MG Oral Tablet"),
    ("995281", "hydroxyzine hydrochloride 50 MG Oral Tablet"),
    ("995241", "hydroxyzine hydrochloride 2 MG/ML Oral Solution"),
    ("995253", "hydroxyzine pamoate 25 MG Oral Capsule"),
    ("995278", "hydroxyzine pamoate 50 MG Oral Capsule"),
    ("995232", "hydroxyzine pamoate 100 MG Oral Capsule"),
    ("1101446", "doxylamine succinate 25 MG Oral Tablet"),
    ("1101439", "doxylamine succinate 5 MG Chewable Tablet"),
    ("1101457", "doxylamine succinate 1 MG/ML Oral Solution"),
    ("992438", "promethazine hydrochloride 12.5 MG Oral Tablet"),
    ("992447", "promethazine hydrochloride 25 MG Oral Tablet"),
    ("992475", "promethazine hydrochloride 50 MG Oral Tablet"),
    ("992432", "promethazine hydrochloride 1.25 MG/ML Oral Solution"),
    ("1052462", "acetaminophen 325 MG / diphenhydramine hydrochloride 12.5 MG Oral Tablet"),
    ("1052467", "acetaminophen 500 MG / diphenhydramine hydrochloride 12.5 MG Oral Tablet"),
    ("1092189", "acetaminophen 500 MG / diphenhydramine hydrochloride 25 MG Oral Tablet"),
    ("1117245", "acetaminophen 500 MG / diphenhydramine hydrochloride 25 MG Oral Capsule"),
    ("1093075", "acetaminophen 325 MG / diphenhydramine hydrochloride 50 MG Oral Tablet"),
    ("1087607", "acetaminophen 500 MG / diphenhydramine hydrochloride 50 MG Oral Tablet"),
    ("1099872", "acetaminophen 500 MG / diphenhydramine citrate 38 MG Oral Tablet"),
    ("895664", "diphenhydramine citrate 38 MG / ibuprofen 200 MG Oral Tablet"),
    ("901814", "diphenhydramine hydrochloride 25 MG / ibuprofen 200 MG Oral Capsule"),
    ("1550957", "diphenhydramine hydrochloride 25 MG / naproxen sodium 220 MG Oral Tablet"),
    ("1092398", "aspirin 500 MG / diphenhydramine hydrochloride 25 MG Oral Tablet"),
    ("1250907", "aspirin 500 MG / diphenhydramine citrate 38.3 MG Oral Tablet"),
    ("1297517", "diphenhydramine hydrochloride 25 MG / magnesium salicylate 580 MG Oral Tablet"),
]

Z_DRUG_INGREDIENTS = ("zolpidem", "zaleplon", "eszopiclone")


def cdc_members(file_stem: str, ingredients: tuple[str, ...]) -> list[tuple[str, str]]:
    """Members of a CDC value set in rules/valuesets whose display names one of the ingredients (whole word)."""
    doc = json.loads((VS_DIR / f"{file_stem}.json").read_text())
    pattern = re.compile(r"\b(" + "|".join(ingredients) + r")\b", re.IGNORECASE)
    out = []
    for c in doc["expansion"]["contains"]:
        if c["system"] == RXNORM and pattern.search(c["display"]):
            out.append((c["code"], c["display"]))
    return out


def include(source: str, members: list[tuple[str, str]]) -> dict:
    return {
        "extension": [{"url": SOURCE_EXT, "valueString": source}],
        "system": RXNORM,
        "concept": [{"code": code, "display": display} for code, display in members],
    }


def valueset(stem: str, title: str, description: str, purpose: str, includes: list[dict]) -> dict:
    name = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", stem) if part)
    return {
        "resourceType": "ValueSet",
        "id": stem,
        "url": URL_BASE + stem,
        "version": "1.0.0",
        "name": name,
        "title": title,
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": "pacecds knowledge base",
        "description": description,
        "purpose": purpose,
        "copyright": "RxNorm codes and names: US National Library of Medicine (public domain). Source value sets: "
        "VSAC (NLM) and the CDC Opioid Prescribing Guideline CDS IG (CC0-1.0).",
        "compose": {"include": includes},
    }


def build() -> dict[str, dict]:
    zdrugs_cdc = cdc_members("cns-depressant-medications", Z_DRUG_INGREDIENTS)
    cdc_codes = {c for c, _ in zdrugs_cdc}
    eszopiclone = [m for m in ESZOPICLONE_CNS if m[0] not in cdc_codes]
    sets = {
        "z-drugs": valueset(
            "z-drugs",
            "Z-drugs (non-benzodiazepine hypnotics: zolpidem, zaleplon, eszopiclone)",
            "RxNorm clinical and branded drugs of zolpidem, zaleplon and eszopiclone. Zolpidem and zaleplon products "
            "are the members of the CDC cns-depressant-medications value set whose name contains the ingredient "
            "(that set also holds anaesthetic gases, anorectics and meclizine, which are not used here); "
            "eszopiclone, absent from the CDC set, comes from VSAC 2.16.840.1.113762.1.4.1248.134. Each "
            "compose.include names its source in the code-source extension.",
            "Sedating-medication class for meds.medication-safety and the order-time combination check (AGS Beers "
            "Criteria 2023: z-drugs are CNS-active drugs in older adults).",
            [include(SRC_CDC_CNS, zdrugs_cdc)] + ([include(SRC_CNS, eszopiclone)] if eszopiclone else []),
        ),
        "gabapentinoids": valueset(
            "gabapentinoids",
            "Gabapentinoids (gabapentin, gabapentin enacarbil, pregabalin)",
            "Oral RxNorm clinical drugs of gabapentin, gabapentin enacarbil and pregabalin, taken from VSAC value "
            "set 2.16.840.1.113762.1.4.1248.134 'Central Nervous System Depressants' (code and display as "
            "published). No published value set of gabapentinoids with displays exists; the AHRQ 'Nonopioid pain "
            "medications' set (codes only) corroborates the gabapentin and pregabalin codes.",
            "FDA Drug Safety Communication, 19 December 2019: serious breathing difficulties with gabapentinoids, "
            "especially with opioids or other CNS depressants (meds.medication-safety).",
            [include(SRC_CNS, GABAPENTINOIDS_CNS)],
        ),
        "skeletal-muscle-relaxants": valueset(
            "skeletal-muscle-relaxants",
            "Skeletal muscle relaxants (carisoprodol, chlorzoxazone, cyclobenzaprine, metaxalone, methocarbamol, "
            "orphenadrine)",
            "All 22 members of VSAC value set 2.16.840.1.113883.3.464.1003.1062 'Potentially Harmful Skeletal "
            "Muscle Relaxants for Older Adults'. Known gap: tizanidine and baclofen products are not in this set, "
            "and no citable published set listing their RxNorm clinical drugs with names was found, so they are "
            "not members yet (see rules/valuesets/SOURCES.md).",
            "Sedating-medication class (AGS Beers Criteria 2023 lists skeletal muscle relaxants among CNS-active "
            "drugs) for meds.medication-safety and the order-time combination check.",
            [include(SRC_SMR, MUSCLE_RELAXANTS_SMR)],
        ),
        "sedating-antidepressants": valueset(
            "sedating-antidepressants",
            "Sedating antidepressants (amitriptyline, nortriptyline, doxepin, imipramine, trimipramine, trazodone, "
            "mirtazapine)",
            "Oral RxNorm clinical drugs of the sedating tricyclics, trazodone and mirtazapine, taken from VSAC "
            "value set 2.16.840.1.113883.3.464.1003.196.12.1213 'Antidepressant Medication'; low-dose doxepin "
            "tablets from VSAC 2.16.840.1.113762.1.4.1248.134. SSRIs, SNRIs and bupropion are not members.",
            "Sedating-medication class for meds.medication-safety (AGS Beers Criteria 2023 counts antidepressants "
            "among CNS-active drugs in older adults).",
            [include(SRC_AD, SEDATING_ANTIDEPRESSANTS_AD), include(SRC_CNS, SEDATING_ANTIDEPRESSANTS_CNS)],
        ),
        "sedating-antihistamines": valueset(
            "sedating-antihistamines",
            "Sedating antihistamines (diphenhydramine, hydroxyzine, doxylamine, promethazine)",
            "Oral RxNorm clinical drugs of diphenhydramine, hydroxyzine, doxylamine and promethazine, alone or in "
            "analgesic night-time combinations, taken from VSAC value set 2.16.840.1.113883.3.464.1003.1043 "
            "'Potentially Harmful Antihistamines for Older Adults'. Cough and cold combinations of that set are "
            "left out on purpose.",
            "Sedating-medication class for meds.medication-safety (first-generation antihistamines; AGS Beers "
            "Criteria 2023).",
            [include(SRC_AH, SEDATING_ANTIHISTAMINES_AH)],
        ),
    }
    return sets


def main() -> None:
    for stem, doc in build().items():
        path = VS_DIR / f"{stem}.json"
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        n = sum(len(i["concept"]) for i in doc["compose"]["include"])
        print(f"{path.relative_to(ROOT)}: {n} codes")


if __name__ == "__main__":
    main()
