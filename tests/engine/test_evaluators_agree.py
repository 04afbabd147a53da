"""Two evaluators read each rule's condition: durable-rules decides what fires, engine.conditions explains it.
They must agree on every rule for every patient, or `explain` and the audit record would misstate a decision."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bench.generate import make_bundle
from engine.ruleset import parse_now

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CASES = yaml.safe_load((EXAMPLES / "cases.yaml").read_text())["cases"]


def _disagreements(ruleset, request, now, hook=None):
    explanation = ruleset.explain(request, now=now, hook=hook)
    out = [(r["id"], r["fired"], r["condition"]["result"]) for r in explanation["rules"]
           if r["fired"] != (r["condition"]["result"] == "true")]
    # a suggestion's own `when`: durable-rules decides whether the card offers it, explain shows the condition
    for r in explanation["rules"]:
        if not r["fired"] or r["status"] != "active":
            continue
        for s in r.get("suggestions") or []:
            if "when" in s and "not recorded" not in s.get("why_not", ""):
                if s["offered"] != (s["when"]["result"] == "true"):
                    out.append((r["id"], s["label"], s["offered"], s["when"]["result"]))
        for j, sec in enumerate(r.get("sections") or []):  # a card section: shown exactly when its `when` holds
            if sec["shown"] != (sec["when"]["result"] == "true"):
                out.append((r["id"], f"section {j}", sec["shown"], sec["when"]["result"]))
    return out


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_every_example_patient(ruleset, case):
    request = json.loads((EXAMPLES / case["input"]).read_text())
    assert _disagreements(ruleset, request, parse_now(case["now"]), case.get("hook")) == []


@pytest.mark.parametrize("seed", range(40))
def test_generated_patients(ruleset, seed):
    # synthetic charts of every shape and a spread of hemoglobin values around the thresholds
    size = ("small", "standard")[seed % 2]
    bundle = make_bundle(size, patient_id=f"agree-{seed}", seed=seed, hemoglobin=6.0 + seed * 0.25,
                         gender=("female", "male")[seed % 3 == 0])
    assert _disagreements(ruleset, bundle, parse_now("2026-11-01T12:00:00Z")) == []
