"""Item 6b: YAML errors say what to fix in plain words, at file:line:col."""

import pytest

from engine.loader import RulesetLoadError, load_tree
from engine.yamlpos import YamlError, load_yaml


def message(text):
    with pytest.raises(YamlError) as info:
        load_yaml("f.yaml", text)
    return str(info.value)


@pytest.mark.parametrize("text, expected", [
    ("facts:\n  a:\n\tkind: x\n", "f.yaml:3:1: invalid YAML: line 3 is indented with a tab; YAML indentation must be spaces"),
    ("id: x\nversion 1.0\nstatus: draft\n", "f.yaml:2:1: invalid YAML: line 2 ('version 1.0') is missing the ':' after its key"),
    ("facts:\n  ferritin\n    kind: observation\n", "f.yaml:2:11: invalid YAML: line 2 ('ferritin') is missing the ':' after its key"),
    ('a: "abc\nb: c\n', 'f.yaml:1:4: invalid YAML: the " quote opened on line 1 is never closed; add the closing "'),
    ("a: 'abc\nb: c\n", "f.yaml:1:4: invalid YAML: the ' quote opened on line 1 is never closed"),
    ("facts:\n  a:\n    kind: x\n   title: y\n", "f.yaml:4:4: invalid YAML: line 4 is not indented like the lines around it"),
    ("a:\n  b: 1\n    c: 2\n", "f.yaml:3:6: invalid YAML: line 3 is indented further than the line above allows"),
    ("a: b: c\n", "f.yaml:1:5: invalid YAML: this value contains ': ' (a colon and a space); put the whole value in quotes"),
    ("a: {b: 1\nc: 2\n", "f.yaml:2:2: invalid YAML: the '{' opened on line 1 is not closed with '}'"),
    ("a: 1\nb: 2\na: 3\n", "f.yaml:3:1: duplicate key 'a': it is already on line 1 of this mapping"),
])
def test_common_yaml_mistakes_are_explained(text, expected):
    assert message(text).startswith(expected)


def test_tab_in_a_rule_file_is_reported_through_the_loader(rules_copy):
    rule = rules_copy / "thyroid" / "tsh-abnormal.yaml"
    lines = rule.read_text().splitlines()
    lines[2] = "\t" + lines[2]
    rule.write_text("\n".join(lines) + "\n")
    with pytest.raises(RulesetLoadError) as info:
        load_tree(rules_copy)
    (error,) = info.value.errors
    assert error == f"{rule}:3:1: invalid YAML: line 3 is indented with a tab; YAML indentation must be spaces"
