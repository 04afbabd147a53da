"""Pins the durable-rules behaviour the engine relies on; fails loudly if a release changes it."""

import durable

from engine.durable_backend import CompiledRules


def test_durable_rules_version_is_the_pinned_one():
    from importlib.metadata import version

    assert version("durable-rules") == "2.0.28"
    assert durable.__name__ == "durable"


def test_every_matching_rule_fires_on_one_fact():
    rules = CompiledRules("pin_all", {"low": [[{"$lt": {"v": 10}}]], "any": [[{"$gte": {"v": 0}}]], "high": [[{"$gt": {"v": 100}}]]})
    assert rules.match({"v": 5}) == ["any", "low"]
    assert rules.match({"v": 500}) == ["any", "high"]


def test_alternatives_and_missing_attributes():
    rules = CompiledRules("pin_alt", {"r": [[{"a": True}, {"$lt": {"v": 3}}], [{"b": "x"}]]})
    assert rules.match({"a": True, "v": 1}) == ["r"]
    assert rules.match({"a": True}) == []  # a missing value never passes $lt
    assert rules.match({"b": "x"}) == ["r"]
    assert rules.match({"b": "y", "a": False, "v": 1}) == []


def test_sessions_are_released_past_the_1024_limit():
    rules = CompiledRules("pin_sessions", {"r": [[{"$lt": {"v": 10}}, {"$gt": {"w": 1}}]]})
    for i in range(1500):  # half partly match and fail: the case that used to crash on delete
        assert rules.match({"v": 5, "w": 2 if i % 2 else 0}) == (["r"] if i % 2 else [])
