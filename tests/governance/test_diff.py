from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from governance.diff import diff_trees

from .conftest import make_tree
from .test_release import run


@pytest.fixture
def two(tmp_path):
    old = make_tree(tmp_path / "old")
    new = tmp_path / "new"
    shutil.copytree(old, new)
    return old, new


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_identical_trees(two):
    rep = diff_trees(*two)
    assert rep["ok"] and not rep["rules"]["changed"] and not rep["valuesets"]["changed"]


def test_threshold_change_without_version_bump_is_an_error(two, capsys):
    old, new = two
    edit(new / "anemia" / "low-hemoglobin.yaml", "{value: 12.0", "{value: 11.5")
    rep = diff_trees(old, new)
    assert not rep["ok"]
    ch = rep["rules"]["changed"][0]
    assert ch["id"] == "anemia.low-hemoglobin"
    assert ch["changes"] == [{"path": "parameters.women_threshold.value", "old": 12.0, "new": 11.5,
                              "kind": "threshold"}]
    assert "changed without a version bump" in rep["errors"][0]
    rc, out, _ = run(capsys, "diff", str(old), str(new))
    assert rc == 1
    assert "parameters.women_threshold.value: 12.0 -> 11.5" in out and "NO VERSION BUMP" in out


def test_field_by_field_changes_with_version_bump(two, capsys):
    old, new = two
    p = new / "pacing" / "boom-bust.yaml"
    edit(p, "version: 2.0.0", "version: 2.1.0")
    edit(p, "status: draft", "status: active")
    edit(p, "gt: 0.5", "gt: 0.4")
    edit(p, "Activity swings between busy and rest days", "Activity swings: busy days then rest days")
    edit(p, "Antcliff D et al. Activity pacing. 2021", "Antcliff D et al. Activity pacing. Pain 2021")
    rep = diff_trees(old, new)
    assert rep["ok"], rep["errors"]
    ch = rep["rules"]["changed"][0]
    assert (ch["old_version"], ch["new_version"]) == ("2.0.0", "2.1.0")
    kinds = {c["path"]: c["kind"] for c in ch["changes"]}
    assert kinds == {"status": "status", "when.all[0].gt": "threshold", "card.summary": "card",
                     "evidence[0].citation": "evidence"}
    rc, out, _ = run(capsys, "diff", str(old), str(new), "--json")
    assert rc == 0 and json.loads(out)["rules"]["changed"][0]["id"] == "pacing.boom-bust"


def test_version_going_backwards_is_an_error(two):
    old, new = two
    edit(new / "pacing" / "boom-bust.yaml", "version: 2.0.0", "version: 1.9.0")
    edit(new / "pacing" / "boom-bust.yaml", "gt: 0.5", "gt: 0.6")
    assert "went backwards" in diff_trees(*two)["errors"][0]


def test_rules_added_removed_and_moved(two):
    old, new = two
    (new / "pacing" / "boom-bust.yaml").rename(new / "anemia" / "boom-bust.yaml")
    (new / "anemia" / "low-hemoglobin.yaml").unlink()
    (new / "pacing" / "new.yaml").write_text("id: pacing.new\nversion: 0.1.0\nstatus: draft\ntitle: New\n")
    rep = diff_trees(old, new)
    assert [a["id"] for a in rep["rules"]["added"]] == ["pacing.new"]
    assert [a["id"] for a in rep["rules"]["removed"]] == ["anemia.low-hemoglobin"]
    moved = rep["rules"]["changed"][0]
    assert moved["new_file"] == "anemia/boom-bust.yaml" and moved["changes"] == [] and rep["ok"]


def test_valueset_membership_changes(two, capsys):
    old, new = two
    vs = json.loads((new / "valuesets" / "opioids.json").read_text())
    vs["compose"]["include"][0]["concept"].pop(1)
    vs["compose"]["include"][0]["concept"].append({"code": "1049683", "display": "oxycodone 10 MG"})
    (new / "valuesets" / "opioids.json").write_text(json.dumps(vs))
    ex = json.loads((new / "valuesets" / "benzos.json").read_text())
    ex["expansion"]["contains"].append({"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                        "code": "197904", "display": "lorazepam 1 MG"})
    (new / "valuesets" / "benzos.json").write_text(json.dumps(ex))
    edit(new / "valuesets" / "sleep-apnoea.yaml", '- {code: "73430006", display: Sleep apnea}',
         '- {code: "78275009", display: Obstructive sleep apnea}')
    rep = diff_trees(old, new)
    by = {c["name"]: c for c in rep["valuesets"]["changed"]}
    rx = "http://www.nlm.nih.gov/research/umls/rxnorm|"
    assert [x["code"] for x in by["opioids"]["added_codes"]] == [rx + "1049683"]
    assert [x["code"] for x in by["opioids"]["removed_codes"]] == [rx + "197696"]
    assert [x["code"] for x in by["benzos"]["added_codes"]] == [rx + "197904"]
    assert by["sleep-apnoea"]["removed_codes"][0]["code"] == "http://snomed.info/sct|73430006"
    rc, out, _ = run(capsys, "diff", str(old), str(new))
    assert rc == 0 and f"+ {rx}1049683 oxycodone 10 MG" in out


def test_fact_definition_changes_are_shown(two):
    old, new = two
    edit(new / "facts" / "labs.yaml", "unit: g/dL", "unit: g/L")
    rep = diff_trees(old, new)
    assert rep["files"]["changed"] == [{"file": "facts/labs.yaml", "changes": [
        {"path": "facts.hemoglobin.unit", "old": "g/dL", "new": "g/L", "kind": "metadata"}]}]


def test_diff_between_git_revisions(tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    make_tree(repo / "rules")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "release 1"], check=True)
    subprocess.run(git + ["tag", "v1"], check=True)
    edit(repo / "rules" / "anemia" / "low-hemoglobin.yaml", "{value: 12.0", "{value: 11.0")
    subprocess.run(git + ["commit", "-qam", "lower threshold"], check=True)
    monkeypatch.chdir(repo)
    rc, out, _ = run(capsys, "diff", "git:v1", "git:HEAD")
    assert rc == 1
    assert "parameters.women_threshold.value: 12.0 -> 11.0" in out
    assert "anemia.low-hemoglobin changed without a version bump" in out
    rc, _, err = run(capsys, "diff", "git:nosuchrev", "git:HEAD")
    assert rc == 2 and "nosuchrev" in err
    monkeypatch.chdir(repo / "rules" / "anemia")   # from inside the tree, rules/ is still found
    rc, out, _ = run(capsys, "diff", "git:v1", "git:HEAD")
    assert rc == 1 and "parameters.women_threshold.value: 12.0 -> 11.0" in out


def test_inserted_condition_reads_as_one_addition(two):
    old, new = two
    p = new / "anemia" / "low-hemoglobin.yaml"
    edit(p, "version: 1.0.0", "version: 1.1.0")
    edit(p, "    - {fact: age, gte: 15}\n", "    - {fact: pregnancy, present: false}\n    - {fact: age, gte: 15}\n")
    edit(p, "{fact: sex, eq: female}", "{fact: sex, eq: male}")
    rep = diff_trees(old, new)
    assert rep["ok"]
    assert rep["rules"]["changed"][0]["changes"] == [
        {"path": "when.all[0]", "old": None, "new": {"fact": "pregnancy", "present": False}, "kind": "condition"},
        {"path": "when.all[2].eq", "old": "female", "new": "male", "kind": "threshold"},
    ]
