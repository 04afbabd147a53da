"""One ruleset hash: the release manifest's content_sha256 is what cards, /healthz and audit records carry,
and `pacecds release --check` recomputes it from the files."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from engine import load_ruleset
from engine.rulestree import RULE, classify, read_rules, ruleset_sha256
from governance.manifest import check_manifest, write_manifest
from tests.service.conftest import full_prefetch, hb_observation, patient_view_request

RULES = Path(__file__).resolve().parents[2] / "rules"


def test_card_healthz_and_audit_record_carry_the_manifests_hash(make_app, audit):
    manifest_hash = yaml.safe_load((RULES / "ruleset.yaml").read_text())["content_sha256"]
    assert ruleset_sha256(RULES) == manifest_hash
    client = make_app().test_client()
    assert client.get("/healthz").get_json()["ruleset"]["sha256"] == manifest_hash
    req = patient_view_request(full_prefetch(observations=[hb_observation("hb-low", 9.0)]))
    resp = client.post("/cds-services/pacing-review", json=req)
    cards = resp.get_json()["cards"]
    assert cards and all(c["extension"]["pacecds.ruleset"]["sha256"] == manifest_hash for c in cards)
    record = audit.get(req["hookInstance"])
    assert record["ruleset"]["sha256"] == manifest_hash


def test_a_top_level_rule_file_is_a_rule_for_loader_manifest_and_check(tmp_path):
    tree = tmp_path / "rules"
    shutil.copytree(RULES, tree)
    write_manifest(tree)
    assert check_manifest(tree) == []
    rule = yaml.safe_load((RULES / "anemia" / "low-hemoglobin.yaml").read_text())
    rule["id"] = "anemia.top-level-copy"
    (tree / "top-level.yaml").write_text(yaml.safe_dump(rule, sort_keys=False))
    assert classify("top-level.yaml") == RULE
    problems = "\n".join(check_manifest(tree))
    assert "top-level.yaml: not in the manifest" in problems
    assert "rule anemia.top-level-copy is not listed in the manifest" in problems
    assert "anemia.top-level-copy" in {r.id for r in load_ruleset(tree).rules}   # the loader serves it
    m = write_manifest(tree)
    assert m["rules"]["anemia.top-level-copy"]["file"] == "top-level.yaml"
    assert "anemia.top-level-copy" in read_rules(tree)
    assert m["content_sha256"] == load_ruleset(tree).sha256
