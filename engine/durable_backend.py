"""The only module that imports durable-rules; its quirks stay here.

What we rely on (checked by tests/engine/test_durable_backend.py, which fails loudly if a
durable-rules release changes it):
- a fact asserted with `assert_fact` is matched by every rule whose condition holds (an
  event from `post` is consumed by the first rule only, so we never post events);
- a fact that no rule matches raises MessageNotHandledException, and deleting that session
  afterwards crashes the process (segfault / "free(): invalid pointer") once a rule had
  partly matched it; so every ruleset has a sentinel rule that matches every evaluation,
  and no fact is ever left unhandled;
- a ruleset holds at most 1024 live sessions, so every session is deleted in a `finally`;
- the stock Host starts timer threads that dispatch actions in the background; our host
  does not, so actions run only inside our own call;
- `$ex`/`$nex` (attribute exists) can spin forever on a lone condition: the compiler never
  emits them and tests presence with explicit boolean attributes instead;
- nested `$or` inside `$and` can corrupt memory (segfault, "free(): invalid pointer"): we
  pass only flat conjunctions, one durable rule per alternative of a condition in DNF;
- its JSON parser refuses numbers written with an exponent (`1e-05`, `1e+16`: error 204, and the
  session is then left undeletable), which is how Python's json module writes very small and very
  large floats; so facts are serialised here, every float in plain decimal notation;
- the Host runs each action through Python objects and two JSON round trips (~35 us an action);
  our actions only note which rule fired, so `_fire` drives the engine's start/complete-action
  calls itself (the same calls, in the same order, the Host makes).
"""

from __future__ import annotations

import decimal
import itertools
import math
import threading
import uuid

import durable_rules_engine as _native
import orjson
from durable import engine as _durable

_names = itertools.count(1)
SENTINEL = "pacecds#sentinel"
SENTINEL_KEY = "pacecds__evaluation"


class _QuietHost(_durable.Host):
    """A Host without background dispatch threads: nothing runs outside our calls."""

    def _run(self):  # noqa: D401 - overriding the timer start-up
        return None


class CompiledRules:
    """One durable-rules ruleset, its own host, and a lock around each session.

    The C engine keeps per-ruleset queues; a lock per ruleset keeps one evaluation's
    assert/act/delete sequence from interleaving with another's.
    """

    def __init__(self, label: str, conditions: dict[str, list[list[dict]]]):
        """conditions: rule name -> alternatives, each a flat list of tests that must all hold."""
        self.name = f"{label}_{next(_names)}"
        self._lock = threading.Lock()
        # durable-rules sees each message attribute under a short name, and only the attributes some test
        # reads: it re-parses the whole fact for every rule that fires, so a smaller fact is a faster match
        self._aliases: dict[str, str] = {}
        self._rule_of: dict[str, str] = {SENTINEL: SENTINEL}  # durable rule -> our rule (one per alternative)
        definition = {}
        for rule_name, alternatives in conditions.items():
            for k, tests in enumerate(alternatives):
                tests = [self._aliased(test) for test in tests]
                expression = tests[0] if len(tests) == 1 else {"$and": tests}
                definition[f"{rule_name}#{k}"] = {"all": [{"m": expression}], "run": _never_called}
                self._rule_of[f"{rule_name}#{k}"] = rule_name
        definition[SENTINEL] = {"all": [{"m": {SENTINEL_KEY: True}}], "run": _never_called}
        self._host = _QuietHost()
        self._host.register_rulesets({self.name: definition})
        self._rules = self._host.get_ruleset(self.name)

    def _aliased(self, test: dict) -> dict:
        """{attribute: value} or {"$op": {attribute: value}}, with the attribute's short name."""
        ((key, value),) = test.items()
        if key.startswith("$"):
            ((attribute, threshold),) = value.items()
            return {key: {self._alias(attribute): threshold}}
        return {self._alias(key): value}

    def _alias(self, key: str) -> str:
        return self._aliases.setdefault(key, f"a{len(self._aliases)}")

    def match(self, message: dict) -> list[str]:
        """Names of the rules whose condition holds for this one message."""
        sid = uuid.uuid4().hex
        fact = {alias: message[key] for key, alias in self._aliases.items() if key in message}
        fact.update(sid=sid, **{SENTINEL_KEY: True})
        text = fact_json(fact)
        with self._lock:
            try:
                fired = self._fire(text)
            finally:
                self._host.delete_state(self.name, sid)
        if SENTINEL not in fired:
            raise RuntimeError("durable-rules did not run the sentinel rule; evaluation is not trustworthy")
        fired.discard(SENTINEL)
        return sorted(fired)

    def _fire(self, text: str) -> set[str]:
        """Assert the fact, then take each action the engine starts and complete it at once.

        What durable-rules' Host does, without the per-action Python bookkeeping (a state object and two
        JSON round trips per action, ~35 us each): our actions only note which rule fired."""
        rules = self._rules
        state = rules._handle_result(_native.assert_fact(rules._handle, text), text)
        fired: set[str] = set()
        started = _native.start_action_for_state(rules._handle, state)  # (session state, first action) or None
        action = started[1] if started else None
        while action:
            fired.update(self._rule_of[name] for name in orjson.loads(action))  # {durable rule: its facts}
            action = _native.complete_and_start_action(rules._handle, state)  # the next action, or None
        return fired


def _never_called(c):
    """durable-rules wants an action per rule; CompiledRules._fire completes actions without running them."""
    raise AssertionError("durable-rules ran an action outside CompiledRules._fire")


def fact_json(fact: dict) -> str:
    """The fact as JSON that durable-rules parses: floats in plain decimal notation, never with an exponent."""
    return orjson.dumps({k: _plain(v) if type(v) is float else v for k, v in fact.items()}).decode()


def _plain(value: float):
    if not math.isfinite(value):
        raise ValueError(f"durable-rules cannot compare a non-finite number ({value})")
    text = repr(value)
    if "e" in text:  # 1e-05 -> 0.00001, 1e+16 -> 10000000000000000: the same number, exactly
        text = format(decimal.Decimal(text), "f")
    return orjson.Fragment(text)
