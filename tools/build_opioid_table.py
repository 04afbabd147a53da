#!/usr/bin/env python3
"""Generate rules/drugs/opioid-strengths.json from the RxNorm names in the CDC opioid value set.

Every member of rules/valuesets/opioid-analgesics-with-ambulatory-misuse-potential.json gets one row. The RxNorm
normalized name of a clinical drug states each ingredient with its strength and the dose form, e.g.

    "oxycodone hydrochloride 10 MG Oral Tablet"
    "72 HR fentanyl 0.025 MG/HR Transdermal System"
    "acetaminophen 325 MG / hydrocodone bitartrate 5 MG Oral Tablet [Norco]"
    "Abuse-Deterrent 12 HR oxycodone hydrochloride 15 MG Extended Release Oral Tablet"

Rows that cannot be used for a dose calculation say why (`status` and `note`) instead of guessing: packs, products
with two different opioids. The MME factors themselves live in rules/drugs/mme-conversion-factors.json; this table
only records what the product is. Run: python tools/build_opioid_table.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "rules" / "valuesets" / "opioid-analgesics-with-ambulatory-misuse-potential.json"
OUT = ROOT / "rules" / "drugs" / "opioid-strengths.json"

# Opioid ingredients (base names as RxNorm writes them). Anything else in a combination (acetaminophen,
# naloxone, naltrexone, caffeine, ...) is recorded as a non-opioid ingredient.
OPIOID_BASES = {
    "alfentanil", "benzhydrocodone", "buprenorphine", "butorphanol", "codeine", "dextromoramide", "dihydrocodeine",
    "dipipanone", "fentanyl", "heroin", "hydrocodone", "hydromorphone", "levomethadyl", "levorphanol", "meperidine",
    "meptazinol", "methadone", "morphine", "nalbuphine", "opium", "oxycodone", "oxymorphone", "pentazocine",
    "pholcodine", "propoxyphene", "remifentanil", "sufentanil", "tapentadol", "tramadol",
}

UNITS = ("MG/ACTUAT", "MG/HR", "MG/ML", "MG/MG", "MCG", "MG")
# RxNorm strength unit -> UCUM
UCUM = {"MG": "mg", "MCG": "ug", "MG/ML": "mg/mL", "MG/HR": "mg/h", "MG/ACTUAT": "mg/{actuat}", "MG/MG": "mg/mg"}

SEGMENT = re.compile(
    r"^(?P<name>[a-z][a-z0-9 ,\-()]*?) (?P<value>\d+(?:\.\d+)?) (?P<unit>" + "|".join(re.escape(u) for u in UNITS) + r")"
    r"(?: (?P<form>[A-Z].*))?$"
)
PREFIX = re.compile(r"^((?:Abuse-Deterrent|Matrix Delivery|\d+(?:\.\d+)? (?:HR|ACTUAT|ML))\s+)+")
BRAND = re.compile(r"\s*\[(?P<brand>[^\]]+)\]$")


def route_of(form: str) -> str:
    f = form.lower()
    if "transdermal" in f:
        return "transdermal"
    if "rectal" in f:
        return "rectal"
    if "nasal" in f:
        return "nasal"
    if any(k in f for k in ("buccal", "sublingual", "lozenge", "mucosal")):
        return "transmucosal"
    if "topical" in f:
        return "topical"
    if "implant" in f:
        return "implant"
    if "oral" in f or "chewable" in f or f.endswith("suspension"):
        return "oral"
    return "other"


def parse(code: str, display: str) -> dict:
    row: dict = {"code": code, "display": display}
    body = display
    m = BRAND.search(body)
    if m:
        row["brand"] = m.group("brand")
        body = body[: m.start()]
    if body.startswith("{"):
        row.update(status="not_parsed", note="pack of several products: the dose must be computed per component")
        return row
    qualifiers = []
    m = PREFIX.match(body)
    if m:
        qualifiers = m.group(0).split()
        body = body[m.end():]
    segments = body.split(" / ")
    parsed = []
    for i, seg in enumerate(segments):
        sm = SEGMENT.match(seg)
        if not sm or (sm.group("form") and i != len(segments) - 1):
            row.update(status="not_parsed", note=f"unrecognised name segment {seg!r}")
            return row
        parsed.append(sm.groupdict())
    form = parsed[-1]["form"]
    if not form:
        row.update(status="not_parsed", note="no dose form in name")
        return row
    opioids = [p for p in parsed if p["name"].split()[0] in OPIOID_BASES]
    others = [p["name"] for p in parsed if p not in opioids]
    bases = {p["name"].split()[0] for p in opioids}
    if not opioids:
        row.update(status="not_parsed", note="no opioid ingredient recognised in name")
        return row
    if len(bases) > 1:
        row.update(status="not_parsed", note="more than one opioid ingredient: compute per ingredient by hand")
        return row
    units = {p["unit"] for p in opioids}
    if len(units) > 1:
        row.update(status="not_parsed", note="opioid salts with different strength units")
        return row
    value = sum(float(p["value"]) for p in opioids)
    release = next((f"{qualifiers[i]} {qualifiers[i + 1]}" for i in range(len(qualifiers) - 1)
                    if qualifiers[i + 1] == "HR"), None)
    actuations = next((int(float(qualifiers[i])) for i in range(len(qualifiers) - 1)
                       if qualifiers[i + 1] == "ACTUAT"), None)
    unit = opioids[0]["unit"]
    row.update(
        status="parsed",
        ingredient=next(iter(bases)),
        ingredient_name=" + ".join(p["name"] for p in opioids),
        strength=int(value) if value.is_integer() else round(value, 6),
        unit=unit,
        ucum=UCUM[unit],
        dose_form=form,
        route=route_of(form),
    )
    if len(opioids) > 1:
        row["note"] = "strengths of the salts of the same opioid added: " + " + ".join(
            f"{p['name']} {p['value']} {p['unit']}" for p in opioids)
    if release:
        row["release"] = release
    if actuations:
        row["actuations"] = actuations
    if "Abuse-Deterrent" in qualifiers:
        row["abuse_deterrent"] = True
    if others:
        row["other_ingredients"] = others
    return row


def build() -> dict:
    vs = json.loads(SOURCE.read_text())
    rows = [parse(c["code"], c["display"]) for c in vs["expansion"]["contains"]]
    rows.sort(key=lambda r: int(r["code"]))
    return {
        "title": "Opioid clinical drugs: ingredient, strength and dose form read from their RxNorm names",
        "generated_by": "tools/build_opioid_table.py (do not edit by hand; re-run the script)",
        "source": {
            "valueset": vs["url"],
            "file": "rules/valuesets/opioid-analgesics-with-ambulatory-misuse-potential.json",
            "expansion": vs.get("expansion", {}).get("timestamp"),
            "origin": "CDC Opioid Prescribing Guideline CDS IG, cqframework/opioid-cds-r4 commit "
                      "b29bdcbf6db6f3de26486dbc3820572ee9a78b89 (CC0-1.0)",
        },
        "fields": {
            "strength/unit": "the opioid's strength as the RxNorm name states it (per unit dose, per mL, per hour "
                             "of patch wear or per actuation); salts of one opioid are added",
            "ucum": "the same unit in UCUM",
            "route": "oral | transdermal | transmucosal | nasal | rectal | topical | implant | other (from the "
                     "dose form)",
            "status": "parsed, or not_parsed with a note saying why (then no dose is computed)",
        },
        "drugs": rows,
    }


def dumps(doc: dict) -> str:
    """JSON with one drug per line, so a diff of the table shows exactly which products changed."""
    head = {k: v for k, v in doc.items() if k != "drugs"}
    text = json.dumps(head, indent=2, ensure_ascii=False)[:-2]
    rows = ",\n".join("    " + json.dumps(r, ensure_ascii=False) for r in doc["drugs"])
    return text + ',\n  "drugs": [\n' + rows + "\n  ]\n}\n"


def main() -> int:
    doc = build()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # JSON, not YAML: the rules loader reads every YAML file outside valuesets/ and facts/ as a rule, and ignores
    # JSON there, so drug data lives in rules/drugs/*.json (still covered by the ruleset hash).
    OUT.write_text(dumps(doc))
    parsed = sum(1 for r in doc["drugs"] if r["status"] == "parsed")
    print(f"{OUT.relative_to(ROOT)}: {len(doc['drugs'])} drugs, {parsed} parsed, "
          f"{len(doc['drugs']) - parsed} not parsed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
