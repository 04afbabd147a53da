"""Value sets: FHIR ValueSet JSON (compose or expansion) and YAML code lists -> code sets."""

from __future__ import annotations

from dataclasses import dataclass

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10": "http://hl7.org/fhir/sid/icd-10",
    "urn:oid:2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "urn:oid:2.16.840.1.113883.6.88": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "urn:oid:2.16.840.1.113883.6.1": "http://loinc.org",
}


def normalize_code(system: str | None, code: str | None) -> tuple[str, str] | None:
    """Canonical (system, code) for matching; ICD-10 codes compare without the dot."""
    if not system or not code:
        return None
    system = SYSTEM_ALIASES.get(system.strip(), system.strip())
    code = code.strip()
    if system.startswith("http://hl7.org/fhir/sid/icd-10"):
        code = code.replace(".", "").upper()
    return system, code


MEMO_MAX_CHARS = 128  # longer strings are never memoised: a cache must not hold what a caller sends at will
# (the longest system + code the rules read has 67 characters; a longer one cannot match, so need not be fast)


def code_key(system, code) -> tuple[str, str] | None:
    """normalize_code(); no longer memoised: facts._one_key and the selector's memo sit in front of it, and a
    memo here saved under 1% of any evaluation (docs/caches.md)."""
    return normalize_code(system, code)


@dataclass(frozen=True)
class ValueSet:
    name: str
    title: str
    url: str | None
    version: str | None
    codes: frozenset  # of (system, code)
    displays: dict  # (system, code) -> display

    def __contains__(self, item) -> bool:
        return item in self.codes


class ValueSetError(ValueError):
    pass


def from_fhir_json(name: str, resource: dict) -> ValueSet:
    if resource.get("resourceType") != "ValueSet":
        raise ValueSetError("not a FHIR ValueSet (resourceType must be 'ValueSet')")
    codes: dict[tuple, str | None] = {}
    for i, inc in enumerate((resource.get("compose") or {}).get("include") or []):
        if inc.get("filter") or inc.get("valueSet"):
            if not (resource.get("expansion") or {}).get("contains"):
                raise ValueSetError(
                    f"compose.include[{i}] uses filter or valueSet references; provide an expansion instead"
                )
            continue
        for concept in inc.get("concept") or []:
            key = normalize_code(inc.get("system"), concept.get("code"))
            if key:
                codes[key] = concept.get("display")
    for exclude in (resource.get("compose") or {}).get("exclude") or []:
        for concept in exclude.get("concept") or []:
            codes.pop(normalize_code(exclude.get("system"), concept.get("code")), None)
    stack = list((resource.get("expansion") or {}).get("contains") or [])
    while stack:
        item = stack.pop()
        stack.extend(item.get("contains") or [])
        if item.get("abstract"):
            continue  # a grouping header, not a code
        key = normalize_code(item.get("system"), item.get("code"))
        if key:
            codes[key] = item.get("display") or codes.get(key)
    if not codes:
        raise ValueSetError("value set lists no codes (neither compose.include.concept nor expansion.contains)")
    return ValueSet(
        name=name,
        title=resource.get("title") or resource.get("name") or name,
        url=resource.get("url"),
        version=resource.get("version"),
        codes=frozenset(codes),
        displays={k: v for k, v in codes.items() if v},
    )


def from_code_list(name: str, doc: dict) -> ValueSet:
    """A YAML code list: {title, source, codes: [{system, code, display}]} (schema-validated upstream)."""
    codes = {}
    for entry in doc["codes"]:
        key = normalize_code(entry.get("system") or doc.get("system"), str(entry["code"]))
        if key:
            codes[key] = entry.get("display")
    return ValueSet(
        name=name,
        title=doc.get("title", name),
        url=doc.get("url"),
        version=str(doc["version"]) if doc.get("version") is not None else None,
        codes=frozenset(codes),
        displays={k: v for k, v in codes.items() if v},
    )
