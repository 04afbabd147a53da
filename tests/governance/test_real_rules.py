"""Governance tools on the project's own knowledge base, not just on hand-made trees."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from engine.rulestree import read_rules
from governance.diff import diff_trees
from governance.manifest import check_manifest, write_manifest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules"
if not any(RULES.glob("*/*.yaml")):
    pytest.skip("no rules in this tree", allow_module_level=True)


def _a_rule_with_numeric_parameter(root: Path):
    for rid, (rel, rule) in sorted(read_rules(root).items()):
        for name, p in (rule.get("parameters") or {}).items():
            if isinstance(p, dict) and isinstance(p.get("value"), (int, float)) and not isinstance(p["value"], bool):
                return rid, rel, name
    pytest.skip("no rule with a numeric parameter")


def test_release_of_the_real_rules_checks_clean(tmp_path):
    tree = tmp_path / "rules"
    shutil.copytree(RULES, tree)
    m = write_manifest(tree, approvals=[{"by": "test", "date": "2026-11-26"}])
    assert len(m["rules"]) == len(read_rules(RULES)) > 0
    assert check_manifest(tree) == []


def test_threshold_change_without_bump_in_a_real_rule(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(RULES, old)
    shutil.copytree(RULES, new)
    rid, rel, param = _a_rule_with_numeric_parameter(new)
    rule = yaml.safe_load((new / rel).read_text())
    before = rule["parameters"][param]["value"]
    rule["parameters"][param]["value"] = before + 1
    (new / rel).write_text(yaml.safe_dump(rule, sort_keys=False, allow_unicode=True))
    rep = diff_trees(old, new)
    changed = {c["id"]: c for c in rep["rules"]["changed"]}
    assert changed[rid]["changes"] == [{"path": f"parameters.{param}.value", "old": before, "new": before + 1,
                                        "kind": "threshold"}]
    assert any(rid in e and "without a version bump" in e for e in rep["errors"])
