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


def test_very_small_and_very_large_numbers_compare_exactly():
    """durable-rules' parser refuses exponents (1e-05, 1e+16); facts reach it in plain decimal notation."""
    rules = CompiledRules("pin_exponent", {"tiny": [[{"$lt": {"v": 0.001}}, {"$gt": {"v": 0}}]],
                                           "huge": [[{"$gt": {"v": 1e12}}]]})
    for value in (1e-05, 1e-7, 5e-324, 2.5e-300):
        assert rules.match({"v": value}) == ["tiny"], value
    for value in (1e16, 1.5e300, 12345678901234567890.0):
        assert rules.match({"v": value}) == ["huge"], value
    assert rules.match({"v": -1e-05}) == []
    assert rules.match({"v": 0.5}) == []


def test_a_rule_whose_alternatives_both_match_is_named_once_and_nothing_carries_over():
    rules = CompiledRules("pin_twice", {"r": [[{"$gt": {"v": 1}}], [{"$gt": {"v": 2}}]], "s": [[{"$lt": {"v": 0}}]]})
    assert rules.match({"v": 5}) == ["r"]
    assert rules.match({"v": -1}) == ["s"]  # no action of the previous session is left to run
    assert rules.match({"v": 0}) == []
