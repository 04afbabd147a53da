"""A corpus of broken rule trees: each entry breaks one file of a small, valid rules directory.

(name, file, old text, new text, words the error must contain). `old` must occur in the file; None
means "write `new` as the whole file" (a new file when it does not exist). Used by test_broken_rules.py.
"""
from pathlib import Path

HB = "anemia/low-hemoglobin.yaml"
TSH = "thyroid/tsh-abnormal.yaml"
LABS = "facts/labs.yaml"
IRON = "facts/iron.yaml"
DEMO = "facts/demographics.yaml"
MANIFEST = "ruleset.yaml"
# the hemoglobin rule's whole approval line (it carries a long note), read from the bundled rules
APPROVAL_LINE = next(line for line in (Path(__file__).resolve().parents[2] / "rules" / HB).read_text().splitlines()
                     if line.startswith("approval:"))

CORPUS = [
    # --- YAML syntax -------------------------------------------------------------------------
    ("tab-indentation", HB, "hooks: [patient-view]", "hooks:\n\t- patient-view", "YAML"),
    ("unclosed-flow-list", HB, "hooks: [patient-view]", "hooks: [patient-view", "YAML"),
    ("unclosed-quote", HB, "indicator: warning", 'indicator: "warning', "YAML"),
    ("bad-indent-mapping", HB, "status: active", "  status: active", "YAML"),
    ("duplicate-key", HB, "status: active", "status: active\nstatus: draft", "duplicate"),
    ("yaml-tag-python", HB, "title: Hemoglobin", "title: !!python/object:os.system Hemoglobin", "tag"),
    ("yaml-custom-tag", HB, "status: active", "status: !active active", "tag"),
    ("not-a-mapping", HB, None, "- just\n- a list\n", "mapping"),
    ("empty-file", HB, None, "", "mapping"),
    ("nul-byte", HB, None, "\x00\x01\x02 id: x\n", "#x0000"),
    ("control-char-mid-file", HB, "status: active", "status: act\x07ive", "#x0007"),
    ("not-utf8", HB, None, b"id: an\xe9mia\n", "UTF-8"),
    # --- rule schema -------------------------------------------------------------------------
    ("missing-id", HB, "id: anemia.low-hemoglobin\n", "", "'id' is a required property"),
    ("missing-card", TSH, "card:\n  summary:", "kard:\n  summary:", "card"),
    ("bad-status", HB, "status: active", "status: live", "status"),
    ("bad-version", HB, "version: 1.1.1", "version: one", "version: 'one'"),
    ("bad-hook", HB, "hooks: [patient-view]", "hooks: [patient-viewed]", "patient-viewed"),
    ("hooks-not-list", HB, "hooks: [patient-view]", "hooks: patient-view", "hooks"),
    ("unknown-top-level-field", HB, "status: active", "status: active\nsevrity: high", "sevrity"),
    ("bad-indicator", HB, "indicator: warning", "indicator: urgent", "indicator"),
    ("evidence-without-url", HB, "    url: https://iris.who.int/handle/10665/85839\n", "", "url"),
    ("approval-not-mapping", HB, APPROVAL_LINE, "approval: yes", "approval"),
    # --- conditions --------------------------------------------------------------------------
    ("unknown-fact", HB, "{fact: age, gte: 15}", "{fact: agee, gte: 15}", "agee"),
    ("unknown-attribute", HB, "{fact: hemoglobin.age_days,", "{fact: hemoglobin.age_dayz,", "age_dayz"),
    ("unknown-operator", HB, "{fact: age, gte: 15}", "{fact: age, greater: 15}", "when"),
    ("two-operators", HB, "{fact: age, gte: 15}", "{fact: age, gte: 15, lt: 99}", "when"),
    ("unknown-param", HB, "lt: {param: women_threshold}", "lt: {param: woman_threshold}", "woman_threshold"),
    ("unit-mismatch", HB, "women_threshold: {value: 12.0, unit: g/dL", "women_threshold: {value: 12.0, unit: mmHg", "unit"),
    ("unknown-unit", HB, "women_threshold: {value: 12.0, unit: g/dL", "women_threshold: {value: 12.0, unit: grams-ish", "unit"),
    ("threshold-not-number", HB, "{fact: age, gte: 15}", "{fact: age, gte: fifteen}", "needs a number"),
    ("misspelled-all", HB, "when:\n  all:", "when:\n  xall:", "'all' is a required"),
    ("unknown-valueset", DEMO, "valueset: cds-pregnancy", "valueset: cds-pregnancyy", "cds-pregnancyy"),
    # --- card templates ----------------------------------------------------------------------
    ("template-unknown-fact", HB, "summary: \"Hemoglobin {hemoglobin.value:.1f}", "summary: \"Hemoglobin {hemoglobn.value:.1f}", "hemoglobn"),
    ("template-bad-format", HB, "summary: \"Hemoglobin {hemoglobin.value:.1f}", "summary: \"Hemoglobin {hemoglobin.value:.1q}", "format"),
    ("template-unclosed-brace", HB, "summary: \"Hemoglobin {hemoglobin.value:.1f}", "summary: \"Hemoglobin {hemoglobin.value:.1f", "unbalanced"),
    ("template-code", HB, "summary: \"Hemoglobin {hemoglobin.value:.1f}", "summary: \"Hemoglobin {__import__('os').system('id')}", "is not a number"),
    ("summary-too-long", HB, "summary: \"Hemoglobin {hemoglobin.value:.1f} g/dL is below",
     "summary: \"Hemoglobin {hemoglobin.value:.1f} g/dL is really, truly, most definitely and without any doubt whatsoever well below", "limit is 139"),
    # --- facts and manifest ------------------------------------------------------------------
    ("fact-bad-kind", LABS, "    kind: observation\n    title: Hemoglobin", "    kind: observasion\n    title: Hemoglobin", "kind"),
    ("fact-bad-unit", LABS, "    unit: g/dL\n", "    unit: g/deciliter\n", "unit"),
    ("fact-missing-codes", IRON, "    codes:\n      - {system: http://loinc.org, code: 2276-4, display: \"Ferritin [Mass/volume] in Serum or Plasma\"}\n", "", "facts.ferritin"),
    ("facts-not-mapping", LABS, None, "facts:\n  - hemoglobin\n", "facts"),
    ("valueset-bad-json", "valuesets/cds-pregnancy.json", None, '{"resourceType": "ValueSet", "compose": ', "cds-pregnancy.json"),
    ("valueset-wrong-type", "valuesets/cds-pregnancy.json", None, '{"resourceType": "CodeSystem", "id": "x"}', "ValueSet"),
    # the top-level version line (rule entries are indented), whatever the release number is
    ("manifest-missing-version", MANIFEST, "\nversion: ", "\nold_version: ", "version"),
    ("duplicate-rule-id", "anemia/copy.yaml", None, "@" + HB, "duplicate"),
]
