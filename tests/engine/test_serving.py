import os

from engine.serving import RulesetHolder
from tests.conftest import NOW, load_example


def touch_later(path, text):
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_broken_rule_file_never_replaces_the_serving_ruleset(rules_copy):
    holder = RulesetHolder(rules_copy)
    serving = holder.current
    patient = load_example("anemia-woman-low-gdl")
    rule = rules_copy / "anemia" / "low-hemoglobin.yaml"
    good = rule.read_text()

    touch_later(rule, good.replace("status: active", "status: sometimes"))
    assert holder.reload() is False
    assert holder.current is serving
    assert any("low-hemoglobin.yaml" in e and "status" in e for e in holder.last_errors)
    assert len(holder.current.evaluate(patient, now=NOW).cards) == 1  # still serving the good rules

    touch_later(rule, good.replace("women_threshold: {value: 12.0", "women_threshold: {value: 10.0")
                .replace("version: 1.1.1", "version: 1.2.0", 1))
    assert holder.reload() is True
    assert holder.current is not serving and holder.last_errors == []
    assert holder.current.rule("anemia.low-hemoglobin").version == "1.2.0"
    assert holder.current.evaluate(patient, now=NOW).cards == []


def test_unchanged_tree_is_not_reloaded(rules_copy):
    holder = RulesetHolder(rules_copy)
    serving = holder.current
    assert holder.reload() is False and holder.current is serving


def test_release_check_problems_refuse_the_new_tree(rules_copy):
    problems = []
    holder = RulesetHolder(rules_copy, check=lambda root: problems)
    serving = holder.current
    problems.append("ruleset.yaml: sha256 of anemia/low-hemoglobin.yaml does not match the manifest")
    assert holder.reload(force=True) is False
    assert holder.current is serving and holder.last_errors == problems
